"""Clipped-CIEDE2000 bin similarity and Quadratic-Chi for numpy arrays and tensors alike (docs/design.md §4).

The pair builder and the QC formula here serve both :func:`.distance.quadratic_chi` (torch: the full
4080 x 4080 matrix ``A``, built once and cached) and :func:`occupied_quadratic_chi` (numpy, no torch):
QC reads ``A`` only between bins that either histogram occupies (``Z_j`` and ``D_j`` matter only
there), so that one builds just that submatrix, in float64, when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ._backend import namespace
from ._checks import as_numpy, as_tensor
from .bins import NUM_BINS, bin_lab_f64
from .color import ciede2000
from .errors import InputShapeError

if TYPE_CHECKING:
    from typing import TypeVar

    from torch import Tensor

    Array = TypeVar("Array", Tensor, np.ndarray)

# ΔE00 >= |ΔL*| / S_L and S_L <= 1.75 on [0, 100], so pairs further apart in L* than 1.75 T are
# never similar: the build only compares colours inside that lightness window.
_SL_MAX = 1.75


def check_threshold(threshold: float) -> None:
    """Raise InputShapeError unless the clipping distance T is positive (docs/design.md §4 bin similarity)."""
    if not threshold > 0:
        raise InputShapeError(f"threshold: {threshold} must be > 0 (a CIEDE2000 distance, 20 in the paper)")


def check_m(m: float) -> None:
    """Raise InputShapeError unless QC's normalisation exponent m is in [0, 1) (Pele & Werman 2010, Eq. 2)."""
    if not 0 <= m < 1:
        raise InputShapeError(f"m: {m} must be in [0, 1) (0.5 in the paper)")


def clipped_pairs(lab: Array, threshold: float, dtype=None, block: int = 256) -> tuple[Array, Array, Array]:
    """Pairs ``(i, j)`` of Lab colours ``[n, 3]`` with ΔE00 < T and ``1 - ΔE00 / T`` (float64) (docs/design.md §4).

    The clipped-CIEDE2000 similarity of Pele & Werman (2010) in coordinate form; ΔE00 is computed in
    ``dtype`` (default: ``lab``'s), ``block`` colours (sorted by L*) at a time against their L* window.
    """
    xp = namespace(lab)
    order = xp.argsort(lab[:, 0])
    lab_sorted = lab[order] if dtype is None else xp.astype(lab[order], dtype)
    lightness = xp.contiguous(lab_sorted[:, 0])
    window = _SL_MAX * threshold
    rows, cols, values = [], [], []
    for start in range(0, lab.shape[0], block):
        rows_lab = lab_sorted[start : start + block]
        lo = xp.searchsorted(lightness, rows_lab[0, 0] - window)
        hi = xp.searchsorted(lightness, rows_lab[-1, 0] + window, right=True)
        de = ciede2000(rows_lab[:, None, :], lab_sorted[None, lo:hi, :])
        r, c = xp.nonzero(de < threshold)
        rows.append(order[r + start])
        cols.append(order[c + lo])
        values.append(1.0 - xp.astype(de[r, c], xp.float64) / threshold)
    i, j, val = xp.cat(rows), xp.cat(cols), xp.cat(values)
    # SIMD and scalar transcendental kernels round differently, so ΔE(a, b) and ΔE(b, a) can differ in
    # the last bit: keep the upper triangle and mirror it, which makes A exactly symmetric.
    upper = i <= j
    i, j, val = i[upper], j[upper], val[upper]
    off = i < j
    return xp.cat((i, j[off])), xp.cat((j, i[off])), xp.cat((val, val[off]))


def as_histograms(h: Tensor | np.ndarray, name: str, *, numpy: bool = False) -> Array:
    """``h`` as float ``[4080]`` or ``[B, 4080]`` histograms (a tensor, or numpy with ``numpy=True``), checked."""
    h = as_numpy(h, name) if numpy else as_tensor(h, name)
    xp = namespace(h)
    if h.ndim not in (1, 2) or h.shape[-1] != NUM_BINS:
        raise InputShapeError(f"{name}: shape {tuple(h.shape)}; expected [{NUM_BINS}] or [B, {NUM_BINS}] histograms")
    if not xp.is_floating(h):
        h = xp.astype(h, xp.float64)
    if not bool(xp.isfinite(h).all()) or bool((h < 0).any()):
        raise InputShapeError(f"{name}: histogram entries must be finite and >= 0")
    return h


def l1_normalise(h: Array) -> Array:
    """Rows of ``h`` divided by their sums (all-zero rows stay zero), as QC's P and Q (docs/design.md §4)."""
    total = h.sum(-1)[..., None]
    return h / namespace(h).where(total > 0, total, 1.0)


def qc_kernel(p: Array, q: Array, a, m: float) -> Array:
    """QC_m^A(P, Q) of L1-normalised rows ``p``, ``q`` ``[B, n]``, symmetric ``a`` ``[n, n]`` (Pele & Werman, Eq. 2).

    ``Z = (P + Q) A``, ``D_i = (P_i - Q_i) / Z_i^m`` with 0/0 = 0, ``QC = sqrt(max(D^T A D, 0))`` (docs/design.md §4);
    ``a`` is anything with ``a @ x`` (dense or sparse). Returns ``[B]``.
    """
    xp = namespace(p)
    # A is symmetric, so Z = (P + Q) A is computed column-wise as A (P + Q)^T: one product for the batch.
    z = (a @ (p + q).T).T
    d = xp.where(z > 0, (p - q) / xp.clip(z, xp.finfo(z.dtype).tiny, None) ** m, 0.0)
    quad = (d * (a @ d.T).T).sum(-1)
    return xp.sqrt(xp.clip(quad, 0.0, None))


def occupied_quadratic_chi(
    p: np.ndarray, q: np.ndarray, m: float = 0.5, threshold: float = 20.0
) -> np.floating | np.ndarray:
    """Quadratic-Chi QC_m^A(P, Q) in float64 with numpy only, ``A`` built over the occupied bins (docs/design.md §4).

    Same arguments and value as :func:`.distance.quadratic_chi` (``p``, ``q``: ``[4080]`` or ``[B, 4080]``,
    broadcast, L1-normalised here), without torch and without the full matrix: ``A`` is built for the
    union of the bins the histograms occupy, which costs far less than the full build for one pair.
    """
    check_m(m)
    check_threshold(threshold)
    p, q = as_histograms(p, "p", numpy=True), as_histograms(q, "q", numpy=True)
    batched = p.ndim == 2 or q.ndim == 2
    p = l1_normalise(p.astype(np.float64)).reshape(-1, NUM_BINS)
    q = l1_normalise(q.astype(np.float64)).reshape(-1, NUM_BINS)
    p, q = np.broadcast_arrays(p, q)
    occupied = np.flatnonzero((p + q).any(axis=0))
    a = np.zeros((occupied.size, occupied.size))
    if occupied.size:
        # Small blocks keep each block's L* window tight: about 2x fewer ΔE00 than 256 on a photo's bins.
        i, j, val = clipped_pairs(bin_lab_f64()[occupied], float(threshold), block=64)
        a[i, j] = val
    out = qc_kernel(p[:, occupied], q[:, occupied], a, m)
    return out if batched else out[0]
