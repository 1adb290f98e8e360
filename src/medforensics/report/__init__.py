"""Results for people: HTML case reports, display images and heat maps.

- :mod:`~medforensics.report.analysis`: one case analysed (one decode; device and forgery);
- :mod:`~medforensics.report.html`: the self-contained HTML page of a case
  (style sheet in ``static/report.css``);
- :mod:`~medforensics.report.batch`: pages for many files, with an index;
- :mod:`~medforensics.report.provenance`: model loading, run file hashes, software versions;
- :mod:`~medforensics.report.redaction`: identifier masking and the header summary;
- :mod:`~medforensics.report.images`: display previews, overlays, map files;
- :mod:`~medforensics.report.colours`: the heat-map colours.
"""
