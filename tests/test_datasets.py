"""Tests of medforensics.data.datasets (image sources and torch datasets)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medforensics.data.datasets import (
    ImageSource,
    MemoryImageSource,
    PaperImageDataset,
    PatchDataset,
    PatchSetDataset,
    row_labels,
)
from medforensics.errors import ConfigError


def noisy(seed: int, h: int = 96, w: int = 128) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (3000 + rng.normal(0, 20, (h, w))).astype(np.float32)


class Counting:
    """Reader stand-in: returns synthetic images and counts decodes."""

    def __init__(self, images: dict[str, np.ndarray]) -> None:
        self.images = images
        self.calls: list[str] = []

    def __call__(self, path: str) -> np.ndarray:
        self.calls.append(path)
        return self.images[path]


IMAGES = {f"img{i}": noisy(i) for i in range(4)}
ROWS = [{"path": f"img{i}", "model": "A" if i < 2 else "B"} for i in range(4)]


def source() -> MemoryImageSource:
    return MemoryImageSource(reader=Counting(IMAGES))


def find(img: np.ndarray, patch: np.ndarray) -> list[tuple[int, int]]:
    """All (y, x) where ``patch`` occurs exactly in ``img``."""
    p = patch.shape[0]
    hits = np.argwhere(np.isclose(img, patch[0, 0], rtol=0, atol=0))
    return [(y, x) for y, x in hits
            if y + p <= img.shape[0] and x + p <= img.shape[1]
            and np.array_equal(img[y:y + p, x:x + p], patch)]


def test_memory_source_lru_and_crop() -> None:
    reader = Counting(IMAGES)
    one = IMAGES["img0"].nbytes
    src = MemoryImageSource(max_bytes=2 * one, reader=reader)
    assert isinstance(src, ImageSource)
    a = src.get("img0")
    src.get("img1")
    src.get("img0")  # hit, img0 becomes most recent
    src.get("img2")  # evicts img1 (least recently used)
    assert reader.calls == ["img0", "img1", "img2"]
    assert len(src) == 2 and src.nbytes == 2 * one
    src.get("img1")
    assert reader.calls[-1] == "img1"
    assert src.hits == 1 and src.misses == 4
    assert not a.flags.writeable
    c = src.crop("img0", 5, 7, 10, 12)
    assert c.shape == (10, 12) and np.array_equal(c, IMAGES["img0"][5:15, 7:19])
    c[:] = 0  # a copy: the cache is untouched
    assert src.get("img0")[5, 7] == IMAGES["img0"][5, 7]
    with pytest.raises(ConfigError, match="outside"):
        src.crop("img0", 90, 0, 10, 10)
    assert src.shape("img3") == (96, 128)


def test_patch_dataset_gives_native_crops_deterministically() -> None:
    ds = PatchDataset(ROWS, "model", ["A", "B"], patch=32, patches_per_image=5, seed=3,
                      image_cache=source())
    assert len(ds) == 20 and ds.targets == [0] * 10 + [1] * 10
    ds.set_epoch(1)
    x, y = ds[7]
    assert x.dtype == torch.float32 and x.shape == (1, 32, 32) and y == 0
    # Stored values, not resized: the patch is an exact window of image 1.
    assert find(IMAGES["img1"], x[0].numpy())
    again = PatchDataset(ROWS, "model", ["A", "B"], patch=32, patches_per_image=5, seed=3,
                         image_cache=source())
    again.set_epoch(1)
    assert torch.equal(again[7][0], x)
    # Other epoch / other seed / tagged draw: a different position.
    again.set_epoch(2)
    assert not torch.equal(again[7][0], x)
    other = PatchDataset(ROWS, "model", ["A", "B"], patch=32, patches_per_image=5, seed=4,
                         image_cache=source())
    other.set_epoch(1)
    assert not torch.equal(other[7][0], x)
    t1, t2 = ds[(7, 0)][0], ds[(7, 1)][0]
    assert not torch.equal(t1, t2)
    assert torch.equal(ds[(7, 1)][0], t2)
    assert find(IMAGES["img1"], t1[0].numpy()) and find(IMAGES["img1"], t2[0].numpy())
    with pytest.raises(IndexError):
        ds[20]


def test_patch_positions_avoid_flat_areas() -> None:
    img = noisy(9, 128, 128)
    img[:, :64] = 1000.0  # left half blank (e.g. collimated / blanked out): no detector noise
    src = MemoryImageSource(reader=Counting({"half": img}))
    ds = PatchDataset([{"path": "half", "model": "A"}], "model", ["A"], patch=32,
                      patches_per_image=40, image_cache=src)
    xs = [x for (_, x) in ds.pool(0)]
    assert min(xs) >= 64 - 8  # at most a sliver of the blank half (flat-ratio tolerance)
    for i in range(40):
        patch = ds[i][0][0].numpy()
        assert patch.std() > 5  # noise, not the blank area


def test_patch_set_dataset_fixed_positions() -> None:
    rows = ROWS
    ds = PatchSetDataset(rows, "model", ["A", "B"], patch=24, n_patches=6, seed=0,
                         image_cache=source())
    x, y = ds[2]
    assert x.shape == (6, 1, 24, 24) and y == 1
    # Same image, other row order: same patches.
    rev = PatchSetDataset(rows[::-1], "model", ["A", "B"], patch=24, n_patches=6, seed=0,
                          image_cache=source())
    assert torch.equal(rev[1][0], x)
    for k in range(6):
        assert find(IMAGES["img2"], x[k, 0].numpy())
    # A tiny valid area is repeated, never padded with garbage.
    small = {"s": noisy(1, 24, 25)}
    tiny = PatchSetDataset([{"path": "s"}], None, [], patch=24, n_patches=6,
                           image_cache=MemoryImageSource(reader=Counting(small)))
    xs, ys = tiny[0]
    assert xs.shape == (6, 1, 24, 24) and ys == -1


def test_errors_are_specific() -> None:
    with pytest.raises(ConfigError, match="not one of"):
        row_labels([{"path": "a", "model": "Z"}], "model", ["A", "B"])
    with pytest.raises(ConfigError, match="no column"):
        row_labels([{"path": "a"}], "model", ["A"])
    with pytest.raises(ConfigError, match="at least one row"):
        PatchDataset([], "model", ["A"])
    with pytest.raises(ConfigError, match="without a path"):
        PatchDataset([{"model": "A"}], "model", ["A"])
    ds = PatchDataset([{"path": "img0", "model": "A"}], "model", ["A"], patch=100,
                      image_cache=source())
    with pytest.raises(ConfigError, match="smaller than"):
        ds[0]


def test_paper_dataset_preprocesses_once() -> None:
    reader = Counting({"big": noisy(5, 300, 400)})
    ds = PaperImageDataset([{"path": "big", "model": "B"}], "model", ["A", "B"],
                           image_cache=MemoryImageSource(reader=reader))
    x, y = ds[0]
    assert x.shape == (1, 256, 256) and x.dtype == torch.float32 and y == 1
    assert float(x.min()) >= 0 and float(x.max()) <= 255
    assert torch.equal(x, torch.round(x))  # 8-bit levels, as in the papers
    assert torch.equal(ds[0][0], x)
    assert reader.calls == ["big"]


def test_memory_source_survives_pickling_for_spawned_workers() -> None:
    import pickle  # only to check what DataLoader workers do under "spawn"; no files written

    src = MemoryImageSource(reader=Counting(IMAGES))
    src.get("img1")
    clone = pickle.loads(pickle.dumps(src))
    assert np.array_equal(clone.get("img1"), IMAGES["img1"]) and clone.hits == 1


def test_positions_follow_the_content_not_the_folder() -> None:
    """With a manifest sha256, moving the archive elsewhere gives the same training and
    validation patches; without one the path is the key."""
    shas = {f"img{i}": f"{i:02d}" * 32 for i in range(4)}
    here = [{"path": f"/a/{r['path']}", "model": r["model"], "sha256": shas[r["path"]]}
            for r in ROWS]
    there = [dict(r, path=r["path"].replace("/a/", "/elsewhere/b/")) for r in here]
    images = {r["path"]: IMAGES[r["path"].rsplit("/", 1)[1]] for r in here + there}

    def make(rows, cls):
        src = MemoryImageSource(reader=Counting(images))
        kw = dict(patch=32, seed=3, image_cache=src)
        return (cls(rows, "model", ["A", "B"], patches_per_image=5, **kw)
                if cls is PatchDataset else cls(rows, "model", ["A", "B"], n_patches=4, **kw))

    a, b = make(here, PatchDataset), make(there, PatchDataset)
    for ds in (a, b):
        ds.set_epoch(2)
    assert all(torch.equal(a[i][0], b[i][0]) for i in range(len(a)))
    assert all(np.array_equal(make(here, PatchSetDataset).positions(i),
                              make(there, PatchSetDataset).positions(i)) for i in range(4))
    # no sha256: the path decides, so another folder draws other patches
    bare = [{k: v for k, v in r.items() if k != "sha256"} for r in here]
    moved = [{k: v for k, v in r.items() if k != "sha256"} for r in there]
    assert not all(np.array_equal(make(bare, PatchSetDataset).positions(i),
                                  make(moved, PatchSetDataset).positions(i)) for i in range(4))
