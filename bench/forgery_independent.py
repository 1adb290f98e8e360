"""Forgery detection on edits made by code independent of the project's tamper generator.

Usage::

    python bench/forgery_independent.py --manifest M.csv --source-run RUN [--out DIR] [--n 24]
    python bench/forgery_independent.py --real [--out DIR]     # real files, training-free

The manifest is a split source manifest of lossless DICOM files (e.g. the one
``bench/forgery.py`` writes under ``bench/out/forgery/work/manifest.csv``) and ``RUN`` a
source-identification ``patch`` run trained on its train split (``.../work/source_run``).
Only ``test`` rows are edited. The edits are written here with plain NumPy and pydicom, not
with ``medforensics.synth.tamper``, so the detector is checked against tampering whose code
it has never seen:

* ``splice``: a square block (side drawn from 64-192 px) cut from a test image of another
  device model, shifted so that its mean equals the mean of the region it covers, pasted with
  hard edges;
* ``clone``: a square block of the same image copied to a non-overlapping place (pure
  translation, hard edges);
* ``smooth``: a square block replaced by a 7x7 mean filter of itself plus nothing (a "clean
  up" edit that removes the detector noise there);
* ``clone-rot90`` / ``clone-mirror``: like ``clone``, the block turned by 90 degrees
  (``np.rot90``) or mirrored left-right before it is pasted;
* ``clone-rotated`` / ``clone-rotated-nn``: like ``clone``, the block turned by an arbitrary
  angle (5-45 degrees either way, ``scipy.ndimage.rotate`` of a larger block, centre cut out)
  with bilinear (``order=1``) or nearest-neighbour (``order=0``) interpolation;
* ``clone-scaled``: like ``clone``, a block of 0.8-1.25 x the side resized to the side
  (``scipy.ndimage.zoom``, bilinear);
* ``noise``: Gaussian noise of 0.5-1 x the image's own noise level added to a block;
* ``gain``: a block's contrast changed by 0.85-0.95 or 1.05-1.15 about its mean (a local
  "window" edit);
* ``inpaint``: a square of half the drawn side (at least 32 px) removed with OpenCV's
  inpainting (``cv2.inpaint``, Telea, radius 3) - a removal as an image editor makes it;
* ``splice-samebits``: like ``splice`` (mean-shifted, hard edges), but the donor is an image
  of another device with the *same* stored bit depth, so no value lattice of a gained-up
  low-bit donor gives it away; blocks of 64-128 px (donor blocks more than 10 % clipped are
  redrawn);
* ``removal-smooth``: a square of 64-128 px filled smoothly from its border (a Coons patch of
  the four 9-px-smoothed border profiles, 3 px thick) plus white Gaussian noise of the local
  noise level (robust standard deviation of the high-pass residual in a ring 4-16 px around
  the square) - a removal that keeps the noise level and leaves no hard seam.

With ``--jpeg Q`` every edited image and its original are exported to 8-bit JPEG of quality
``Q`` after the edit (a JPEG export of a tampered study), and those files are scored.

With ``--ablate CUE`` every image is also scored without that cue's map (the max rule over the
other maps of the same run): a second table, and the untouched originals flagged at the
detector's threshold with and without it.

With ``--real`` the images are the lossless single-frame files of ``../shared/data/real``
(radiographs of ``xray/`` and ``codecs/``, MR slices of ``mr/``; a file whose decoded pixels
equal an earlier one's is dropped), every file is edited once per kind (blocks 64-192 px, at most half the
image side), splice donors come from another device (by the header's manufacturer / model),
and the detector is the training-free one (no source model knows these devices), or with
``--forgery-run`` a trained ``cues`` run made without a source model.

Each edited image and its untouched original are scored by the training-free detector with
the fingerprint cue (``ForgeryDetector.from_run(None, source_run=RUN)``), or with
``--forgery-run CUES_RUN`` by a trained forgery detector (the learned ``cues`` combiner that
``bench/forgery.py`` trains, ``.../work/run_cues_dicom``, loaded with the same source run);
the script prints image AUC per kind and the mean pixel F1 at the best threshold (the edited
block as truth). For the clone kinds it prints a second pixel F1 whose truth is both copies:
the changed pixels and the source block they were copied from (a copy-move whose direction
the detector cannot show is reported as undetermined with both copies marked).

For the clone kinds it also scores the copy-move **direction**: whether the detector found a
pair with one area on the paste and the other on its source, whether it claimed which one was
pasted (``direction`` other than ``undetermined``), and whether that claim names the paste;
the table gives the share of found pairs with a claimed direction and the share of claims
that are right, with a 95 % Wilson interval.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import time
from pathlib import Path

import numpy as np


def _auc(pos: list[float], neg: list[float]) -> float:
    """Mann-Whitney AUC (ties count half)."""
    p, n = np.asarray(pos, float), np.asarray(neg, float)
    if not len(p) or not len(n):
        return float("nan")
    gt = (p[:, None] > n[None, :]).sum() + 0.5 * (p[:, None] == n[None, :]).sum()
    return float(gt / (len(p) * len(n)))


def _best_f1(prob: np.ndarray, truth: np.ndarray) -> float:
    """Best F1 over thresholds of ``prob`` (101 levels) against a boolean ``truth``."""
    best = 0.0
    t = truth.ravel()
    p = prob.ravel()
    for thr in np.linspace(0.0, 1.0, 101):
        pred = p >= thr
        tp = float(np.logical_and(pred, t).sum())
        fp = float(pred.sum()) - tp
        fn = float(t.sum()) - tp
        if tp:
            best = max(best, 2 * tp / (2 * tp + fp + fn))
    return best


def _both_copies(mask: np.ndarray, truth: dict[str, tuple[int, int, int, int]]) -> np.ndarray:
    """Truth of a clone edit with both copies: the changed pixels plus the source block
    (``truth["source"]``, ``(x0, y0, x1, y1)``, clipped to the image)."""
    both = mask.copy()
    x0, y0, x1, y1 = truth["source"]
    both[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = True
    return both


def _smooth_fill(img: np.ndarray, y: int, x: int, side: int, rng: np.random.Generator
                 ) -> np.ndarray:
    """``img`` with the square ``[y, y + side) x [x, x + side)`` replaced by a Coons patch of
    its smoothed border profiles plus white noise of the local noise level."""
    from scipy import ndimage

    from medforensics.dsp.residuals import highpass_residual, robust_std

    h, w = img.shape
    t, k = 3, 9  # border thickness, smoothing length along the border

    def prof(a: np.ndarray) -> np.ndarray:
        return ndimage.uniform_filter1d(a.mean(axis=0), k, mode="nearest")

    top = prof(img[max(y - t, 0):max(y, 1), x:x + side]) if y > 0 else None
    bot = prof(img[y + side:min(y + side + t, h), x:x + side]) if y + side < h else None
    lef = prof(img[y:y + side, max(x - t, 0):max(x, 1)].T) if x > 0 else None
    rig = prof(img[y:y + side, x + side:min(x + side + t, w)].T) if x + side < w else None
    top = bot if top is None else top
    bot = top if bot is None else bot
    lef = rig if lef is None else lef
    rig = lef if rig is None else rig
    u = (np.arange(side) + 0.5) / side  # across (x)
    v = (np.arange(side) + 0.5) / side  # down (y)
    U, V = np.meshgrid(u, v)
    c00, c01 = (top[0] + lef[0]) / 2, (top[-1] + rig[0]) / 2
    c10, c11 = (bot[0] + lef[-1]) / 2, (bot[-1] + rig[-1]) / 2
    fill = ((1 - V) * top[None, :] + V * bot[None, :] + (1 - U) * lef[:, None]
            + U * rig[:, None]
            - ((1 - U) * (1 - V) * c00 + U * (1 - V) * c01 + (1 - U) * V * c10 + U * V * c11))
    y0, y1, x0, x1 = max(y - 16, 0), min(y + side + 16, h), max(x - 16, 0), min(x + side + 16, w)
    res = highpass_residual(img[y0:y1, x0:x1], normalize=True)
    ring = np.ones(res.shape, bool)
    ring[max(y - 4 - y0, 0):y + side + 4 - y0, max(x - 4 - x0, 0):x + side + 4 - x0] = False
    sigma = robust_std(res[ring]) if ring.any() else robust_std(res)
    out = img.copy()
    out[y:y + side, x:x + side] = fill + rng.normal(0.0, sigma, (side, side))
    return out


def _edit(kind: str, img: np.ndarray, donor: np.ndarray, rng: np.random.Generator
          ) -> tuple[np.ndarray, np.ndarray, dict[str, tuple[int, int, int, int]] | None]:
    """One edit of ``kind``: returns (edited image, boolean mask of changed pixels, and for
    the clone kinds the true ``{"pasted": box, "source": box}``, boxes ``(x0, y0, x1, y1)``)."""
    h, w = img.shape
    if kind in ("splice-samebits", "removal-smooth"):  # 64-128 px
        side = int(rng.integers(64, min(129, h // 2, w // 2)))
        y, x = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
        if kind == "removal-smooth":
            out = _smooth_fill(img, y, x, side, rng)
        else:
            dh, dw = donor.shape
            lo, hi = donor.min(), donor.max()
            for _ in range(20):  # a donor block of content, not of clipped background
                dy, dx = int(rng.integers(0, dh - side)), int(rng.integers(0, dw - side))
                block = donor[dy:dy + side, dx:dx + side].astype(np.float64)
                if np.mean((block <= lo) | (block >= hi)) <= 0.1:
                    break
            out = img.copy()
            out[y:y + side, x:x + side] = block + img[y:y + side, x:x + side].mean() - block.mean()
        return out, out != img, None
    side = int(rng.integers(64, min(193, h // 2, w // 2)))
    y, x = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
    out = img.copy()
    truth = None
    if kind == "splice":
        dh, dw = donor.shape
        dy, dx = int(rng.integers(0, dh - side)), int(rng.integers(0, dw - side))
        block = donor[dy:dy + side, dx:dx + side].astype(np.float64)
        block += img[y:y + side, x:x + side].mean() - block.mean()
        out[y:y + side, x:x + side] = block
    elif kind == "clone":
        for _ in range(100):
            sy, sx = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
            if abs(sy - y) >= side or abs(sx - x) >= side:
                break
        out[y:y + side, x:x + side] = img[sy:sy + side, sx:sx + side]
        truth = {"source": (sx, sy, sx + side, sy + side)}
    elif kind in ("clone-rot90", "clone-mirror"):
        for _ in range(100):
            sy, sx = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
            if abs(sy - y) >= side or abs(sx - x) >= side:
                break
        block = img[sy:sy + side, sx:sx + side]
        out[y:y + side, x:x + side] = np.rot90(block) if kind == "clone-rot90" else block[:, ::-1]
        truth = {"source": (sx, sy, sx + side, sy + side)}
    elif kind in ("clone-rotated", "clone-rotated-nn", "clone-scaled"):
        from scipy import ndimage

        for _ in range(100):
            sy, sx = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
            if abs(sy - y) >= side or abs(sx - x) >= side:
                break
        if kind == "clone-scaled":
            src = max(8, int(round(side * rng.uniform(0.8, 1.25))))
            sy, sx = min(sy, h - src), min(sx, w - src)
            block = img[sy:sy + src, sx:sx + src]
            truth = {"source": (sx, sy, sx + src, sy + src)}
            block = ndimage.zoom(block, side / src, order=1)[:side, :side]
            if block.shape != (side, side):  # rounding of zoom's output size
                block = np.pad(block, ((0, side - block.shape[0]), (0, side - block.shape[1])),
                               mode="edge")
        else:
            big = int(side * 1.5) + 2
            cy, cx = min(max(sy + side // 2, big // 2), h - big + big // 2), min(
                max(sx + side // 2, big // 2), w - big + big // 2)
            patch = img[cy - big // 2:cy - big // 2 + big, cx - big // 2:cx - big // 2 + big]
            angle = float(rng.uniform(5, 45)) * (1 if rng.random() < 0.5 else -1)
            rot = ndimage.rotate(patch, angle, reshape=False,
                                 order=0 if kind == "clone-rotated-nn" else 1, mode="nearest")
            o = (big - side) // 2
            block = rot[o:o + side, o:o + side]
            py, px = cy - big // 2 + o, cx - big // 2 + o  # the turned block's source area
            truth = {"source": (px, py, px + side, py + side)}
        out[y:y + side, x:x + side] = block
    elif kind == "noise":
        from medforensics.dsp.residuals import highpass_residual, robust_std

        sigma = robust_std(highpass_residual(img, normalize=True)) * float(rng.uniform(0.5, 1.0))
        out[y:y + side, x:x + side] += rng.normal(0.0, sigma, (side, side))
    elif kind == "gain":
        g = float(rng.uniform(1.05, 1.15)) if rng.random() < 0.5 else float(rng.uniform(0.85, 0.95))
        blk = out[y:y + side, x:x + side]
        out[y:y + side, x:x + side] = blk.mean() + g * (blk - blk.mean())
    elif kind == "inpaint":
        import cv2

        half = max(32, side // 2)  # removals are smaller than the clones
        hole = np.zeros((h, w), np.uint8)
        hole[y:y + half, x:x + half] = 1
        out = cv2.inpaint(img.astype(np.float32), hole, 3, cv2.INPAINT_TELEA).astype(np.float64)
    elif kind == "smooth":
        from scipy import ndimage

        out[y:y + side, x:x + side] = ndimage.uniform_filter(
            img.astype(np.float64), size=7)[y:y + side, x:x + side]
    else:
        raise ValueError(kind)
    mask = out != img
    if truth is not None:
        truth["pasted"] = (x, y, x + side, y + side)
    return out, mask, truth


def _direction(pairs: list[dict], truth: dict[str, tuple[int, int, int, int]],
               shape: tuple[int, int]) -> str:
    """How the detector reported the copy-move of one clone edit: ``"missed"`` (no pair has
    one area on the paste and the other on its source), ``"undetermined"``, ``"right"`` (the
    area it calls pasted lies more on the paste than on what is left of its source) or
    ``"wrong"``. A paste may overlap its own source (small images): the source's pixels under
    the paste are pasted content, so the source is its box minus the paste."""
    h, w = shape
    paste = np.zeros((h, w), bool)
    x0, y0, x1, y1 = truth["pasted"]
    paste[max(y0, 0):y1, max(x0, 0):x1] = True
    source = np.zeros((h, w), bool)
    x0, y0, x1, y1 = truth["source"]
    source[max(y0, 0):y1, max(x0, 0):x1] = True
    source &= ~paste

    def on(box: list[int] | None, ref: np.ndarray) -> float:
        if box is None or not ref.any():
            return 0.0
        bx0, by0, bx1, by1 = (int(v) for v in box)
        area = max((bx1 - bx0) * (by1 - by0), 1)
        inter = int(ref[max(by0, 0):by1, max(bx0, 0):bx1].sum())
        return max(inter / area, inter / int(ref.sum()))

    best, best_ov = None, 0.0
    for p in pairs:
        for mine, other in ((p.get("bbox_a"), p.get("bbox_b")), (p.get("bbox_b"), p.get("bbox_a"))):
            ov = min(on(mine, paste), on(other, source))
            if ov >= 0.3 and ov > best_ov:
                best, best_ov = p, ov
    if best is None:
        return "missed"
    if best.get("direction") == "undetermined" or best.get("pasted_bbox") is None:
        return "undetermined"
    pasted = best["pasted_bbox"]
    return "right" if on(pasted, paste) > on(pasted, source) else "wrong"


def _detect(det, img, ablate: str) -> tuple[object, float, np.ndarray | None]:
    """``(result, score without cue, map without cue)`` of one image: with ``ablate`` (a cue
    name) also the max-rule score and map of the other strong cue maps (what the detector
    gives without that cue, on the same run); else ``(result, nan, None)``."""
    from medforensics.forgery.localize import SCORE_WINDOW, WEAK_CUES, combine_cues
    from medforensics.forgery.scoring import image_score

    if not ablate:
        return det.detect(img.pixels, img.meta), float("nan"), None
    res, maps = det.detect_with_cues(img.pixels, img.meta)
    rest = {k: v for k, v in maps.items() if k != ablate and k not in WEAK_CUES}
    if not rest:
        return res, 0.0, np.zeros(np.shape(res.prob_map), np.float32)
    m = combine_cues(rest)
    return res, image_score(m, SCORE_WINDOW), m


def _wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson interval of a proportion ``k / n`` (``(nan, nan)`` when ``n == 0``)."""
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(c - h, 0.0)), float(min(c + h, 1.0))


