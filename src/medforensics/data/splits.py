"""Train/val/test splits of a manifest, and the leakage check.

Two protocols:

* ``by="patient"`` (default, the honest one): rows are grouped so that everything that shares
  a PatientID, a StudyInstanceUID or a file hash lands in the same split (connected
  components over those three keys; a blank PatientID falls back to the study, then to the
  file). Groups are assigned greedily, largest first, each to the split whose per-class
  quota (``stratify`` column) it helps fill most: the StratifiedGroupKFold idea, but with
  arbitrary fractions instead of 1/k folds. DeepMammo split by patient (80/20).
* ``by="image"``: Deep-RSI's plain stratified random image split (80/20 in the paper). Images
  of one patient can land in different splits, so patient-level leakage is possible and
  :func:`check_leakage` should be called with ``keys=("sha256",)`` for it.

Only rows with ``status == "eligible"`` get a split; all others get ``split = ""``.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

from medforensics.errors import ConfigError, LeakageError

__all__ = ["SPLITS", "assign_splits", "check_leakage", "group_ids", "split_counts"]

logger = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")
_LEAK_KEYS: tuple[str, ...] = ("PatientID", "StudyInstanceUID", "sha256")


def _value(row: dict, key: str) -> str:
    value = row.get(key)
    return "" if value is None else str(value).strip()


def group_ids(rows: Sequence[dict], keys: Sequence[str] = _LEAK_KEYS) -> list[int]:
    """Connected-component group id of each row over shared non-blank ``keys`` values.

    Two rows are in one group when they share a PatientID, a StudyInstanceUID or a sha256
    (by default). A row with none of these is a group of its own.

    Args:
        rows: manifest rows.
        keys: columns whose equal non-blank values tie rows together.

    Returns:
        One int per row; equal ints mean "same group". Ids are 0..n_groups-1 in order of
        first appearance.
    """
    parent = list(range(len(rows)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_seen: dict[tuple[str, str], int] = {}
    for i, row in enumerate(rows):
        for key in keys:
            value = _value(row, key)
            if not value:
                continue
            j = first_seen.setdefault((key, value), i)
            if j != i:
                ri, rj = find(i), find(j)
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
    ids: dict[int, int] = {}
    return [ids.setdefault(find(i), len(ids)) for i in range(len(rows))]


def _fractions(test: float, val: float) -> dict[str, float]:
    for name, f in (("test", test), ("val", val)):
        if not 0.0 <= f < 1.0:
            raise ConfigError(f"--{name} must be in [0, 1), got {f}")
    if test + val >= 1.0:
        raise ConfigError(f"test + val must be < 1 (got {test} + {val}); nothing left to train on")
    return {"train": 1.0 - test - val, "val": val, "test": test}


def _largest_remainder(n: int, fractions: dict[str, float]) -> dict[str, int]:
    """Integer counts summing to ``n`` closest to ``n * fraction`` (ties: train, val, test)."""
    exact = {s: n * fractions[s] for s in SPLITS}
    counts = {s: int(np.floor(exact[s])) for s in SPLITS}
    order = sorted(SPLITS, key=lambda s: (-(exact[s] - counts[s]), SPLITS.index(s)))
    for s in order[: n - sum(counts.values())]:
        counts[s] += 1
    return counts


def assign_splits(
    rows: list[dict],
    *,
    by: str = "patient",
    test: float = 0.2,
    val: float = 0.1,
    stratify: str | None = "model",
    seed: int = 0,
) -> list[dict]:
    """Write a ``split`` column (``train``/``val``/``test``) on the eligible rows.

    The rows are modified in place (and returned). Non-eligible rows get ``split = ""``. The
    result depends only on the set of rows, ``seed`` and the options, not on the row order.

    Args:
        rows: manifest rows (dicts with at least ``status``, ``sha256``, ``PatientID``,
            ``StudyInstanceUID`` and the ``stratify`` column).
        by: ``"patient"`` (grouped by patient/study/hash, stratified) or ``"image"``
            (Deep-RSI's per-image stratified random split).
        test: fraction of eligible images (approximately, for grouped splits) in test.
        val: fraction in val (0 for the papers' train/test protocols).
        stratify: label column to stratify on, or None.
        seed: random seed.

    Returns:
        ``rows``.

    Raises:
        ConfigError: bad fractions, unknown ``by`` or missing ``stratify`` column.
    """
    fractions = _fractions(test, val)
    if by not in ("patient", "image"):
        raise ConfigError(f"--by must be 'patient' or 'image', got {by!r}")
    for row in rows:
        row["split"] = ""
    eligible = sorted(
        (r for r in rows if _value(r, "status") == "eligible"),
        key=lambda r: (_value(r, "path"), _value(r, "sha256")),
    )
    if not eligible:
        logger.warning("no eligible rows: nothing to split")
        return rows
    if stratify is not None and any(stratify not in r for r in eligible):
        raise ConfigError(f"stratify column {stratify!r} is not in the manifest")

    def label(r: dict) -> str:
        return _value(r, stratify) if stratify is not None else ""

    rng = np.random.default_rng(seed)
    if by == "image":
        per_class: dict[str, list[dict]] = defaultdict(list)
        for r in eligible:
            per_class[label(r)].append(r)
        for cls in sorted(per_class):
            members = per_class[cls]
            perm = rng.permutation(len(members))
            counts = _largest_remainder(len(members), fractions)
            bounds = np.cumsum([counts[s] for s in ("test", "val")])
            for rank, idx in enumerate(perm):
                split = "test" if rank < bounds[0] else "val" if rank < bounds[1] else "train"
                members[idx]["split"] = split
        return rows

    gids = group_ids(eligible)
    groups: dict[int, list[dict]] = defaultdict(list)
    for gid, r in zip(gids, eligible):
        groups[gid].append(r)
    group_list = [groups[g] for g in sorted(groups)]  # ordered by first (sorted) path
    order = rng.permutation(len(group_list))
    order = sorted(order, key=lambda i: -len(group_list[i]))  # stable: size desc, then random
    class_total = Counter(label(r) for r in eligible)
    n_total = len(eligible)
    assigned: dict[str, Counter] = {s: Counter() for s in SPLITS}
    size: dict[str, int] = {s: 0 for s in SPLITS}
    active = [s for s in SPLITS if fractions[s] > 0]
    for i in order:
        members = group_list[i]
        g_counts = Counter(label(r) for r in members)

        def need(s: str) -> tuple[float, float, int]:
            per_class_need = sum(
                n * (fractions[s] * class_total[c] - assigned[s][c]) / class_total[c]
                for c, n in g_counts.items()
            )
            overall = (fractions[s] * n_total - size[s]) / n_total
            return (per_class_need, overall, -SPLITS.index(s))

        best = max(active, key=need)
        for r in members:
            r["split"] = best
        assigned[best].update(g_counts)
        size[best] += len(members)
    logger.info("split %d eligible rows in %d groups: %s", n_total, len(group_list), size)
    return rows


def check_leakage(rows: Sequence[dict], *, keys: Sequence[str] = _LEAK_KEYS) -> None:
    """Raise if a patient, study or file hash appears in more than one split.

    Rows without a split (``""``/missing) are ignored, as are blank key values.

    Args:
        rows: manifest rows with a ``split`` column.
        keys: columns that must not be shared across splits.

    Raises:
        LeakageError: naming every offending column/value (first 10) and its splits.
    """
    seen: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    for row in rows:
        split = _value(row, "split")
        if not split:
            continue
        for key in keys:
            value = _value(row, key)
            if value:
                seen[(key, value)].setdefault(split, _value(row, "path"))
    leaks = [(k, v, paths) for (k, v), paths in sorted(seen.items()) if len(paths) > 1]
    if leaks:
        lines = [
            f"{k} {v!r} is in {' and '.join(sorted(p))} (e.g. "
            + ", ".join(f"{s}: {p[s]}" for s in sorted(p))
            + ")"
            for k, v, p in leaks[:10]
        ]
        more = f"\n... and {len(leaks) - 10} more" if len(leaks) > 10 else ""
        raise LeakageError(
            f"{len(leaks)} value(s) shared between splits:\n" + "\n".join(lines) + more
        )


def split_counts(rows: Sequence[dict], label: str = "model") -> dict[str, dict[str, int]]:
    """Images per class and split: ``{class: {"train": n, "val": n, "test": n}}``.

    Args:
        rows: manifest rows with a ``split`` column.
        label: class column.

    Returns:
        Counts of rows with a non-blank split, classes sorted by name.
    """
    table: dict[str, dict[str, int]] = {}
    for row in rows:
        split = _value(row, "split")
        if split:
            cls = _value(row, label)
            table.setdefault(cls, {s: 0 for s in SPLITS})
            table[cls][split] = table[cls].get(split, 0) + 1
    return dict(sorted(table.items()))
