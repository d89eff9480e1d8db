"""SDXL's linear latent-to-RGB preview map: a nearly free, differentiable decoder (SPEC §9).

The factors and bias are ComfyUI's (``comfy/latent_formats.py``, class ``SDXL``, ``latent_rgb_factors``
and ``latent_rgb_factors_bias``, ComfyUI 0.3.64), used there for the ``latent2rgb`` sampling preview.
They act on latents in the sampler's space (the VAE latent times SDXL's scale factor 0.13025), and
give RGB in [-1, 1]; ComfyUI's previewer maps that to [0, 1] as ``(v + 1) / 2``, and so do we.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .errors import InputShapeError

# ComfyUI comfy/latent_formats.py, class SDXL: rows are latent channels, columns R, G, B.
SDXL_LATENT_RGB_FACTORS = (
    (0.3651, 0.4232, 0.4341),
    (-0.2533, -0.0042, 0.1068),
    (0.1076, 0.1111, -0.0362),
    (-0.3165, -0.2492, -0.2188),
)
SDXL_LATENT_RGB_BIAS = (0.1084, -0.0175, -0.0011)
SDXL_SCALE_FACTOR = 0.13025  # comfy/latent_formats.py SDXL.scale_factor: sampler latent = VAE latent * this


def _factors(ref: Tensor) -> tuple[Tensor, Tensor]:
    f = torch.tensor(SDXL_LATENT_RGB_FACTORS, dtype=ref.dtype, device=ref.device)
    b = torch.tensor(SDXL_LATENT_RGB_BIAS, dtype=ref.dtype, device=ref.device)
    return f, b


def _check_latent(latent: Tensor) -> None:
    if latent.ndim != 4 or latent.shape[1] != 4:
        raise InputShapeError(
            f"latent: shape {tuple(latent.shape)}; expected [B, 4, h, w] SDXL latents (4 channels, sampler space)"
        )


def fast_decode(latent: Tensor) -> Tensor:
    """SDXL latents ``[B, 4, h, w]`` (sampler space) to RGB ``[B, h, w, 3]`` by ComfyUI's linear preview map.

    Not clamped, so the gradient stays alive outside [0, 1]; clamp for display or metrics.
    """
    _check_latent(latent)
    f, b = _factors(latent)
    rgb = torch.einsum("bchw,cr->bhwr", latent, f) + b
    return (rgb + 1.0) * 0.5


def fast_encode(rgb: Tensor) -> Tensor:
    """Least-squares inverse of :func:`fast_decode`: RGB ``[B, h, w, 3]`` to latents ``[B, 4, h, w]``.

    The map is 4 -> 3, so this picks the minimum-norm latent; it is a test and initialisation aid,
    not a substitute for the VAE encoder.
    """
    if rgb.ndim != 4 or rgb.shape[-1] != 3:
        raise InputShapeError(f"rgb: shape {tuple(rgb.shape)}; expected [B, h, w, 3]")
    f, b = _factors(rgb)
    pinv = torch.linalg.pinv(f)  # [3, 4]
    return torch.einsum("bhwr,rc->bchw", rgb * 2.0 - 1.0 - b, pinv)
