"""Rendering palettes and histograms as images (previews, reports, alignment conditions)."""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import check_colors, check_weights
from .errors import InputShapeError
from .histogram import NUM_BINS, bin_centers


def stripe_widths(weights: Tensor, width: int) -> Tensor:
    """Integer stripe widths summing to ``width``, proportional to ``weights`` (largest remainder)."""
    exact = weights.double() * width
    base = torch.floor(exact).long()
    short = width - int(base.sum())
    if short > 0:
        base[torch.argsort(exact - base, descending=True)[:short]] += 1
    return base


def palette_stripes(colors: Tensor, weights: Tensor | None = None, height: int = 64, width: int = 512) -> Tensor:
    """An ``[height, width, 3]`` image of vertical stripes whose widths follow the weights (swatch preview)."""
    if height < 1 or width < 1:
        raise InputShapeError(f"height, width: {height}x{width}; both must be >= 1")
    c, _ = check_colors(colors)
    w = check_weights(weights, c)[0]
    idx = torch.repeat_interleave(torch.arange(c.shape[1], device=c.device), stripe_widths(w, width))
    return c[0][idx].unsqueeze(0).expand(height, width, 3).contiguous()


def histogram_bars(hist: Tensor, top: int = 32, height: int = 64, width: int = 512) -> Tensor:
    """The ``top`` heaviest bins of a 4080-bin histogram as stripes of their bin-centre colours."""
    if hist.ndim != 1 or hist.shape[0] != NUM_BINS:
        raise InputShapeError(f"hist: shape {tuple(hist.shape)}; expected [{NUM_BINS}]")
    if not bool(hist.sum() > 0):
        return torch.full((height, width, 3), 0.5)
    mass, bins = torch.topk(hist.float(), min(top, int((hist > 0).sum())))
    return palette_stripes(bin_centers(device=hist.device)[bins], mass, height, width)
