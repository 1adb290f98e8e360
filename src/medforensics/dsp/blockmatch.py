"""Block matching for copy-move detection on noise residuals (pure NumPy).

On a noisy detector image, two *independent* ``B x B`` blocks of the high-pass residual are
never (near-)identical; a region that was copied with its stored values carries an exact
copy of its noise. Matching residual blocks is therefore both fast (exact or near-exact
keys can be sorted) and precise (a handful of matches at the same shift is already
significant).

Pipeline (:func:`match_blocks`):

1. ``residual`` (any linear high-pass residual of the stored values; exact copies of the
   image give exact copies of the residual away from the region border).
2. Features: the residual summed over 2x2 cells on a ``block/2 x block/2`` grid inside each
   overlapping block (16 values for ``block=8``), divided by the block's own RMS cell sum
   and quantised with a step of ``quant``, hashed into sortable keys. The per-block scale
   makes the key independent of the local noise level: a copy in a quiet (bright, low-dose
   or strongly processed) area is keyed as finely as one in a noisy area. With one global
   step, quiet blocks would all fall into a few coarse keys, their partners would not be
   adjacent in key order, and an energy floor would have to leave them out.
3. Blocks that are not noise-like are left out: blocks with more than ``max_zero_frac``
   exactly-zero residual values (flat, clipped, padded areas and synthetic graphics such
   as burned-in text or rulers, which repeat exactly by construction), blocks whose
   residual is sparse (``(sum|r|)^2 / (n sum r^2) < min_density``: an edge or a line carries
   the energy, as on processed, noise-free areas), blocks whose residual is mostly a
   constant offset (variance below ``min_var_frac`` of the mean square: smooth ramps repeat
   it everywhere), and blocks whose
   residual energy is below ``energy_frac`` or above ``energy_max`` x the median energy of
   the remaining blocks (strong straight edges look alike when shifted along the edge).
4. Keys are sorted lexicographically; each block is compared with the next ``window``
   blocks in that order; pairs with identical keys and a spatial offset of at least
   ``min_shift`` pixels are verified on the full residual blocks with the normalised
   distance ``|a - b|^2 / (|a|^2 + |b|^2)`` (0 for a copy, ~1 for unrelated noise).
5. :func:`shift_consensus` keeps shift vectors shared by at least ``min_count`` pairs;
   :func:`coherent_support` counts how many of them form one connected region (a copied
   region gives a solid patch of matching blocks; chance matches, e.g. between quiet,
   identically quantised blocks of a JPEG image, are scattered).
6. :func:`match_density` turns the kept pairs into a per-pixel map: the share of the
   ``B x B`` blocks covering a pixel that take part in a kept match (1 inside a copied
   region, falling off over ``B`` pixels at its border).

Only translations are found (no rotation / scaling).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medforensics.dsp._checks import as_image
from medforensics.errors import ConfigError

__all__ = ["BlockMatches", "DIHEDRAL", "canonical_pairs", "dihedral_apply", "match_blocks",
           "shift_consensus", "coherent_support", "match_density", "shift_correlation"]


@dataclass
class BlockMatches:
    """Matched block pairs (top-left corners, ``(y, x)``), canonical shift ``b - a``.

    Attributes:
        a: int32 (K, 2) first block of each pair.
        b: int32 (K, 2) second block; ``b - a`` has ``dy > 0`` or ``dy == 0 and dx > 0``.
        dist: float32 (K,) normalised residual distance (0 = identical).
        block: block side in pixels.
        n_blocks: number of blocks considered (after the energy filter).
        transform: int8 (K,) index into :data:`DIHEDRAL` of each pair (0 = translation).
        sample_stride: 1, or ``s`` when only every ``s``-th candidate pair was verified
            (heavily repeated content, see ``max_pairs``).
    """

    a: np.ndarray
    b: np.ndarray
    dist: np.ndarray
    block: int
    n_blocks: int
    transform: np.ndarray | None = None
    sample_stride: int = 1

    def __post_init__(self) -> None:
        if self.transform is None:
            self.transform = np.zeros(len(self.a), np.int8)

    @property
    def shifts(self) -> np.ndarray:
        """int32 (K, 2) shift vectors ``b - a``."""
        return (self.b - self.a).astype(np.int32)

    def select(self, keep: np.ndarray) -> BlockMatches:
        """The pairs where ``keep`` (bool (K,)) is True."""
        assert self.transform is not None
        return BlockMatches(self.a[keep], self.b[keep], self.dist[keep], self.block,
                            self.n_blocks, self.transform[keep], self.sample_stride)

    def offsets(self) -> np.ndarray:
        """int64 (K, 2) translation ``t`` of each pair's mapping ``c_b = M c_a + t``.

        ``c`` are block centres and ``M`` the pair's dihedral matrix (:data:`DIHEDRAL`);
        for untransformed pairs ``t`` is the shift ``b - a``. All pairs of one rotated or
        mirrored copy share ``t``.
        """
        assert self.transform is not None
        c = (self.block - 1) / 2.0
        ca = self.a.astype(np.float64) + c
        cb = self.b.astype(np.float64) + c
        m = _DIHEDRAL_M[self.transform.astype(np.int64)]  # (K, 2, 2)
        t = cb - np.einsum("kij,kj->ki", m, ca)
        return np.rint(t).astype(np.int64)


def _box_sums_topleft(a: np.ndarray, block: int) -> np.ndarray:
    """out[y, x] = a[y:y+block, x:x+block].sum() for every top-left (y, x) of a full block."""
    c = np.cumsum(np.cumsum(np.pad(a, ((1, 0), (1, 0))), 0), 1)
    return c[block:, block:] - c[:-block, block:] - c[block:, :-block] + c[:-block, :-block]


#: strip height (rows) and chunk length of the memory-bounded passes
_STRIP = 512
_CHUNK = 1 << 15  # blocks per key chunk: (chunk, 16) temporaries stay small and in cache


def _hash_multipliers(n: int) -> np.ndarray:
    """``n`` fixed odd 64-bit multipliers of the block-key hash (deterministic)."""
    rng = np.random.default_rng(0x5EED_B10C)
    return rng.integers(1, 2**63 - 1, size=n, dtype=np.int64).astype(np.uint64) * np.uint64(2) \
        + np.uint64(1)


def _cell_sums(r: np.ndarray) -> np.ndarray:
    """2x2 box sums: out[y, x] = r[y:y+2, x:x+2].sum(), shape (H-1, W-1)."""
    return r[:-1, :-1] + r[1:, :-1] + r[:-1, 1:] + r[1:, 1:]


#: the 8 rotations / mirrorings of a square block: name and 2x2 matrix ``M`` on centred
#: ``(y, x)`` coordinates (content at ``p`` moves to ``M p``); index 0 is the identity
DIHEDRAL: tuple[str, ...] = ("identity", "rot90", "rot180", "rot270", "flip-v", "flip-h",
                             "transpose", "anti-transpose")
_DIHEDRAL_M = np.array([
    [[1, 0], [0, 1]], [[0, -1], [1, 0]], [[-1, 0], [0, -1]], [[0, 1], [-1, 0]],
    [[-1, 0], [0, 1]], [[1, 0], [0, -1]], [[0, 1], [1, 0]], [[0, -1], [-1, 0]],
], dtype=np.int64)


def canonical_pairs(m: BlockMatches) -> BlockMatches:
    """Orient transformed pairs so that all pairs of one copy share transform and offset.

    A pair ``(a, b)`` with transform ``M`` and offset ``t`` (``c_b = M c_a + t``) is the
    pair ``(b, a)`` with ``M^-1`` and ``-M^-1 t``; which way round a pair came out of the
    matching depends on the blocks' positions, so the pairs of one rotated copy could fall
    into two groups. Here ``rot270`` pairs are turned into ``rot90`` ones, and pairs of a
    self-inverse transform take the lexicographically smaller of the two offsets.
    Untransformed pairs are returned as they are.

    Args:
        m: matches with ``transform``.

    Returns:
        :class:`BlockMatches` with the same pairs, some swapped.
    """
    assert m.transform is not None
    if not len(m.a):
        return m
    k = m.transform.astype(np.int64)
    t = m.offsets()
    inv = np.array([0, 3, 2, 1, 4, 5, 6, 7])[k]
    ts = -np.einsum("kij,kj->ki", _DIHEDRAL_M[inv], t)
    smaller = (ts[:, 0] < t[:, 0]) | ((ts[:, 0] == t[:, 0]) & (ts[:, 1] < t[:, 1]))
    swap = (k == 3) | ((k != 0) & (k != 1) & (k != 3) & smaller)
    a = np.where(swap[:, None], m.b, m.a)
    b = np.where(swap[:, None], m.a, m.b)
    return BlockMatches(a, b, m.dist, m.block, m.n_blocks, np.where(swap, inv, k).astype(np.int8),
                        m.sample_stride)


def dihedral_apply(blocks: np.ndarray, k: int) -> np.ndarray:
    """Apply dihedral transform ``k`` (index into :data:`DIHEDRAL`) to square arrays.

    Args:
        blocks: (..., B, B) array.
        k: 0..7.

    Returns:
        Array of the same shape: ``out[..., M p] = blocks[..., p]`` in centred coordinates.
    """
    ax = (-2, -1)
    if k == 0:
        return blocks
    if k in (1, 2, 3):
        return np.rot90(blocks, k, axes=ax)
    if k == 4:
        return blocks[..., ::-1, :]
    if k == 5:
        return blocks[..., :, ::-1]
    if k == 6:
        return np.swapaxes(blocks, -2, -1)
    return np.rot90(np.swapaxes(blocks, -2, -1), 2, axes=ax)


def _dihedral_index(m: np.ndarray) -> np.ndarray:
    """Index into :data:`DIHEDRAL` of each 2x2 matrix in ``m`` (K, 2, 2)."""
    flat = m.reshape(-1, 4)
    ref = _DIHEDRAL_M.reshape(8, 4)
    eq = (flat[:, None, :] == ref[None, :, :]).all(axis=2)
    return np.argmax(eq, axis=1).astype(np.int8)


def _usable_blocks(r: np.ndarray, v: np.ndarray | None, block: int, *, max_zero_frac: float,
                   min_density: float, min_var_frac: float, energy_frac: float,
                   energy_max: float) -> np.ndarray | None:
    """Which ``block x block`` residual blocks are noise-like enough to be matched.

    Per-block statistics are computed at every top-left position in float64, strip by strip
    (a strip of top-left rows needs ``block - 1`` more residual rows), so that only a bool
    mask and the float32 energy are kept for the whole image.

    Args:
        r: (H, W) float residual.
        v: optional bool (H, W) of valid pixels.
        block: block side in pixels.
        max_zero_frac, min_density, min_var_frac, energy_frac, energy_max: the block filters
            of :func:`match_blocks`.

    Returns:
        bool (H - block + 1, W - block + 1), True for a usable block at that top-left corner;
        None when no block passes the sparsity, density and variance filters.
    """
    H, W = r.shape
    hb, wb = H - block + 1, W - block + 1
    ok = np.empty((hb, wb), bool)
    vok = None if v is None else np.empty((hb, wb), bool)
    e = np.empty((hb, wb), np.float32)
    for y0 in range(0, hb, _STRIP):
        y1 = min(y0 + _STRIP, hb)
        rs = r[y0 : y1 + block - 1].astype(np.float64)
        es = _box_sums_topleft(rs * rs, block)
        # synthetic content (burned-in graphics, padding, clipped areas) has sparse residuals:
        # exactly repeated by construction, not noise; keep blocks whose residual is dense
        zs = _box_sums_topleft((rs == 0).astype(np.float64), block)
        oks = zs <= max_zero_frac * block * block
        # noise-likeness: (sum|r|)^2 / (n sum r^2) is 2/pi ~ 0.64 for Gaussian noise and
        # small when a few pixels (an edge, a line) carry the energy
        l1 = _box_sums_topleft(np.abs(rs), block)
        oks &= l1 * l1 >= min_density * block * block * np.maximum(es, 1e-12)
        # a mostly constant residual (smooth ramp) is no fingerprint: var >= min_var_frac * ms
        s1 = _box_sums_topleft(rs, block)
        oks &= es - s1 * s1 / (block * block) >= min_var_frac * es
        ok[y0:y1] = oks
        e[y0:y1] = es
        if v is not None and vok is not None:
            vok[y0:y1] = _box_sums_topleft(
                (~v[y0 : y1 + block - 1]).astype(np.float64), block) < 0.5
    if not ok.any():
        return None
    med = float(np.median(e[ok], overwrite_input=True))
    ok &= (e > max(energy_frac * med, 1e-12)) & (e < energy_max * med)
    del e
    if vok is not None:
        ok &= vok
    return ok


def _block_keys(r: np.ndarray, ys: np.ndarray, xs: np.ndarray, block: int, quant: float,
                dihedral: bool) -> tuple[np.ndarray, np.ndarray]:
    """Sortable 64-bit keys of the blocks at top-left corners ``(ys, xs)``.

    A block's key is its ``g x g`` 2x2 cell sums (``g = block / 2``) divided by their RMS and
    quantised with step ``quant`` (a copied block has bit-identical cells, hence the same RMS
    and key), hashed with fixed multipliers (identical keys are equal; the rare hash collision
    of different keys only adds a candidate pair that the verification rejects). With
    ``dihedral`` a block is keyed by the smallest of its 8 rotated / mirrored keys.

    Args:
        r: (H, W) float residual.
        ys, xs: int32 (N,) top-left corners of the usable blocks.
        block: block side in pixels.
        quant: quantisation step in units of the block's RMS cell sum.
        dihedral: key by the smallest transformed key.

    Returns:
        ``(keys, orient)``: uint64 (N,) keys and int8 (N,) the index into :data:`DIHEDRAL` of
        the transform that gave each key (all 0 without ``dihedral``).
    """
    H, W = r.shape
    # 2x2 cell sums (exact in float32 for residuals of integer stored values)
    cs = np.empty((H - 1, W - 1), np.float32)
    for y0 in range(0, H - 1, _STRIP):
        y1 = min(y0 + _STRIP, H - 1)
        cs[y0:y1] = _cell_sums(r[y0 : y1 + 1].astype(np.float64))
    g = block // 2
    n = ys.size
    mult = _hash_multipliers(g * g)
    # hash of transform k: sum over cells m of q[T_k cell order][m] * mult[m], i.e. the
    # source cell s gets the multiplier of its position in the transformed block
    grid = np.arange(g * g).reshape(g, g)
    n_t = 8 if dihedral else 1
    hmat = np.zeros((g * g, n_t), np.uint64)
    for k in range(n_t):
        for m_i, src in enumerate(np.ascontiguousarray(dihedral_apply(grid, k)).ravel()):
            hmat[src, k] = mult[m_i]
    keys = np.zeros(n, np.uint64)
    orient = np.zeros(n, np.int8)
    for c0 in range(0, n, _CHUNK):
        c1 = min(c0 + _CHUNK, n)
        yc, xc = ys[c0:c1], xs[c0:c1]
        cells = np.stack([cs[yc + 2 * i, xc + 2 * j] for i in range(g) for j in range(g)], 1)
        rms = np.sqrt(np.mean(cells * cells, axis=1, keepdims=True, dtype=np.float32))
        q = np.clip(np.rint(cells / (quant * np.maximum(rms, np.float32(1e-9)))), -127, 127)
        hk = (q.astype(np.int64) + 128).astype(np.uint64) @ hmat  # wraps modulo 2**64
        if n_t == 1:
            keys[c0:c1] = hk[:, 0]
        else:
            orient[c0:c1] = np.argmin(hk, axis=1)
            keys[c0:c1] = hk[np.arange(c1 - c0), orient[c0:c1]]
    return keys, orient


def _candidate_pairs(keys: np.ndarray, ys: np.ndarray, xs: np.ndarray, *, window: int,
                     min_shift: int, max_pairs: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Pairs of blocks with equal keys up to ``window`` apart in key order.

    An image made of repeated content (tiled, mirrored, synthetic) has millions of candidate
    pairs; then an evenly spread sample of at most ``max_pairs`` is kept (each repeated shift
    keeps plenty of support) so that memory and time stay bounded.

    Args:
        keys: uint64 (N,) block keys; sorted in place (the caller gives them up).
        ys, xs: int32 (N,) top-left corners of the blocks.
        window, min_shift, max_pairs: as in :func:`match_blocks`.

    Returns:
        ``(i1, i2, stride)``: int32 (K,) block indices of each unique pair, oriented so that
        the shift ``b - a`` has ``dy > 0`` or ``dy == 0 and dx > 0``, and the sampling stride
        (1 = every candidate kept).
    """
    order = np.argsort(keys, kind="stable").astype(np.int32)
    keys.sort()
    sw = keys  # sorted in place: sw[i] = keys[order[i]]
    counts = [int(np.count_nonzero(sw[:-k] == sw[k:])) for k in range(1, window + 1)]
    stride = max(1, -(-sum(counts) // max_pairs))
    pa, pb = [], []
    for k in range(1, window + 1):
        if not counts[k - 1]:
            continue
        idx = np.flatnonzero(sw[:-k] == sw[k:])[::stride]
        i1, i2 = order[idx], order[idx + k]
        dy = ys[i2] - ys[i1]
        dx = xs[i2] - xs[i1]
        far = dy.astype(np.int64) ** 2 + dx.astype(np.int64) ** 2 >= min_shift * min_shift
        pa.append(i1[far])
        pb.append(i2[far])
    del order, sw
    none = np.zeros(0, np.int32)
    if not pa:
        return none, none, stride
    i1 = np.concatenate(pa)
    i2 = np.concatenate(pb)
    if i1.size == 0:
        return none, none, stride
    # canonical orientation: shift b - a with dy > 0, or dy == 0 and dx > 0
    dy = ys[i2] - ys[i1]
    dx = xs[i2] - xs[i1]
    flip = (dy < 0) | ((dy == 0) & (dx < 0))
    i1, i2 = np.where(flip, i2, i1), np.where(flip, i1, i2)
    pairs = np.unique(np.stack([i1, i2], 1), axis=0)
    return pairs[:, 0], pairs[:, 1], stride


def _pair_distances(r: np.ndarray, ys: np.ndarray, xs: np.ndarray, i1: np.ndarray,
                    i2: np.ndarray, orient: np.ndarray, block: int, dihedral: bool
                    ) -> np.ndarray:
    """Normalised distance ``|a - b|^2 / (|a|^2 + |b|^2)`` of each pair's full residual blocks.

    Both blocks are first brought to their canonical orientation (``orient``) when
    ``dihedral``; 0 means a copy, about 1 unrelated noise. Computed in chunks of 4096 pairs.

    Returns:
        float32 (K,) distances.
    """
    oy, ox = np.mgrid[0:block, 0:block]
    dist = np.empty(i1.size, np.float32)
    chunk = 4096
    for s in range(0, i1.size, chunk):
        a_idx, b_idx = i1[s : s + chunk], i2[s : s + chunk]
        ba = r[ys[a_idx, None, None] + oy, xs[a_idx, None, None] + ox].astype(np.float64)
        bb = r[ys[b_idx, None, None] + oy, xs[b_idx, None, None] + ox].astype(np.float64)
        if dihedral:
            for blocks, idx in ((ba, a_idx), (bb, b_idx)):
                ok_k = orient[idx]
                for k in np.unique(ok_k[ok_k > 0]):
                    sel = ok_k == k
                    blocks[sel] = dihedral_apply(blocks[sel], int(k))
        num = ((ba - bb) ** 2).sum(axis=(1, 2))
        den = (ba * ba).sum(axis=(1, 2)) + (bb * bb).sum(axis=(1, 2)) + 1e-12
        dist[s : s + chunk] = num / den
    return dist


def match_blocks(
    residual: np.ndarray,
    *,
    block: int = 8,
    min_shift: int = 16,
    window: int = 4,
    quant: float = 0.75,
    energy_frac: float = 0.002,
    max_dist: float = 0.1,
    max_zero_frac: float = 0.25,
    energy_max: float = 8.0,
    min_density: float = 0.35,
    min_var_frac: float = 0.5,
    valid: np.ndarray | None = None,
    dihedral: bool = False,
    max_pairs: int = 1_000_000,
) -> BlockMatches:
    """Find pairs of (near-)identical residual blocks at least ``min_shift`` pixels apart.

    Args:
        residual: (H, W) real array, a high-pass noise residual of the image.
        block: even block side in pixels (>= 4).
        min_shift: minimum Euclidean length of the shift between paired blocks.
        window: how many following blocks in sorted key order each block is compared with.
        quant: key quantisation step in units of the block's RMS 2x2 cell sum (larger =
            more tolerant to small differences, more candidate pairs).
        energy_frac: blocks whose residual energy is below this fraction of the median block
            energy are ignored (only near-silent blocks: keys are scaled per block).
        max_dist: pairs with a normalised distance above this are rejected.
        energy_max: blocks whose residual energy exceeds this multiple of the median are
            ignored (strong edges: shifted along a straight edge, edge-dominated residual
            blocks look alike).
        min_density: blocks with ``(sum|r|)^2 / (n * sum r^2)`` below this are ignored
            (about 0.64 for Gaussian noise; small for edge- or line-dominated blocks).
        max_zero_frac: blocks with more than this fraction of exactly-zero residual values
            (flat, clipped or synthetic graphics such as burned-in text) are ignored.
        min_var_frac: blocks whose residual variance is below this fraction of its mean
            square (a near-constant offset, as on smooth intensity ramps) are ignored.
        valid: optional bool (H, W); blocks containing any False pixel are ignored.
        dihedral: also match blocks that are rotated by 90/180/270 degrees or mirrored
            copies of each other (an exact pixel rotation keeps the noise; the symmetric
            residual kernel rotates with it). Each block is keyed by the smallest of its 8
            transformed keys; ``BlockMatches.transform`` says which transform maps a pair.
        max_pairs: at most this many candidate pairs are verified (an evenly spread sample
            when there are more, as in tiled or mirrored images; a warning is logged).

    Returns:
        :class:`BlockMatches`.

    Raises:
        InvalidArrayError: bad residual.
        ConfigError: bad parameters.
    """
    r = as_image(residual, "residual", min_size=block + 1,
                 dtype=np.float32 if np.asarray(residual).dtype == np.float32 else np.float64)
    if block < 4 or block % 2:
        raise ConfigError(f"block must be an even number >= 4, got {block}")
    if window < 1:
        raise ConfigError("window must be >= 1")
    v = None
    if valid is not None:
        v = np.asarray(valid, dtype=bool)
        if v.shape != r.shape:
            raise ConfigError(f"valid mask shape {v.shape} differs from residual {r.shape}")
    ok = _usable_blocks(r, v, block, max_zero_frac=max_zero_frac, min_density=min_density,
                        min_var_frac=min_var_frac, energy_frac=energy_frac,
                        energy_max=energy_max)
    if ok is None:
        return BlockMatches(np.zeros((0, 2), np.int32), np.zeros((0, 2), np.int32),
                            np.zeros(0, np.float32), block, 0)
    wb = ok.shape[1]
    flat = np.flatnonzero(ok)
    del ok
    ys = (flat // wb).astype(np.int32)
    xs = (flat % wb).astype(np.int32)
    del flat
    n = ys.size
    empty = BlockMatches(np.zeros((0, 2), np.int32), np.zeros((0, 2), np.int32),
                         np.zeros(0, np.float32), block, int(n))
    if n < 2:
        return empty
    keys, orient = _block_keys(r, ys, xs, block, quant, dihedral)
    i1, i2, stride = _candidate_pairs(keys, ys, xs, window=window, min_shift=min_shift,
                                      max_pairs=max_pairs)
    del keys
    if i1.size == 0:
        return empty
    dist = _pair_distances(r, ys, xs, i1, i2, orient, block, dihedral)
    keep = dist <= max_dist
    i1, i2 = i1[keep], i2[keep]
    a = np.stack([ys[i1], xs[i1]], 1).astype(np.int32)
    b = np.stack([ys[i2], xs[i2]], 1).astype(np.int32)
    transform = np.zeros(i1.size, np.int8)
    if dihedral and i1.size:
        # T_kb(B_b) == T_ka(B_a)  =>  B_b = T_kb^-1 T_ka (B_a), matrix M_kb^-1 M_ka
        ma = _DIHEDRAL_M[orient[i1].astype(np.int64)]
        mb_inv = np.transpose(_DIHEDRAL_M[orient[i2].astype(np.int64)], (0, 2, 1))
        transform = _dihedral_index(np.einsum("kij,kjl->kil", mb_inv, ma))
    return BlockMatches(a, b, dist[keep], block, int(n), transform, stride)


def shift_consensus(
    matches: BlockMatches, min_count: int = 40, neighbourhood: int = 1,
    vectors: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Shift vectors supported by many block pairs.

    A shift's support is the number of pairs with that exact shift plus those within
    ``neighbourhood`` pixels of it (tolerates 1-px jitter); shifts whose support is at least
    ``min_count`` and that are the local maximum of support are kept.

    Args:
        matches: output of :func:`match_blocks`.
        min_count: minimum support.
        neighbourhood: Chebyshev radius for pooling nearby shifts (0 = exact only).
        vectors: int (K, 2) to pool instead of the shifts (e.g. ``matches.offsets()`` of
            pairs that share one rotation or mirroring).

    Returns:
        ``(shifts, keep)``: int32 (S, 3) rows ``(dy, dx, support)`` sorted by support
        (descending), and bool (K,) marking the pairs whose shift is within
        ``neighbourhood`` of a kept shift.
    """
    s = matches.shifts if vectors is None else np.asarray(vectors)
    k = s.shape[0]
    if k == 0:
        return np.zeros((0, 3), np.int32), np.zeros(0, bool)
    uniq, inv, cnt = np.unique(s, axis=0, return_inverse=True, return_counts=True)
    inv = inv.ravel()
    lookup = {(int(u[0]), int(u[1])): int(c) for u, c in zip(uniq, cnt)}
    rad = range(-neighbourhood, neighbourhood + 1)
    support = np.array([
        sum(lookup.get((int(u[0]) + a, int(u[1]) + b), 0) for a in rad for b in rad)
        for u in uniq
    ])
    is_max = np.array([
        all(support[i] >= sum(lookup.get((int(u[0]) + a + c, int(u[1]) + b + d), 0)
                              for c in rad for d in rad)
            for a in rad for b in rad)
        for i, u in enumerate(uniq)
    ]) if neighbourhood > 0 else np.ones(uniq.shape[0], bool)
    good = (support >= min_count) & is_max
    kept = uniq[good]
    order = np.argsort(-support[good], kind="stable")
    shifts = np.concatenate([kept[order], support[good][order, None]], 1).astype(np.int32)
    near = np.zeros(uniq.shape[0], bool)
    for u in kept:
        near |= np.max(np.abs(uniq - u), axis=1) <= neighbourhood
    return shifts, near[inv]


def coherent_support(tops: np.ndarray, cell: int = 8) -> int:
    """Size of the largest spatially connected group of matched blocks.

    Block top-left corners are binned on a ``cell x cell`` grid; occupied cells are
    connected with 8-connectivity; the result is the number of blocks in the largest
    connected group. Overlapping blocks of one copied region are 1 px apart and form one
    group; independent chance matches fall into groups of a few blocks.

    Args:
        tops: int (K, 2) block top-left corners ``(y, x)`` (one side of the pairs of a shift).
        cell: grid step in pixels (gaps up to about ``cell`` px are bridged).

    Returns:
        int in [0, K].

    Raises:
        ConfigError: ``cell < 1``.
    """
    if cell < 1:
        raise ConfigError(f"cell must be >= 1, got {cell}")
    t = np.asarray(tops, dtype=np.int64).reshape(-1, 2)
    if t.shape[0] == 0:
        return 0
    g = t // cell
    g -= g.min(axis=0)
    shape = tuple(int(v) + 1 for v in g.max(axis=0))
    occ = np.zeros(shape, bool)
    occ[g[:, 0], g[:, 1]] = True
    lbl, n = ndimage.label(occ, structure=np.ones((3, 3), bool))
    if n <= 1:
        return int(t.shape[0])
    return int(np.bincount(lbl[g[:, 0], g[:, 1]], minlength=n + 1)[1:].max())


def match_density(
    shape: tuple[int, int], tops: np.ndarray, block: int
) -> np.ndarray:
    """Share of the ``block x block`` blocks covering each pixel whose top-left is in ``tops``.

    Args:
        shape: ``(H, W)`` of the image.
        tops: int (K, 2) block top-left corners ``(y, x)`` (duplicates count once).
        block: block side.

    Returns:
        float32 (H, W) in [0, 1].
    """
    H, W = shape
    occ = np.zeros((H, W), np.uint8)
    if len(tops):
        t = np.asarray(tops, dtype=np.int64)
        occ[t[:, 0], t[:, 1]] = 1
    # cover[y, x] = sum of occ over [y-block+1, y] x [x-block+1, x]; exact integer box sums,
    # strip by strip (a strip of output rows needs block - 1 rows above it)
    out = np.empty((H, W), np.float32)
    for y0 in range(0, H, _STRIP):
        y1 = min(y0 + _STRIP, H)
        a0 = max(y0 - block + 1, 0)
        c = np.zeros((y1 - a0 + 1, W + 1), np.int32)
        c[1:, 1:] = occ[a0:y1]
        np.cumsum(c, axis=0, out=c)
        np.cumsum(c, axis=1, out=c)
        yy1 = np.arange(y0 + 1, y1 + 1) - a0
        yy0 = np.clip(np.arange(y0 + 1, y1 + 1) - block, a0, None) - a0
        x1 = np.arange(1, W + 1)
        x0 = np.clip(x1 - block, 0, None)
        cover = (c[yy1[:, None], x1[None, :]] - c[yy0[:, None], x1[None, :]]
                 - c[yy1[:, None], x0[None, :]] + c[yy0[:, None], x0[None, :]])
        out[y0:y1] = np.clip(cover / float(block * block), 0.0, 1.0)
    return out


def shift_correlation(residual: np.ndarray, shift: tuple[int, int], window: int = 7,
                      region: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Local normalised correlation between the residual and itself displaced by ``shift``.

    ``out[p] = sum_w r(q) r(q - d) / sqrt(sum_w r(q)^2 * sum_w r(q - d)^2)`` over a
    ``window x window`` neighbourhood ``w`` of ``p``, for ``d = shift = (dy, dx)``. Inside a
    region copied from ``p - d`` to ``p`` it is 1; over a feathered edge it falls with the
    blend weight; on unrelated noise it is ~0 (std about ``1 / window``). Defined at the
    *target* side ``p``; pixels whose partner ``p - d`` is outside the image get 0.

    Args:
        residual: (H, W) real array, a high-pass noise residual.
        shift: ``(dy, dx)`` displacement from source to target.
        window: odd neighbourhood side.
        region: optional ``(y0, y1, x0, x1)`` target-side box; outside it the output is 0
            (saves time on large images).

    Returns:
        float32 (H, W), values in [-1, 1].
    """
    r = as_image(residual, "residual",
                 dtype=np.float32 if np.asarray(residual).dtype == np.float32 else np.float64)
    H, W = r.shape
    dy, dx = int(shift[0]), int(shift[1])
    out = np.zeros((H, W), np.float32)
    y0, y1, x0, x1 = (0, H, 0, W) if region is None else region
    # target rows/cols whose partner is inside the image
    y0, y1 = max(y0, dy, 0), min(y1, H + dy, H)
    x0, x1 = max(x0, dx, 0), min(x1, W + dx, W)
    if y1 - y0 < 1 or x1 - x0 < 1:
        return out
    pad = window // 2
    n, w = y1 - y0, x1 - x0
    # strips of target rows, float64 inside a strip; the window sums see zeros outside the box
    # (as if the box were zero-padded), whichever strip a row falls in
    for s0 in range(0, n, _STRIP):
        s1 = min(s0 + _STRIP, n)
        a, b = max(s0 - pad, 0), min(s1 + pad, n)
        t = np.zeros((s1 - s0 + 2 * pad, w + 2 * pad))
        src = np.zeros_like(t)
        ra, rb = a - (s0 - pad), b - (s0 - pad)
        t[ra:rb, pad : pad + w] = r[y0 + a : y0 + b, x0:x1]
        src[ra:rb, pad : pad + w] = r[y0 + a - dy : y0 + b - dy, x0 - dx : x1 - dx]
        num = _box_sums_topleft(t * src, window)
        den = np.sqrt(_box_sums_topleft(t * t, window) * _box_sums_topleft(src * src, window))
        out[y0 + s0 : y0 + s1, x0:x1] = np.where(den > 0, num / np.where(den > 0, den, 1.0),
                                                 0.0)
    return out