def direction_summary(outcomes: dict[str, list[str]]) -> dict[str, dict]:
    """Per clone kind and over all: pairs found, share with a claimed direction, share right
    where claimed (with a 95 % Wilson interval)."""
    out: dict[str, dict] = {}
    allv = [o for v in outcomes.values() for o in v]
    for k, v in [*outcomes.items(), ("all clones", allv)]:
        found = [o for o in v if o != "missed"]
        claimed = [o for o in found if o in ("right", "wrong")]
        right = sum(o == "right" for o in claimed)
        out[k] = {"edits": len(v), "found": len(found), "claimed": len(claimed), "right": right,
                  "claimed_share": len(claimed) / len(found) if found else float("nan"),
                  "right_share": right / len(claimed) if claimed else float("nan"),
                  "right_share_ci95": _wilson(right, len(claimed))}
    return out


KINDS = ("splice", "clone", "smooth", "clone-rot90", "clone-mirror", "clone-rotated",
         "clone-rotated-nn", "clone-scaled", "noise", "gain", "inpaint", "splice-samebits",
         "removal-smooth")
REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


def _to_jpeg(path: Path, reference: np.ndarray, dest: Path, quality: int) -> Path:
    """Window a DICOM's stored values to 8 bits (0.5-99.5 percentiles of ``reference``,
    the unedited image, so an original and its edit share the window) and save a JPEG."""
    import pydicom
    from PIL import Image

    x = pydicom.dcmread(path).pixel_array.astype(np.float64)
    lo, hi = np.percentile(reference, [0.5, 99.5])
    u8 = np.clip(np.rint((x - lo) * 255.0 / max(hi - lo, 1.0)), 0, 255).astype(np.uint8)
    Image.fromarray(u8).save(dest, format="JPEG", quality=quality)
    return dest


