"""``forgery train`` (ela-cnn and cues presets): split, safetensors round trip, resume, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.numpy import load_file

from medforensics.errors import ConfigError
from medforensics.forgery.detector import ForgeryDetector
from medforensics.synth.tamper import generate
from medforensics.forgery.train import read_tamper_manifest, split_tamper_rows, train_forgery

N = 160


def _radiograph(seed: int, n: int = N) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n, 0:n]
    base = 1500 + 900 * np.sin(xx / 23 + seed) * np.cos(yy / 31)
    noisy = base + rng.normal(0, 1, (n, n)) * np.sqrt(base) * 25 / np.sqrt(1500)
    return np.clip(noisy, 0, 4095).astype(np.uint16)


@pytest.fixture(scope="module")
def tamper_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 pairs (copy-move / removal) of 160-px 16-bit PNGs from 5 'patients'."""
    root = tmp_path_factory.mktemp("tamper")
    rows = []
    for i in range(10):
        p = root / "src" / f"img{i}.png"
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(_radiograph(100 + i)).save(p)
        rows.append({"path": str(p), "PatientID": f"P{i // 2}"})
    rep = generate(rows, root / "out", kinds=["copy-move", "removal"], seed=2, sizes=(40, 56),
                   feather=1.0)
    assert not rep.failures
    return rep.manifest_path


def test_split_keeps_twins_and_patients_together(tamper_set: Path) -> None:
    rows = read_tamper_manifest(tamper_set)
    rows, how = split_tamper_rows(rows, test=0.2, val=0.2, seed=0)
    assert how == "assigned"  # the generated manifest has no split column
    by_pair: dict[str, set[str]] = {}
    by_patient: dict[str, set[str]] = {}
    for r in rows:
        by_pair.setdefault(r["pair_id"], set()).add(r["split"])
        by_patient.setdefault(r["PatientID"], set()).add(r["split"])
    assert all(len(v) == 1 for v in by_pair.values())
    assert all(len(v) == 1 for v in by_patient.values())
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    # a complete split column in the manifest is used as is
    for r in rows:
        r["split"] = "test" if r["PatientID"] == "P0" else "train"
    rows2, how2 = split_tamper_rows(rows)
    assert how2 == "manifest" and [r["split"] for r in rows2] == [r["split"] for r in rows]


def _weights(run: Path) -> dict[str, np.ndarray]:
    return load_file(str(run / "model.safetensors"))


