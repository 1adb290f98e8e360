"""Results a PACS understands: DICOM SR and SEG objects, DICOMweb scanning and storing.

- :mod:`.codes`: the private coding scheme ``99MEDFOR`` (docs/dicom.md lists it).
- :mod:`.sr`: :func:`~medforensics.pacs.sr.build_report`, one Comprehensive SR per analysed
  image with the identify and/or forgery result, referencing the image (and the SEG).
- :mod:`.seg`: :func:`~medforensics.pacs.seg.build_seg`, the forgery map as a DICOM
  Segmentation (fractional probability or binary mask) at the image's Rows x Columns.
- :mod:`.dicomweb`: :class:`~medforensics.pacs.dicomweb.PacsClient`, QIDO-RS / WADO-RS /
  STOW-RS over ``dicomweb-client`` with clear errors for unreachable servers and HTTP
  failures.
- :mod:`.scan`: :func:`~medforensics.pacs.scan.scan`, the ``pacs scan`` loop (search,
  stream, analyse, optionally store back; resumable).
- :mod:`.listen`: :class:`~medforensics.pacs.listen.Listener`, the ``pacs listen`` DICOM node
  (pynetdicom): receives images by C-STORE onto a bounded queue, analyses them and writes
  or forwards (C-STORE) the SR / SEG.

This package takes analysis results as the JSON-able dicts that ``identify`` and
``forgery detect`` produce, and analyses through callables handed in by the caller, so it
needs neither torch nor the models. highdicom, dicomweb-client and pynetdicom come with the
``dicom`` extra (``pip install 'medforensics[dicom]'``); a missing one raises
:class:`~medforensics.pacs.errors.MissingDicomExtraError` naming the install command.
"""
