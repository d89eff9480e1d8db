"""Histogram and palette distances: clipped-CIEDE2000 bin similarity, Quadratic-Chi, and the paper's EMD.

``bin_similarity`` is the matrix ``A[i, j] = max(0, 1 - min(dE00(c_i, c_j), T) / T)`` over the 4080 bin
centres (Pele & Werman's "clipped" ground distance, docs/design.md §4). It is built once per process and
cached; about 15% of its entries are non-zero at T = 20, so it is kept as a sparse CSR tensor on the
CPU and as a dense tensor (66 MB) on an accelerator, where a dense product is faster. The pair builder
and the QC formula are shared with the numpy-only :func:`.similarity.occupied_quadratic_chi`.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from ._checks import check_colors, check_image, check_weights
from .color import srgb_to_lab
from .errors import InputShapeError
from .histogram import NUM_BINS, bin_centers
from .similarity import as_histograms, check_m, check_threshold, clipped_pairs, l1_normalise, qc_kernel

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=4)
def _clipped_similarity_coo(threshold: float) -> tuple[Tensor, Tensor]:
    # float32 ΔE is ample here (error ~1e-4 on values clipped at T) and about 1.7x faster than float64.
    rows, cols, values = clipped_pairs(srgb_to_lab(bin_centers(torch.float64)), threshold, dtype=torch.float32)
    return torch.stack((rows, cols)), values


@functools.lru_cache(maxsize=8)
def _similarity_cached(threshold: float, gamma: float, dtype: torch.dtype, device: str, dense: bool) -> Tensor:
    idx, val = _clipped_similarity_coo(threshold)
    if gamma != 1.0:
        val = val**gamma
    with warnings.catch_warnings():  # torch flags sparse CSR as beta on every construction
        warnings.simplefilter("ignore", UserWarning)
        a = torch.sparse_coo_tensor(idx, val.to(dtype), (NUM_BINS, NUM_BINS)).coalesce()
        if dense:
            return a.to_dense().to(device)
        csr = a.to_sparse_csr()
        # int32 indices halve the bytes a product reads: about 2x faster on the CPU.
        return torch.sparse_csr_tensor(csr.crow_indices().int(), csr.col_indices().int(), csr.values(), csr.shape).to(
            device
        )


def bin_similarity(
    threshold: float = 20.0,
    gamma: float = 1.0,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
    dense: bool | None = None,
) -> Tensor:
    """Clipped-CIEDE2000 bin similarity ``A`` (Pele & Werman 2010; docs/design.md §4), ``[4080, 4080]``, cached.

    Sparse CSR by default on the CPU, dense on other devices (``dense`` overrides). ``gamma`` sharpens
    the similarity as ``A ** gamma``.
    """
    check_threshold(threshold)
    if not gamma > 0:
        raise InputShapeError(f"gamma: {gamma} must be > 0")
    device = torch.device(device)
    if dense is None:
        dense = device.type != "cpu"
    key = str(device)
    return _similarity_cached(float(threshold), float(gamma), dtype, key, bool(dense))


def quadratic_chi(
    p: Tensor | np.ndarray,
    q: Tensor | np.ndarray,
    m: float = 0.5,
    similarity: Tensor | None = None,
) -> Tensor:
    """Quadratic-Chi histogram distance QC_m^A(P, Q) (Pele & Werman, ECCV 2010, Eq. 2; docs/design.md §4).

    ``p`` and ``q`` are ``[4080]`` or ``[B, 4080]`` (broadcast against each other) and are L1-normalised
    first; ``similarity`` defaults to :func:`bin_similarity` on their device. Returns a scalar or ``[B]``.
    """
    check_m(m)
    p, q = as_histograms(p, "p"), as_histograms(q, "q")
    batched = p.ndim == 2 or q.ndim == 2
    dtype = torch.promote_types(torch.promote_types(p.dtype, q.dtype), torch.float32)
    p = l1_normalise(p.to(dtype)).reshape(-1, NUM_BINS)
    q = l1_normalise(q.to(dtype)).reshape(-1, NUM_BINS)
    p, q = torch.broadcast_tensors(p, q)
    if p.device != q.device:
        raise InputShapeError(f"p and q are on different devices ({p.device}, {q.device})")
    a = similarity if similarity is not None else bin_similarity(dtype=dtype, device=p.device)
    out = qc_kernel(p, q, a.to(dtype=dtype), m)
    return out if batched else out[0]


def _emd_exact(samples: np.ndarray, colors: np.ndarray, weights: np.ndarray) -> float:
    try:
        import ot
    except ImportError as e:  # POT is in requirements.txt; say so rather than fail obscurely
        raise ImportError("palette_emd needs the POT package (pip install pot), listed in requirements.txt") from e
    # Identical sampled pixels merge into one source of summed mass: same optimum, smaller problem.
    uniq, counts = np.unique(samples, axis=0, return_counts=True)
    a = counts.astype(np.float64) / counts.sum()
    cost = np.sqrt(((uniq[:, None, :] - colors[None, :, :]) ** 2).sum(-1))
    b = weights / weights.sum()
    return float(ot.emd2(a, b, cost, numItermax=10_000_000))


def sampled_emd(
    image: Tensor | np.ndarray,
    colors: Tensor | np.ndarray,
    weights: Tensor | np.ndarray | None,
    samples: int,
    seed: int,
    space: Callable[[Tensor], Tensor],
) -> Tensor:
    """Exact EMD (W1) per image between ``samples`` seeded pixel draws and a weighted palette (paper Table 1).

    Each image's pixels are drawn uniformly with replacement by a generator seeded with ``seed``, so a
    score does not depend on the batch; ``space`` maps ``[M, 3]`` sRGB colours to the float64 space of the
    Euclidean ground distance. Arguments as :func:`palette_emd`; returns a scalar or ``[B]`` (float64).
    """
    if samples < 1:
        raise InputShapeError(f"samples: {samples} must be >= 1 (1024 in the paper)")
    x, batched = check_image(image)
    colors, _ = check_colors(colors)
    weights = check_weights(weights, colors)
    b = x.shape[0]
    if colors.shape[0] not in (1, b):
        raise InputShapeError(f"colors: {colors.shape[0]} palettes for {b} images; give one palette or one per image")
    pixels = x.reshape(b, -1, 3)
    out = torch.empty(b, dtype=torch.float64)
    for i in range(b):
        gen = torch.Generator().manual_seed(seed)
        idx = torch.randint(0, pixels.shape[1], (samples,), generator=gen).to(pixels.device)
        j = i if colors.shape[0] == b else 0
        picked, target = space(pixels[i, idx]).cpu().numpy(), space(colors[j]).cpu().numpy()
        out[i] = _emd_exact(picked, target, weights[j].double().cpu().numpy())
    return out if batched else out[0]


def palette_emd(
    image: Tensor | np.ndarray,
    colors: Tensor | np.ndarray,
    weights: Tensor | np.ndarray | None = None,
    samples: int = 1024,
    seed: int = 0,
) -> Tensor:
    """Palette adherence: exact EMD (W1, RGB ground distance) between sampled pixels and the palette (paper Table 1).

    ``samples`` pixels are drawn uniformly with replacement (mass ``1/samples`` each) with a generator
    seeded by ``seed`` for every image, so a score does not depend on the batch it is in. ``colors`` is
    ``[N, 3]`` (shared) or ``[B, N, 3]`` (one palette per image). Returns a scalar or ``[B]`` (float64).
    """
    return sampled_emd(image, colors, weights, samples, seed, Tensor.double)
