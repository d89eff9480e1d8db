"""A family's linear latent-to-RGB preview map: a nearly free, differentiable decoder (docs/design.md §9).

The factors and bias are ComfyUI's ``latent_rgb_factors`` / ``latent_rgb_factors_bias``, used there for
the ``latent2rgb`` sampling preview (see :mod:`.latent_family`). They act on latents in the sampler's
space and give RGB in [-1, 1]; ComfyUI's previewer maps that to [0, 1] as ``(v + 1) / 2``, and so do we.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .errors import InputShapeError
from .latent_family import SDXL, LatentFamily

# today's SDXL names, kept for callers that import them
SDXL_LATENT_RGB_FACTORS = SDXL.rgb_factors
SDXL_LATENT_RGB_BIAS = SDXL.rgb_bias
SDXL_SCALE_FACTOR = SDXL.scale_factor  # sampler latent = VAE latent * this


def rgb_factors(family: LatentFamily, ref: Tensor) -> tuple[Tensor, Tensor]:
    """The family's preview map as tensors ``([C, 3], [3])`` on ``ref``'s device and dtype (docs/design.md §9)."""
    f = torch.tensor(family.rgb_factors, dtype=ref.dtype, device=ref.device)
    b = torch.zeros(3, dtype=ref.dtype, device=ref.device)
    if family.rgb_bias is not None:
        b = torch.tensor(family.rgb_bias, dtype=ref.dtype, device=ref.device)
    return f, b


def _check_latent(latent: Tensor, family: LatentFamily) -> None:
    if latent.ndim != 4 or latent.shape[1] != family.channels:
        raise InputShapeError(
            f"latent: shape {tuple(latent.shape)}; expected [B, {family.channels}, h, w] {family.name} latents "
            f"({family.channels} channels, sampler space): pass the latent family of the model that made them"
        )


def fast_decode(latent: Tensor, family: LatentFamily = SDXL) -> Tensor:
    """Latents ``[B, C, h, w]`` (sampler space) to RGB ``[B, h, w, 3]`` by the family's preview map (docs/design.md §9).

    Not clamped, so the gradient stays alive outside [0, 1]; clamp for display or metrics.
    """
    _check_latent(latent, family)
    f, b = rgb_factors(family, latent)
    rgb = torch.einsum("bchw,cr->bhwr", latent, f) + b
    return (rgb + 1.0) * 0.5


def fast_encode(rgb: Tensor, family: LatentFamily = SDXL) -> Tensor:
    """Least-squares inverse of :func:`fast_decode`: RGB ``[B, h, w, 3]`` to ``[B, C, h, w]`` (docs/design.md §9).

    The map is C -> 3, so this picks the minimum-norm latent; it is a test and initialisation aid,
    not a substitute for the VAE encoder.
    """
    if rgb.ndim != 4 or rgb.shape[-1] != 3:
        raise InputShapeError(f"rgb: shape {tuple(rgb.shape)}; expected [B, h, w, 3]")
    f, b = rgb_factors(family, rgb)
    pinv = torch.linalg.pinv(f)  # [3, C]
    return torch.einsum("bhwr,rc->bchw", rgb * 2.0 - 1.0 - b, pinv)