def _real_rows() -> list[dict[str, str]]:
    """Distinct lossless single-frame real files (>= 256 px, see realfiles), device as model."""
    from realfiles import lossless_real_files

    cands = (list((REAL / "xray").glob("*.dcm")) + list((REAL / "codecs").glob("*.dcm"))
             + list((REAL / "mr").glob("*/*.dcm")))
    return [{"path": str(p), "model": f"{m.manufacturer}|{m.model}",
             "BitsStored": str(m.bits_stored)} for p, m in lossless_real_files(cands)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", default="bench/out/forgery/work/manifest.csv")
    ap.add_argument("--source-run", default="bench/out/forgery/work/source_run")
    ap.add_argument("--out", default="bench/out/forgery_independent")
    ap.add_argument("--n", type=int, default=24, help="test images per kind")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--kinds", default=",".join(KINDS), help="comma-separated edit kinds")
    ap.add_argument("--real", action="store_true",
                    help="edit the lossless real files of ../shared/data/real instead")
    ap.add_argument("--split", default="test",
                    help="manifest split to edit (simulated images; 'train' for a tuning set)")
    ap.add_argument("--noise-extra-blocks", default="",
                    help="also run the noise cue with these block sizes, e.g. 32 (an option of "
                         "the detector, cue_params noise extra_blocks)")
    ap.add_argument("--whiteness", choices=("default", "on", "off"), default="default",
                    help="include the noise-whiteness cue (detector option whiteness=True / "
                         "False; default: the detector's default)")
    ap.add_argument("--ablate", default="", metavar="CUE",
                    help="also score every image without this cue's map (same run, max rule "
                         "over the other maps): a second table")
    ap.add_argument("--no-fingerprint", action="store_true",
                    help="simulated images: the training-free cues only (no source model)")
    ap.add_argument("--forgery-run", default=None, metavar="CUES_RUN",
                    help="score with this trained forgery run (e.g. the learned cues combiner "
                         "bench/forgery.py trains, work/run_cues_dicom) instead of the "
                         "training-free detector; with --real only a run without the "
                         "fingerprint cue")
    ap.add_argument("--jpeg", type=int, default=0, metavar="Q",
                    help="export the edited image and its original to 8-bit JPEG of quality "
                         "Q (0.5-99.5 percentile window of the original) before detection")
    args = ap.parse_args()

    import pydicom
    import torch

    from medforensics.forgery.detector import ForgeryDetector
    from medforensics.io import read_image

    logging.basicConfig(level=logging.ERROR)
    torch.set_num_threads(1)
    cue_params = ({"noise": {"extra_blocks": tuple(int(b) for b in
                                                   args.noise_extra_blocks.split(","))}}
                  if args.noise_extra_blocks else None)
    white = {"default": None, "on": True, "off": False}[args.whiteness]
    if args.forgery_run and args.no_fingerprint:
        ap.error("--forgery-run loads the run's own cues (with its source run when it uses "
                 "the fingerprint): not with --no-fingerprint")
    if args.real:
        rows = _real_rows()
        if args.out == "bench/out/forgery_independent":
            args.out = "bench/out/forgery_independent_real"
        # no source model knows these devices: a trained run only if it has no fingerprint cue
        det = ForgeryDetector.from_run(args.forgery_run, cue_params=cue_params,
                                       whiteness=white)
        n = len(rows)
    else:
        rows = [r for r in csv.DictReader(open(args.manifest, newline="", encoding="utf-8"))
                if r.get("split") == args.split and r.get("status") == "eligible"]
        det = ForgeryDetector.from_run(
            args.forgery_run, source_run=None if args.no_fingerprint else args.source_run,
            cue_params=cue_params, whiteness=white)
        n = args.n
    rng = np.random.default_rng(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    scores: dict[str, dict[str, list[float]]] = {}
    f1s: dict[str, list[float]] = {}
    f1s_both: dict[str, list[float]] = {}
    orig_cache: dict[str, float] = {}
    orig_wo: dict[str, float] = {}
    ablated: dict[str, dict[str, list[float]]] = {}
    dirs: dict[str, list[str]] = {}
    pairs_log: dict[str, list[dict]] = {}
    for kind in [k.strip() for k in args.kinds.split(",") if k.strip()]:
        same_bits = kind == "splice-samebits"

        def donors(r: dict[str, str]) -> list[dict[str, str]]:
            return [o for o in rows if o["model"] != r["model"] and (
                not same_bits or o.get("BitsStored") == r.get("BitsStored"))]

        picks = rng.permutation(len(rows))
        if same_bits:  # only images with a donor of another device and the same bit depth
            picks = np.array([i for i in picks.tolist() if donors(rows[i])], int)
        picks = picks[:n]
        for i in picks.tolist():
            r = rows[i]
            ds = pydicom.dcmread(r["path"])
            if ds.file_meta.TransferSyntaxUID.is_compressed:
                ds.decompress()  # written back uncompressed (explicit VR little endian)
            stored = ds.pixel_array
            others = donors(r)
            donor = pydicom.dcmread(others[int(rng.integers(len(others)))]["path"]).pixel_array
            edited, mask, truth = _edit(kind, stored.astype(np.float64), donor, rng)
            info = np.iinfo(stored.dtype)
            ds.PixelData = np.clip(np.rint(edited), info.min, info.max).astype(
                stored.dtype).tobytes()
            path = out / f"{kind}_{i:03d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            if args.jpeg:
                path = _to_jpeg(path, stored, out / f"{kind}_{i:03d}.jpg", args.jpeg)
            img = read_image(path)
            res, s_wo, m_wo = _detect(det, img, args.ablate)
            scores.setdefault(kind, {"tampered": [], "original": []})["tampered"].append(res.score)
            if r["path"] not in orig_cache:
                opath = Path(r["path"])
                if args.jpeg:
                    opath = _to_jpeg(opath, stored, out / f"original_{i:03d}.jpg", args.jpeg)
                o = read_image(opath)
                ores, os_wo, _ = _detect(det, o, args.ablate)
                orig_cache[r["path"]] = ores.score
                orig_wo[r["path"]] = os_wo
            scores[kind]["original"].append(orig_cache[r["path"]])
            f1s.setdefault(kind, []).append(_best_f1(np.asarray(res.prob_map), mask))
            if args.ablate:
                abl = ablated.setdefault(kind, {"tampered": [], "original": [], "f1": []})
                abl["tampered"].append(s_wo)
                abl["original"].append(orig_wo[r["path"]])
                abl["f1"].append(_best_f1(m_wo, mask))
            if truth is not None:
                f1s_both.setdefault(kind, []).append(
                    _best_f1(np.asarray(res.prob_map), _both_copies(mask, truth)))
                dirs.setdefault(kind, []).append(_direction(res.copy_moves, truth,
                                                            res.prob_map.shape))
                pairs_log.setdefault(kind, []).append({"file": path.name, "truth": truth,
                                                       "pairs": res.copy_moves})
    summary: dict = {k: {"image_auc": _auc(v["tampered"], v["original"]),
                         "pixel_f1_best": float(np.mean(f1s[k])),
                         "pixel_f1_best_both": (float(np.mean(f1s_both[k])) if k in f1s_both
                                                else None),
                         "n": len(v["tampered"])}
                     for k, v in scores.items()}
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    detector = (f"trained forgery run {args.forgery_run}" if args.forgery_run
                else "training-free")
    thr = det.threshold
    flagged = {"threshold": thr, "originals": len(orig_cache),
               "flagged": sum(v >= thr for v in orig_cache.values())}
    abl_summary = {k: {"image_auc": _auc(v["tampered"], v["original"]),
                       "pixel_f1_best": float(np.mean(v["f1"])), "n": len(v["tampered"])}
                   for k, v in ablated.items()}
    if args.ablate:
        flagged["flagged_without"] = sum(v >= thr for v in orig_wo.values())
    direction = direction_summary(dirs) if dirs else {}
    (out / "results.json").write_text(json.dumps({"detector": detector, "summary": summary,
                                                  "scores": scores,
                                                  "originals": {"flagged": flagged,
                                                                "scores": orig_cache,
                                                                "scores_without": orig_wo},
                                                  "ablated": {"cue": args.ablate,
                                                              "summary": abl_summary,
                                                              "scores": ablated},
                                                  "direction": direction,
                                                  "direction_outcomes": dirs,
                                                  "direction_pairs": pairs_log}, indent=1,
                                                 default=str))
    print(f"detector: {detector}\n")
    print("| edit (independent code) | n | image AUC | pixel F1 best (edited block) | "
          "pixel F1 best (both copies, clones) |\n|---|---:|---:|---:|---:|")
    for k, v in summary.items():
        if isinstance(v, dict):
            both = "-" if v["pixel_f1_best_both"] is None else f"{v['pixel_f1_best_both']:.2f}"
            print(f"| {k} | {v['n']} | {v['image_auc']:.2f} | {v['pixel_f1_best']:.2f} | "
                  f"{both} |")
    if args.ablate:
        print(f"\nwithout the {args.ablate} cue (same run):\n| edit | n | image AUC | "
              "pixel F1 best |\n|---|---:|---:|---:|")
        for k, v in abl_summary.items():
            print(f"| {k} | {v['n']} | {v['image_auc']:.2f} | {v['pixel_f1_best']:.2f} |")
    print(f"\nuntouched originals with score >= {thr:.2f}: {flagged['flagged']} of "
          f"{flagged['originals']}" + (f" ({flagged['flagged_without']} without the "
                                       f"{args.ablate} cue)" if args.ablate else ""))
    if direction:
        print("\n| copy-move direction | clone edits | pairs found | direction claimed | "
              "right where claimed [95 % interval] |\n|---|---:|---:|---:|---:|")
        for k, v in direction.items():
            lo, hi = v["right_share_ci95"]
            right = ("-" if not v["claimed"] else
                     f"{v['right']} of {v['claimed']} ({100 * v['right_share']:.0f} % "
                     f"[{100 * lo:.0f}-{100 * hi:.0f} %])")
            claimed = ("-" if not v["found"] else
                       f"{v['claimed']} of {v['found']} ({100 * v['claimed_share']:.0f} %)")
            print(f"| {k} | {v['edits']} | {v['found']} | {claimed} | {right} |")
    print(f"\n{summary['seconds']} s")


if __name__ == "__main__":
    main()
