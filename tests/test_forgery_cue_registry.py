"""The forgery cue registry: names, order, defaults from the map functions, parameter merging."""

from __future__ import annotations

import numpy as np
import pytest

from medforensics.errors import ConfigError
from medforensics.forgery.cues import (
    CueOutput,
    check_cue_params,
    get_cue,
    list_cues,
    map_names,
    register_cue,
    resolve_params,
)
from medforensics.forgery.cues.copymove import detect_copy_move
from medforensics.forgery.cues.noise import noise_inconsistency_map
from medforensics.forgery.detector import ForgeryDetector
from medforensics.forgery.localize import (
    CUES,
    DEFAULT_WHITENESS,
    WEAK_CUES,
    default_cues,
    localize,
)


def test_every_cue_is_registered_in_the_default_order() -> None:
    assert list_cues() == ["copymove", "noise", "texture", "whiteness", "seam", "ela",
                           "fingerprint"]
    assert CUES == map_names() == ("copymove", "noise", "texture", "whiteness", "seam", "ela",
                                   "fingerprint", "fingerprint_weak")
    assert WEAK_CUES == ("fingerprint_weak",)
    assert get_cue("fingerprint_weak") is get_cue("fingerprint")
    assert default_cues(whiteness=False) == ["copymove", "noise", "texture", "seam", "ela"]
    assert default_cues(whiteness=True) == ["copymove", "noise", "texture", "whiteness", "seam",
                                            "ela"]
    assert ("whiteness" in default_cues()) == DEFAULT_WHITENESS
    assert default_cues(texture=False, seam=False, ela=False, fingerprint=True,
                        whiteness=False) == ["copymove", "noise", "fingerprint",
                                             "fingerprint_weak"]


def test_defaults_are_the_map_functions_own() -> None:
    assert get_cue("noise").defaults["block"] == 16 and get_cue("noise").defaults[
        "extra_blocks"] == ()
    cm = get_cue("copymove")
    assert cm.defaults["min_count"] == 40 and "lossy" not in cm.defaults
    assert "lossy" in cm.context and cm.needs == ("seam",)
    assert get_cue("ela").defaults["quality"] == 90
    assert get_cue("fingerprint").needs == ("patch_logprobs",)
    assert noise_inconsistency_map.__kwdefaults__["z_low"] == get_cue("noise").defaults["z_low"]
    assert detect_copy_move.__kwdefaults__["block"] == cm.defaults["block"]


def test_params_merge_over_defaults_and_lossy_defaults() -> None:
    p = resolve_params("texture", {"texture": {"z_thr": 6.0}})
    assert p["z_thr"] == 6.0 and p["use_lattice"] is True and p["coarse"] is True
    lossy = resolve_params("texture", {"texture": {"coarse": True}}, lossy=True)
    assert lossy["use_lattice"] is False and lossy["coarse"] is True  # the caller wins
    assert resolve_params("ela")["quality"] == 90


def test_unknown_cues_and_parameters_are_refused() -> None:
    with pytest.raises(ConfigError, match="unknown cue"):
        check_cue_params({"magic": {}})
    with pytest.raises(ConfigError, match="unknown parameter"):
        check_cue_params({"noise": {"blok": 8}})
    with pytest.raises(ConfigError, match="under 'fingerprint'"):
        check_cue_params({"fingerprint_weak": {"stride": 8}})
    check_cue_params({"copymove": {"lossy": True}})  # a context parameter may be set
    with pytest.raises(ConfigError, match="unknown parameter"):
        ForgeryDetector(cue_params={"seam": {"windw": 8}})
    with pytest.raises(ConfigError):
        localize(np.zeros((64, 64), np.float32), cues=["noise"],
                 cue_params={"noise": {"nope": 1}})
    with pytest.raises(ConfigError, match="already registered"):
        register_cue("noise", defaults={}, rank=99)(lambda img, ctx, params: CueOutput())


def test_cue_params_reach_the_cue_and_the_detector_records_them() -> None:
    rng = np.random.default_rng(0)
    img = (1000 + rng.normal(0, 20, (192, 192))).astype(np.float32)
    # thresholds far below / above every block's z: every scored block fires / none does
    fire = localize(img, cues=["noise"], cue_params={"noise": {"z_low": -100.0}})
    quiet = localize(img, cues=["noise"], cue_params={"noise": {"z_low": 100.0,
                                                                "z_high": 100.0}})
    assert fire.cues["noise"].min() > 0.99 and quiet.cues["noise"].max() < 1e-6
    det = ForgeryDetector(cue_params={"noise": {"max_band": 3.0}}, texture=False)
    assert det.params["cue_params"] == {"noise": {"max_band": 3.0}}
    assert det.params["ela_quality"] == 90 and det.fingerprint_stride == 16
    assert det.fingerprint_min_coverage == 0.5
