"""Forgery detection and localization.

Modules (import the one you need; nothing is imported here):

* :mod:`~medforensics.forgery.cues` - the cue registry (``register_cue``, ``get_cue``,
  ``list_cues``: each cue's function with its default parameters) and the cues:
* :mod:`~medforensics.forgery.cues.ela` - ELA on medical images (explicit 8-bit window), ELA cue,
  ELA-CNN input.
* :mod:`~medforensics.synth.tamper` - tampering generator with exact masks
  (``medforensics tamper``).
* :mod:`~medforensics.forgery.cues.copymove` - copy-move detection by residual block matching.
* :mod:`~medforensics.forgery.cues.noise` - local noise-level inconsistency map.
* :mod:`~medforensics.forgery.cues.texture` / :mod:`~medforensics.forgery.cues.seam` - noise
  shape and hard-edged paste seams.
* :mod:`~medforensics.forgery.cues.fingerprint` - device-fingerprint inconsistency (a source
  patch model slid over the image).
* :mod:`~medforensics.forgery.localize` - the registered cues -> one per-pixel map, image score,
  forged area (cue parameters: one ``cue_params`` mapping).
* :mod:`~medforensics.forgery.result` - ``ForgeryResult`` and ``FileResult``.
* :mod:`~medforensics.forgery.metrics` - pixel-level metrics with a boundary band.
* :mod:`~medforensics.forgery.evaluate` - image AUC and pixel metrics on a tamper manifest.
* :mod:`~medforensics.forgery.detector` - ``ForgeryDetector`` (the contract the service, the
  case report and the CLI use): training-free cues, learned combiner, ELA-CNN.
* :mod:`~medforensics.forgery.combiner` - the learned logistic cue combiner (preset ``cues``).
* :mod:`~medforensics.forgery.train` - ``medforensics forgery train`` (``cues``, ``ela-cnn``).
* :mod:`~medforensics.demo.forgery` - the forgery section of ``medforensics demo``.

See ``docs/forgery.md`` for the benchmark and the known weaknesses.
"""
