"""medforensics: medical-image forensics from the pixels.

Source-device identification (which manufacturer, model and unit made an image) and
forgery detection/localization, for DICOM and exported PNG/JPEG/TIFF images.

``__version__`` below is the one place the version is written: the package metadata
(``pyproject.toml``, ``dynamic = ["version"]``) reads it from here, so
``importlib.metadata.version("medforensics")`` and ``medforensics.__version__`` agree.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
