"""Web service: a FastAPI app with a small browser page (``medforensics serve``).

- :func:`medforensics.service.app.create_app` builds the app (models loaded once);
- :mod:`medforensics.service.analysis`: the analyses behind the endpoints;
- :mod:`medforensics.service.uploads`: streamed, size-limited uploads to private temp files;
- :mod:`medforensics.report.images`: preview and heat-map overlay PNGs for the page;
- :mod:`medforensics.service.server`: running it with uvicorn (foreground or background thread);
- ``static/``: the page (HTML, JS, CSS; no external resources).

Importing this package imports nothing heavy; import the submodules you need.
"""
