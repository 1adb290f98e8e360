"""Tests for medforensics.data.splits (patient-grouped stratified splits, leakage check)."""

from __future__ import annotations

import random
from collections import Counter, defaultdict

import pytest

from medforensics.data.splits import assign_splits, check_leakage, group_ids, split_counts
from medforensics.errors import ConfigError, LeakageError


def _rows(n_patients_per_class: dict[str, int], seed: int = 0) -> list[dict]:
    """Synthetic eligible rows: 1-6 images per patient, one study per patient."""
    rng = random.Random(seed)
    rows = []
    for cls, n_pat in n_patients_per_class.items():
        for p in range(n_pat):
            pid = f"{cls}-P{p:04d}"
            for i in range(rng.randint(1, 6)):
                rows.append(
                    {
                        "path": f"/archive/{cls}/{pid}/{i}.dcm",
                        "sha256": f"{cls}{p}-{i}",
                        "PatientID": pid,
                        "StudyInstanceUID": f"1.2.{cls}.{p}",
                        "status": "eligible",
                        "model": cls,
                    }
                )
    return rows


def _patient_splits(rows: list[dict]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        if r["split"]:
            out[r["PatientID"]].add(r["split"])
    return out


def test_patient_split_proportions_grouping_and_stratification() -> None:
    rows = _rows({"A": 300, "B": 120, "C": 40})
    assign_splits(rows, by="patient", test=0.2, val=0.1, stratify="model", seed=0)
    assert all(len(s) == 1 for s in _patient_splits(rows).values())
    check_leakage(rows)  # must not raise
    counts = split_counts(rows, "model")
    for cls, c in counts.items():
        total = sum(c.values())
        assert c["test"] / total == pytest.approx(0.2, abs=0.02), (cls, c)
        assert c["val"] / total == pytest.approx(0.1, abs=0.02), (cls, c)
        assert c["train"] / total == pytest.approx(0.7, abs=0.02), (cls, c)


def test_only_eligible_rows_get_a_split() -> None:
    rows = _rows({"A": 30})
    rows[0]["status"] = "duplicate"
    rows[1]["status"] = "too-small"
    assign_splits(rows, seed=1)
    assert rows[0]["split"] == "" and rows[1]["split"] == ""
    assert {r["split"] for r in rows[2:]} <= {"train", "val", "test"}
    assert all(r["split"] for r in rows[2:])


def test_deterministic_for_a_seed_and_independent_of_row_order() -> None:
    rows = _rows({"A": 60, "B": 30})
    a = {r["path"]: r["split"] for r in assign_splits([dict(r) for r in rows], seed=7)}
    shuffled = [dict(r) for r in rows]
    random.Random(3).shuffle(shuffled)
    b = {r["path"]: r["split"] for r in assign_splits(shuffled, seed=7)}
    assert a == b
    c = {r["path"]: r["split"] for r in assign_splits([dict(r) for r in rows], seed=8)}
    assert c != a


def test_groups_join_patients_sharing_a_study_or_hash() -> None:
    rows = [
        {"PatientID": "P1", "StudyInstanceUID": "S1", "sha256": "h1"},
        {"PatientID": "P2", "StudyInstanceUID": "S1", "sha256": "h2"},  # same study as P1
        {"PatientID": "", "StudyInstanceUID": "S9", "sha256": "h3"},
        {"PatientID": "P3", "StudyInstanceUID": "S3", "sha256": "h3"},  # same file as row 2
        {"PatientID": "P4", "StudyInstanceUID": "S4", "sha256": "h4"},
        {"PatientID": "", "StudyInstanceUID": "", "sha256": ""},
    ]
    assert group_ids(rows) == [0, 0, 1, 1, 2, 3]


def test_grouping_prevents_study_leak_across_patient_ids() -> None:
    rows = _rows({"A": 50})
    # an inconsistent archive: one study carries two different PatientIDs
    rows[-1]["StudyInstanceUID"] = rows[0]["StudyInstanceUID"]
    assign_splits(rows, test=0.3, val=0.0, seed=0)
    assert rows[-1]["split"] == rows[0]["split"]
    check_leakage(rows)


def test_image_split_is_exactly_stratified_per_image() -> None:
    rows = _rows({"A": 100, "B": 40})
    assign_splits(rows, by="image", test=0.2, val=0.0, seed=0)
    counts = split_counts(rows)
    for cls, c in counts.items():
        total = sum(c.values())
        assert c["test"] == round(0.2 * total)
        assert c["val"] == 0
        assert c["train"] == total - c["test"]
    # the image protocol is allowed to share patients; hashes still never leak
    check_leakage(rows, keys=("sha256",))
    assert any(len(s) > 1 for s in _patient_splits(rows).values())


def test_val_zero_gives_no_val_rows_in_patient_mode() -> None:
    rows = _rows({"A": 40, "B": 40})
    assign_splits(rows, test=0.2, val=0.0, seed=0)
    assert Counter(r["split"] for r in rows)["val"] == 0


def test_singleton_class_goes_to_train() -> None:
    rows = _rows({"A": 50}) + _rows({"Z": 1})
    assign_splits(rows, seed=0)
    assert {r["split"] for r in rows if r["model"] == "Z"} == {"train"}


def test_no_stratification() -> None:
    rows = _rows({"A": 100})
    assign_splits(rows, stratify=None, test=0.25, val=0.0, seed=2)
    n_test = sum(r["split"] == "test" for r in rows)
    assert n_test / len(rows) == pytest.approx(0.25, abs=0.03)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"test": 0.6, "val": 0.4},
        {"test": -0.1},
        {"val": 1.0},
        {"by": "study"},
        {"stratify": "nonexistent"},
    ],
)
def test_bad_options_raise_config_error(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        assign_splits(_rows({"A": 5}), **kwargs)


def test_check_leakage_names_the_offender() -> None:
    rows = _rows({"A": 30, "B": 30})
    assign_splits(rows, seed=0)
    train_row = next(r for r in rows if r["split"] == "train")
    test_row = next(r for r in rows if r["split"] == "test")
    test_row["PatientID"] = train_row["PatientID"]  # plant a patient leak
    with pytest.raises(LeakageError) as info:
        check_leakage(rows)
    message = str(info.value)
    assert f"PatientID '{train_row['PatientID']}'" in message
    assert "test" in message and "train" in message
    assert test_row["path"] in message


def test_check_leakage_sha256_and_study() -> None:
    rows = [
        {"path": "a", "split": "train", "sha256": "h", "PatientID": "1", "StudyInstanceUID": "s1"},
        {"path": "b", "split": "val", "sha256": "h", "PatientID": "2", "StudyInstanceUID": "s1"},
        {"path": "c", "split": "", "sha256": "h", "PatientID": "1", "StudyInstanceUID": "s1"},
    ]
    with pytest.raises(LeakageError, match=r"sha256 'h'") as info:
        check_leakage(rows)
    assert "StudyInstanceUID 's1'" in str(info.value)
    check_leakage(rows[:1] + rows[2:])  # unsplit rows are ignored
