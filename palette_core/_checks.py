"""Validation and normalisation of array arguments shared by every public function.

Conversions that are documented (and therefore not silent): uint8 images are divided by 255, a fourth
(alpha) channel is dropped, numpy arrays become tensors. Everything else that is not the expected form
raises :class:`InputShapeError` naming the argument.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .errors import InputShapeError

# Float images from resampling or VAE decoding overshoot [0, 1] by a hair; such values are clamped.
RANGE_TOLERANCE = 1e-3


def as_tensor(x: Tensor | np.ndarray, name: str) -> Tensor:
    """Return ``x`` as a tensor (numpy arrays are wrapped without a copy where possible)."""
    if isinstance(x, Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    if isinstance(x, (list, tuple)):
        try:
            return torch.tensor(x, dtype=torch.float64)
        except (TypeError, ValueError) as e:
            raise InputShapeError(f"{name}: could not read a numeric array from {type(x).__name__} ({e})") from e
    raise InputShapeError(f"{name}: expected a torch.Tensor or numpy array, got {type(x).__name__}")


def _check_finite_range(x: Tensor, name: str, what: str) -> Tensor:
    lo, hi = (float(v) for v in torch.aminmax(x))  # NaN and inf propagate into min/max: one pass checks all
    if not (math.isfinite(lo) and math.isfinite(hi)):
        bad = int((~torch.isfinite(x)).sum())
        raise InputShapeError(f"{name}: {bad} value(s) are NaN or infinite; {what} must be finite")
    if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
        raise InputShapeError(
            f"{name}: values span [{lo:.4g}, {hi:.4g}]; {what} must be sRGB floats in [0, 1] (divide 8-bit data by 255)"
        )
    return x if 0.0 <= lo and hi <= 1.0 else x.clamp(0.0, 1.0)


def _as_float(x: Tensor, name: str) -> Tensor:
    if x.dtype == torch.uint8:
        return x.to(torch.float32) / 255.0
    if not x.is_floating_point():
        raise InputShapeError(f"{name}: dtype {x.dtype} is not supported; expected float sRGB in [0, 1] or uint8")
    if x.dtype in (torch.float16, torch.bfloat16):
        return x.float()
    return x


def check_image(image: Tensor | np.ndarray, name: str = "image") -> tuple[Tensor, bool]:
    """Return ``(images [B, H, W, 3] float in [0, 1], was_batched)`` or raise InputShapeError."""
    x = as_tensor(image, name)
    if x.ndim not in (3, 4):
        raise InputShapeError(
            f"{name}: shape {tuple(x.shape)} has {x.ndim} dims; expected [H, W, 3] or [B, H, W, 3] (channels last)"
        )
    batched = x.ndim == 4
    if not batched:
        x = x.unsqueeze(0)
    if x.shape[-1] == 4:
        x = x[..., :3]
    elif x.shape[-1] != 3:
        raise InputShapeError(
            f"{name}: last dim is {x.shape[-1]}; expected 3 (RGB) or 4 (RGBA, alpha is dropped) channels last"
        )
    if x.numel() == 0:
        raise InputShapeError(f"{name}: shape {tuple(x.shape)} is empty; expected at least one pixel")
    x = _as_float(x, name)
    return _check_finite_range(x, name, "pixels"), batched


def check_rgb(rgb: Tensor | np.ndarray, name: str = "rgb") -> Tensor:
    """Return ``rgb [..., 3]`` as float in [0, 1] or raise InputShapeError (any leading shape, may be empty)."""
    x = as_tensor(rgb, name)
    if x.ndim == 0 or x.shape[-1] != 3:
        raise InputShapeError(f"{name}: shape {tuple(x.shape)}; expected [..., 3] sRGB colours")
    x = _as_float(x, name)
    return x if x.numel() == 0 else _check_finite_range(x, name, "colours")


def check_colors(colors: Tensor | np.ndarray, name: str = "colors") -> tuple[Tensor, bool]:
    """Return ``(colors [B, N, 3] float in [0, 1], was_batched)`` or raise InputShapeError."""
    x = as_tensor(colors, name)
    if x.ndim not in (2, 3) or x.shape[-1] != 3:
        raise InputShapeError(f"{name}: shape {tuple(x.shape)}; expected [N, 3] or [B, N, 3] sRGB colours")
    batched = x.ndim == 3
    if not batched:
        x = x.unsqueeze(0)
    if x.shape[1] == 0:
        raise InputShapeError(f"{name}: no colours; expected at least one")
    x = _as_float(x, name)
    return _check_finite_range(x, name, "colours"), batched


def check_weights(weights: Tensor | np.ndarray | None, colors: Tensor, name: str = "weights") -> Tensor:
    """Return weights ``[B, N]`` (equal when None) normalised to sum 1, or raise InputShapeError."""
    b, n = colors.shape[0], colors.shape[1]
    if weights is None:
        return torch.full((b, n), 1.0 / n, dtype=colors.dtype, device=colors.device)
    w = as_tensor(weights, name).to(device=colors.device)
    if not w.is_floating_point():
        w = w.to(colors.dtype)
    if w.ndim == 1:
        w = w.unsqueeze(0).expand(b, -1)
    if w.shape != (b, n):
        raise InputShapeError(f"{name}: shape {tuple(w.shape)}; expected [{n}] or [{b}, {n}] to match the colours")
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise InputShapeError(f"{name}: weights must be finite and >= 0")
    total = w.sum(-1, keepdim=True)
    if bool((total <= 0).any()):
        raise InputShapeError(f"{name}: weights sum to 0; at least one weight must be positive")
    return (w / total).to(colors.dtype)
