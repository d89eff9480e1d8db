"""Region masks: one rule for every palette node that takes a ``mask`` (docs/regions.md).

A mask is ComfyUI's ``MASK``: ``[H, W]`` or ``[B, H, W]`` floats, 1 = inside the region, soft values
allowed. Every node brings it to its own grid (an image, a latent, an attention layer's token grid)
with :func:`fit_mask`: area-averaged (each cell gets the mean of the mask pixels it covers, so thin
strokes and soft edges keep their weight instead of being sampled away), one mask per batch item or
one for all, and the same aspect ratio as the grid or an error (never a silent stretch).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import InputShapeError

# Masks drawn for an image and brought to a latent or token grid differ in aspect by the grid's rounding:
# allowed up to one cell of the grid (plus 1 % for masks drawn on a resized copy).
_ASPECT_SLACK = 0.01


def check_mask(mask: Tensor, name: str = "mask") -> Tensor:
    """Validate a mask (docs/regions.md): ``[H, W]`` or ``[B, H, W]`` finite floats -> ``[B, H, W]`` in [0, 1]."""
    if not isinstance(mask, Tensor):
        raise InputShapeError(f"{name}: expected a MASK tensor, got {type(mask).__name__}")
    m = mask.unsqueeze(0) if mask.ndim == 2 else mask
    if m.ndim == 4 and m.shape[1] == 1:
        m = m[:, 0]
    if m.ndim != 3:
        raise InputShapeError(f"{name}: shape {tuple(mask.shape)}; expected [H, W] or [B, H, W]")
    if m.numel() == 0:
        raise InputShapeError(f"{name}: shape {tuple(mask.shape)} is empty; connect a mask with pixels")
    m = m.float()
    lo, hi = torch.aminmax(m)  # NaN and infinities show in the extremes; one pass, no boolean image
    if not (math.isfinite(float(lo)) and math.isfinite(float(hi))):
        raise InputShapeError(f"{name}: contains NaN or infinite values; fix the node that made the mask")
    return m.clamp(0.0, 1.0)  # mask arithmetic (add, subtract) can leave [0, 1]; coverage is what counts


def fit_mask(mask: Tensor, height: int, width: int, batch: int, name: str = "mask") -> Tensor:
    """``mask`` area-averaged to ``[batch, height, width]`` (docs/regions.md): one mask for all, or one per item."""
    m = check_mask(mask, name)
    if m.shape[0] not in (1, batch):
        raise InputShapeError(
            f"{name}: a batch of {m.shape[0]} masks for {batch} images or latents; give one mask for all of them "
            f"or exactly {batch}"
        )
    h, w = m.shape[-2:]
    slack = 1.0 / min(height, width) + _ASPECT_SLACK
    if abs(math.log((h / w) / (height / width))) > slack:
        raise InputShapeError(
            f"{name}: {w}x{h} has another aspect ratio than the {width}x{height} it applies to; draw or resize "
            "the mask to the image's shape (it is not stretched)"
        )
    if (h, w) != (height, width):
        m = F.adaptive_avg_pool2d(m.unsqueeze(1), (height, width))[:, 0]
    return m.expand(batch, -1, -1) if m.shape[0] != batch else m


def is_empty(mask: Tensor) -> bool:
    """True when no pixel of the mask is inside the region (every value 0): a masked node is then a no-op."""
    return not bool((check_mask(mask) > 0).any())
