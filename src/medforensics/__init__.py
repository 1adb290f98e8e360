"""medforensics: medical-image forensics from the pixels.

Source-device identification (which manufacturer, model and unit made an image) and
forgery detection/localization, for DICOM and exported PNG/JPEG/TIFF images.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
