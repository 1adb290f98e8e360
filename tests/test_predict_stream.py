"""Streaming inference: decode-ahead workers give the same results; one decode per file.

Untrained models (weights from a fixed seed) stand in for trained runs: these tests check the
inference path, not accuracy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medforensics.errors import ConfigError, ReadError
from medforensics.report import analysis as case_analysis
from medforensics.source import patches
from medforensics.source.unit_records import FingerprintConfig, MatchScore


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """4 simulated DICOM files, a non-image file and a missing path."""
    from medforensics.synth.simulate import simulate_archive

    base = tmp_path_factory.mktemp("stream")
    paths = simulate_archive(base / "a", manufacturers=2, models_per_manufacturer=1,
                             units_per_model=1, patients=2, images_per_patient=2,
                             size=(224, 288), seed=0, multi_device_fraction=0.0)
    junk = base / "junk.dcm"
    junk.write_bytes(b"not an image at all" * 10)
    return [*sorted(paths)[:4], junk, base / "missing.dcm"]


def _run(tmp_path: Path, name: str) -> Path:
    from medforensics.models.io import save_model
    from medforensics.models.registry import create_model

    torch.manual_seed(0)
    model = create_model(name, 2)
    run = tmp_path / name
    save_model(run, model, {"classes": ["A", "B"], "label_column": "model"})
    return run


@pytest.mark.parametrize("name", ["patch", "deep-rsi"])
def test_workers_give_the_same_stream(tmp_path: Path, files: list[Path], name: str) -> None:
    from medforensics.source.predictor import SourcePredictor

    torch.set_num_threads(1)
    pred = SourcePredictor.from_run(_run(tmp_path, name), n_patches=8)
    serial = list(pred.predict_paths(files))
    ahead = list(pred.predict_paths(iter(files), workers=1, prefetch=2))
    assert [s[0] for s in serial] == [a[0] for a in ahead] == [str(f) for f in files]
    for s, a in zip(serial, ahead):
        if s[1] is None:
            assert a[1] is None and type(a[3]) is type(s[3]) and str(a[3]) == str(s[3])
            assert isinstance(a[3], ReadError) and a[3].path == s[3].path
        else:
            assert np.array_equal(s[1].logprobs, a[1].logprobs)
            assert np.array_equal(s[1].probs, a[1].probs)
            assert s[1].n_patches == a[1].n_patches == (8 if name == "patch" else 1)
            assert s[2].sop_uid == a[2].sop_uid
    # The file-by-file API agrees with the stream.
    from medforensics.io import read_image

    lp = pred.predict(read_image(files[0]).pixels).logprobs
    assert np.array_equal(lp, serial[0][1].logprobs)
    assert [s[1] is None for s in serial] == [False] * 4 + [True, True]


def test_negative_workers_refused(tmp_path: Path, files: list[Path]) -> None:
    from medforensics.source.predictor import SourcePredictor

    pred = SourcePredictor.from_run(_run(tmp_path, "patch"), n_patches=4)
    with pytest.raises(ConfigError):
        list(pred.predict_paths(files, workers=-1))


class _FakeUnits:
    """Stands in for UnitFingerprints: records the images it is given."""

    units = ["A #1", "A #2", "B #7"]

    def __init__(self) -> None:
        self.seen: list[np.ndarray] = []
        self.candidates: list[object] = []

    def matching_units(self, name: str) -> list[str]:
        return [u for u in self.units if u == name or u.startswith(f"{name} #")]

    config = FingerprintConfig()

    def decide_unit(self, image: np.ndarray, candidates: object = None
                    ) -> tuple[str | None, MatchScore]:
        self.seen.append(image)
        self.candidates.append(candidates)
        return "A #1", MatchScore("A #1", float(image.shape[0]), 0.5, (0, 0), image.shape)


def test_identify_files_decodes_each_file_once(tmp_path: Path, files: list[Path],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import medforensics.io as mio
    from medforensics.source.predictor import SourcePredictor, identify_files

    pred = SourcePredictor.from_run(_run(tmp_path, "patch"), n_patches=4)
    pred.fingerprints = _FakeUnits()
    calls: list[str] = []
    real = mio.read_image

    def counting(path, *a, **kw):  # type: ignore[no-untyped-def]
        calls.append(str(path))
        return real(path, *a, **kw)

    monkeypatch.setattr(patches, "read_image", counting)
    out = list(identify_files(pred, files))
    assert calls == [str(f) for f in files]  # once each, in order
    assert len(pred.fingerprints.seen) == 4
    for img, f in zip(pred.fingerprints.seen, files):
        assert np.array_equal(img, real(f).pixels)
    assert [("unit" in e) for _, e in out] == [True] * 4 + [False, False]
    assert out[0][1]["unit"] == "A #1" and out[0][1]["n_patches"] == 4


def test_map_ordered_keeps_order_and_bounds_prefetch() -> None:
    from medforensics.source.patches import map_ordered

    consumed: list[int] = []

    def items():  # type: ignore[no-untyped-def]
        for i in range(12):
            consumed.append(i)
            yield -i

    gen = map_ordered(abs, items(), workers=2, prefetch=3)
    first = next(gen)
    assert first == 0
    assert len(consumed) <= 4  # 3 in flight, plus the one submitted when the first came back
    assert [first, *gen] == list(range(12))
    gen2 = map_ordered(abs, items(), workers=1, prefetch=2)
    next(gen2)
    gen2.close()  # early close shuts the pool down without consuming the rest
    assert len(consumed) <= 12 + 3


def test_cli_streams_folders_with_progress_and_keeps_missing_paths(
    tmp_path: Path, files: list[Path]
) -> None:
    """identify and forgery detect take folders; --progress ends with a files/s line; a
    missing path is reported, not dropped; text output comes in blocks, JSON per file."""
    import json

    from typer.testing import CliRunner

    from medforensics.cli import app

    run = _run(tmp_path, "patch")
    folder = files[0].parents[2]  # the simulated archive root
    n_dcm = len(list(folder.rglob("*.dcm")))  # a folder walk leaves devices.json out
    missing = files[-1]
    res = CliRunner().invoke(app, ["identify", str(run), str(folder), str(missing), "--json",
                                   "--progress"])
    lines = [json.loads(x) for x in res.stdout.splitlines() if x.startswith("{")]
    assert res.exit_code == 1 and len(lines) == n_dcm + 1
    assert sum(x["status"] == "error" for x in lines) == 1
    assert lines[-1]["status"] == "error" and lines[-1]["path"].endswith("missing.dcm")
    assert f"identify: {n_dcm + 1} file(s) in" in res.stderr and "files/s" in res.stderr
    res = CliRunner().invoke(app, ["forgery", "detect", "cues", str(folder), "--json",
                                   "--no-progress"])
    out = [json.loads(x) for x in res.stdout.splitlines() if x.startswith("{")]
    assert res.exit_code == 0 and len(out) == n_dcm  # devices.json is not an image
    assert all(o["status"] == "done" for o in out) and "files/s" not in res.stderr


def test_shards_are_disjoint_cover_everything_and_follow_torchrun_env(
    tmp_path: Path, files: list[Path]
) -> None:
    import json

    from typer.testing import CliRunner

    from medforensics.cli import app
    from medforensics.common.sharding import parse_shard, shard_output_path, take_shard

    assert parse_shard("auto", env={}) == (0, 1)
    assert parse_shard(None, env={"RANK": "2", "WORLD_SIZE": "3"}) == (2, 3)
    assert parse_shard("none", env={"RANK": "2", "WORLD_SIZE": "3"}) == (0, 1)
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(ConfigError):
            parse_shard(bad)
    items = list(range(11))
    parts = [take_shard(items, k, 3) for k in range(3)]
    assert sorted(sum(parts, [])) == items and parts[1] == [1, 4, 7, 10]
    assert shard_output_path(tmp_path / "r.jsonl", 1, 3).name == "r.part-1-of-3.jsonl"
    assert shard_output_path(tmp_path / "r.jsonl", 0, 1).name == "r.jsonl"

    run = _run(tmp_path, "patch")
    folder = files[0].parents[2]
    full = CliRunner().invoke(app, ["identify", str(run), str(folder), "--json", "--shard", "none"])
    want = {json.loads(x)["path"]: json.loads(x) for x in full.stdout.splitlines()}
    got: dict = {}
    for rank in range(2):  # as torchrun would start them
        res = CliRunner().invoke(app, ["identify", str(run), str(folder), "--out",
                                       str(tmp_path / "ids.jsonl")],
                                 env={"RANK": str(rank), "WORLD_SIZE": "2"})
        assert res.exit_code == 0, res.output
        lines = (tmp_path / f"ids.part-{rank}-of-2.jsonl").read_text().splitlines()
        part = {json.loads(x)["path"]: json.loads(x) for x in lines}
        assert part and not set(part) & set(got)
        got.update(part)
    assert got == want
    bad = CliRunner().invoke(app, ["forgery", "detect", "cues", str(folder), "--shard", "2/2"])
    assert bad.exit_code == 2 and "does not exist" in bad.output


def test_case_report_decodes_once_and_matches_identify_files(
    tmp_path: Path, files: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import medforensics.io as mio
    from medforensics.source.predictor import SourcePredictor, identify_files, identify_image
    from medforensics.report.analysis import analyse_case

    pred = SourcePredictor.from_run(_run(tmp_path, "patch"), n_patches=4)
    want, _ = next(iter(identify_files(pred, [files[0]])))
    img = mio.read_image(files[0])
    got, extra = identify_image(pred, img.pixels, img.meta, str(files[0]))
    assert got.to_dict() == want.to_dict() and extra["n_patches"] == 4
    assert extra["run_integrity"] == "verified"
    assert extra["informative_windows"] >= 8  # above the evidence floor

    calls: list[str] = []
    real = mio.read_image

    def counting(path, *a, **kw):  # type: ignore[no-untyped-def]
        calls.append(str(path))
        return real(path, *a, **kw)

    monkeypatch.setattr(case_analysis, "read_image", counting)
    monkeypatch.setattr(patches, "read_image", counting)
    case = analyse_case(files[0], source=pred, forgery=None)
    assert calls == [str(files[0])]
    assert case.device["verdict"] == want.verdict and case.device["predicted"] == want.predicted


def test_identify_patches_option(tmp_path: Path, files: list[Path]) -> None:
    import json

    from typer.testing import CliRunner

    from medforensics.cli import app

    run = _run(tmp_path, "patch")
    res = CliRunner().invoke(app, ["identify", str(run), str(files[0]), "--json", "--patches", "8"])
    assert res.exit_code == 0 and json.loads(res.stdout)["n_patches"] == 8
    bad = CliRunner().invoke(app, ["identify", str(run), str(files[0]), "--patches", "0"])
    assert bad.exit_code == 2 and "n_patches must be >= 1" in bad.output


def test_unit_check_compares_only_models_the_classifier_keeps() -> None:
    from medforensics.source.predictor import unit_candidates

    fps = _FakeUnits()
    classes = ["A", "B", "C"]
    confident = np.array([0.9995, 0.0004, 0.0001])
    assert unit_candidates(fps, classes, confident, None) == ["A"]
    # the header's claimed model is always checked too
    assert unit_candidates(fps, classes, confident, "B") == ["A", "B"]
    # an uncertain classifier keeps every model it does not rule out (C has no units)
    assert unit_candidates(fps, classes, np.array([0.5, 0.2, 0.3]), None) == ["A", "B"]
    # no kept model has enrolled units, or a non-model label level: every unit
    assert unit_candidates(fps, classes, np.array([0.0, 0.0, 1.0]), None) is None
    assert unit_candidates(fps, classes, confident, None, level="unit") is None


def test_out_file_that_cannot_be_written_is_a_clean_error(tmp_path: Path, files: list[Path]) -> None:
    from typer.testing import CliRunner

    from medforensics.cli import app

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    res = CliRunner().invoke(app, ["identify", str(_run(tmp_path, "patch")), str(files[0]),
                                   "--out", str(blocker / "sub" / "ids.jsonl")])
    # a write failure: exit code 1 (as a full disk), one line naming the output
    assert res.exit_code == 1 and "cannot write" in res.output and res.exception is not None
    assert isinstance(res.exception, SystemExit)
