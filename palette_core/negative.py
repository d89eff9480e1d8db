"""An automatic negative palette: the colours of an image that lie far from a palette (docs/training-free.md).

The Palette-Adapter paper leaves choosing a negative palette to the user and names deriving it as future
work (§5.1). Here it comes from a first pass (or a reference): the pixels whose CIEDE2000 to every palette
colour exceeds a threshold are clustered, weighted by their area, into a few colours with weights that
Negative Palette (the adapter) and Palette Guidance's repulsion take.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ._checks import check_image
from .adherence import DEFAULT_THRESHOLD, check_threshold, nearest_delta_e
from .errors import InputShapeError
from .extract import extract_palette
from .masks import check_mask, fit_mask
from .palette import Palette

DEFAULT_COUNT = 3
MAX_COUNT = 16

__all__ = ["DEFAULT_COUNT", "MAX_COUNT", "auto_negative", "off_palette_weights"]


def off_palette_weights(
    image: Tensor | np.ndarray, palette: Palette, threshold: float = DEFAULT_THRESHOLD, mask: Tensor | None = None
) -> Tensor:
    """Per-pixel weight ``[H, W]`` of one image's off-palette pixels: 1 beyond ``threshold`` ΔE00, times ``mask``."""
    x, batched = check_image(image)
    if batched and x.shape[0] != 1:
        raise InputShapeError(f"image: batch of {x.shape[0]}; give one image (a first pass or a reference)")
    t = check_threshold(threshold)
    de = nearest_delta_e(x.reshape(1, *x.shape[-3:]), palette.colors.to(x.device), palette.weights.to(x.device))[0]
    far = (de > t).to(torch.float32)
    if mask is not None:
        far = far * fit_mask(check_mask(mask), far.shape[0], far.shape[1], 1)[0].to(far.device)
    return far


def auto_negative(
    image: Tensor | np.ndarray,
    palette: Palette,
    threshold: float = DEFAULT_THRESHOLD,
    count: int = DEFAULT_COUNT,
    mask: Tensor | None = None,
    seed: int = 0,
) -> tuple[Palette | None, float]:
    """The ``count``-colour palette of the image's off-palette pixels and their share of the image (paper §5.1).

    Pixels farther than ``threshold`` (CIEDE2000) from every colour of ``palette`` are clustered by the pack's
    k-means extraction weighted by area (docs/extraction.md), so each negative colour's weight is the area it
    stands for. ``mask`` restricts the search to a region. Returns ``(None, 0.0)`` when no pixel is that far.
    """
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
        raise InputShapeError(f"count: {count!r}; give a whole number of colours from 1 to {MAX_COUNT}")
    far = off_palette_weights(image, palette, threshold, mask)
    share = float(far.mean())
    if share == 0.0:
        return None, 0.0
    x, _ = check_image(image)
    single = x.reshape(*x.shape[-3:])
    return extract_palette(single, size=count, method="kmeans", seed=seed, mask=far), share
