"""Forgery detection and localization.

Modules (import the one you need; nothing is imported here):

* :mod:`~medforensics.forgery.ela` - ELA on medical images (explicit 8-bit window), ELA cue,
  ELA-CNN input.
* :mod:`~medforensics.forgery.tamper` - tampering generator with exact masks
  (``medforensics tamper``).
* :mod:`~medforensics.forgery.copymove` - copy-move detection by residual block matching.
* :mod:`~medforensics.forgery.noiseinconsistency` - local noise-level and device-fingerprint
  inconsistency maps.
* :mod:`~medforensics.forgery.localize` - one per-pixel map, image score, forged area.
* :mod:`~medforensics.forgery.metrics` - pixel-level metrics with a boundary band.
* :mod:`~medforensics.forgery.evaluate` - image AUC and pixel metrics on a tamper manifest.
"""