def test_ela_cnn_train_roundtrip_and_resume(tamper_set: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    full = tmp_path / "full"
    res = train_forgery(tamper_set, preset="ela-cnn", out_dir=full, epochs=2, seed=3,
                        batch_size=4, progress=False)
    assert res.preset == "ela-cnn" and len(res.history) == 2 and not res.failures
    meta = json.loads((full / "model.json").read_text())
    assert meta["preset"] == "ela-cnn" and meta["name"] == "ela-cnn"
    assert meta["classes"] == ["original", "tampered"] and meta["threshold"] == 0.5
    assert meta["seed"] == 3 and len(meta["training_manifest_sha256"]) == 64
    assert meta["input_scale"] == pytest.approx(1 / 255)
    # no pickles anywhere in the run
    suffixes = {p.suffix for p in full.rglob("*") if p.is_file()}
    assert suffixes <= {".safetensors", ".json", ".jsonl", ""}, suffixes
    det = ForgeryDetector.from_run(full)
    assert det.method == "ela-cnn" and det.run_dir == full
    rows = read_tamper_manifest(tamper_set)
    r = det.detect_file(rows[0]["path"])
    assert 0.0 <= r.score <= 1.0 and r.prob_map.shape == (N, N)
    assert "ela_cnn" in r.cues and any("ELA-CNN" in n for n in r.notes)
    # resume: 1 epoch, then continue to 2 -> bit-identical weights to the straight run
    part = tmp_path / "part"
    train_forgery(tamper_set, preset="ela-cnn", out_dir=part, epochs=1, seed=3, batch_size=4,
                  progress=False)
    with pytest.raises(ConfigError):  # not empty and no --resume
        train_forgery(tamper_set, preset="ela-cnn", out_dir=part, epochs=2, seed=3,
                      progress=False)
    with pytest.raises(ConfigError):  # a different seed cannot be resumed
        train_forgery(tamper_set, preset="ela-cnn", out_dir=part, epochs=2, seed=4,
                      batch_size=4, resume=True, progress=False)
    res2 = train_forgery(tamper_set, preset="ela-cnn", out_dir=part, epochs=2, seed=3,
                         batch_size=4, resume=True, progress=False)
    assert [h["epoch"] for h in res2.history] == [1, 2]
    a, b = _weights(full), _weights(part)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert res2.history == res.history


def test_cues_train_roundtrip_resume_and_cli(tamper_set: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from medforensics.cli import app

    run = tmp_path / "cues"
    cli = CliRunner()
    out = cli.invoke(app, ["forgery", "train", str(tamper_set), "--preset", "cues", "--out",
                           str(run), "--seed", "1", "--no-progress"])
    assert out.exit_code == 0, out.output
    meta = json.loads((run / "model.json").read_text())
    # the combiner is fed every cue of the training-free detector's default list
    assert meta["preset"] == "cues" and meta["cues"] == ["copymove", "noise", "texture",
                                                         "whiteness", "seam", "ela"]
    assert (run / "combiner.safetensors").is_file() and (run / "split.json").is_file()
    det = ForgeryDetector.from_run(run)
    assert det.method == "cues-learned"
    # the fingerprint coverage floor is recorded; a run made before it loads with none
    assert meta["fingerprint_min_coverage"] == det.fingerprint_min_coverage == 0.5
    old = tmp_path / "old_run"
    shutil.copytree(run, old)
    legacy = {k: v for k, v in meta.items() if k != "fingerprint_min_coverage"}
    (old / "model.json").write_text(json.dumps(legacy))
    (old / "run.json").unlink()  # runs of that time had no run manifest either
    old_det = ForgeryDetector.from_run(old)
    assert old_det.fingerprint_min_coverage == 0.0 and old_det.run_integrity == "unverified"
    assert det.run_integrity == "verified"
    rows = read_tamper_manifest(tamper_set)
    tam = next(r for r in rows if r["kind"] == "copy-move")
    res = det.detect_file(tam["path"])
    mask = np.asarray(Image.open(tam["mask_path"])) > 0
    assert res.score > 0.5 and res.verdict == "tampered"
    assert ((res.prob_map >= 0.5) & mask).sum() > 0.5 * mask.sum()
    # resume reuses the cached per-image features: it must not recompute any cue map
    cache = sorted((run / "features").iterdir())
    n_images = sum(1 for r in rows if json.loads((run / "split.json").read_text())["paths"]
                   [r["path"]] in ("train", "val"))
    assert len(cache) == n_images
    before = (run / "combiner.safetensors").read_bytes()

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("cue maps recomputed on resume")

    det_cls = ForgeryDetector
    orig = det_cls.compute_cues
    det_cls.compute_cues = boom  # type: ignore[method-assign]
    try:
        train_forgery(tamper_set, preset="cues", out_dir=run, seed=1, resume=True,
                      progress=False)
    finally:
        det_cls.compute_cues = orig  # type: ignore[method-assign]
    assert (run / "combiner.safetensors").read_bytes() == before
    # evaluate on the run's own test split
    ev = tmp_path / "ev"
    out = cli.invoke(app, ["forgery", "evaluate", str(run), "--manifest", str(tamper_set),
                           "--out", str(ev)])
    assert out.exit_code == 0, out.output
    m = json.loads((ev / "metrics.json").read_text())
    test_paths = [p for p, s in json.loads((run / "split.json").read_text())["paths"].items()
                  if s == "test"]
    assert m["n_tampered"] + m["n_original"] == len(test_paths) > 0
    assert "test split" in m["rows"] and (ev / "roc.png").is_file()
    assert m["image"]["accuracy"] is not None and "f1_best" in m["pixel"]
    lo, hi = m["ci"]["image_auc"]  # 95 % intervals over source images
    assert lo <= m["image_auc"] <= hi and "95 % CI over" in out.output
    assert list((ev / "examples").glob("*.png"))


def test_cues_train_without_the_optional_cues(tamper_set: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from medforensics.cli import app

    run = tmp_path / "cues3"
    out = CliRunner().invoke(app, ["forgery", "train", str(tamper_set), "--preset", "cues",
                                   "--out", str(run), "--seed", "1", "--no-progress",
                                   "--no-texture", "--no-seam", "--no-whiteness"])
    assert out.exit_code == 0, out.output
    meta = json.loads((run / "model.json").read_text())
    assert meta["cues"] == ["copymove", "noise", "ela"]
    det = ForgeryDetector.from_run(run)
    assert det.cue_names == ["copymove", "noise", "ela"]  # the combiner's, not the defaults
    assert meta["fit"]["pixel_features"][:2] == ["copymove", "copymove_mean15"]
    assert not any(f.startswith(("texture", "seam", "whiteness"))
                   for f in meta["fit"]["pixel_features"])
