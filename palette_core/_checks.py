"""Validation and normalisation of array arguments shared by every public function.

Conversions that are documented (and therefore not silent): uint8 images are divided by 255, a fourth
(alpha) channel is dropped, numpy arrays become tensors. Everything else that is not the expected form
raises :class:`InputShapeError` naming the argument. With ``numpy=True`` the same checks return numpy
arrays instead (tensors and sequences are converted), for the callers that run without torch.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ._backend import NUMPY, is_tensor, namespace
from .errors import InputShapeError

if TYPE_CHECKING:
    from torch import Tensor

    Array = Tensor | np.ndarray

# Float images from resampling or VAE decoding overshoot [0, 1] by a hair; such values are clamped.
RANGE_TOLERANCE = 1e-3


def as_tensor(x: Tensor | np.ndarray, name: str) -> Tensor:
    """Return ``x`` as a tensor (numpy arrays are wrapped without a copy where possible)."""
    import torch

    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    return torch.from_numpy(_from_sequence(x, name))


def as_numpy(x: Tensor | np.ndarray, name: str) -> np.ndarray:
    """Return ``x`` as a numpy array (tensors are copied to the CPU; half floats widen to float32)."""
    if isinstance(x, np.ndarray):
        return x
    if is_tensor(x):
        x = x.detach().cpu()
        return (x.float() if x.dtype in namespace(x).half_dtypes else x).numpy()  # bfloat16 has no numpy dtype
    return _from_sequence(x, name)


def _from_sequence(x: object, name: str) -> np.ndarray:
    """A list or tuple of numbers as a float64 array; anything else is refused naming ``name``."""
    if isinstance(x, (list, tuple)):
        try:
            return np.array(x, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise InputShapeError(f"{name}: could not read a numeric array from {type(x).__name__} ({e})") from e
    raise InputShapeError(f"{name}: expected a torch.Tensor or numpy array, got {type(x).__name__}")


def _convert(x: Tensor | np.ndarray, name: str, numpy: bool) -> Array:
    return as_numpy(x, name) if numpy else as_tensor(x, name)


def _check_finite_range(x: Array, name: str, what: str) -> Array:
    xp = namespace(x)
    lo, hi = xp.aminmax(x)  # NaN and inf propagate into min/max: one pass checks all
    if not (math.isfinite(lo) and math.isfinite(hi)):
        bad = int((~xp.isfinite(x)).sum())
        raise InputShapeError(f"{name}: {bad} value(s) are NaN or infinite; {what} must be finite")
    if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
        raise InputShapeError(
            f"{name}: values span [{lo:.4g}, {hi:.4g}]; {what} must be sRGB floats in [0, 1] (divide 8-bit data by 255)"
        )
    return x if 0.0 <= lo and hi <= 1.0 else xp.clip(x, 0.0, 1.0)


def _as_float(x: Array, name: str) -> Array:
    xp = namespace(x)
    if x.dtype == xp.uint8:
        return xp.astype(x, xp.float32) / 255.0
    if not xp.is_floating(x):
        raise InputShapeError(f"{name}: dtype {x.dtype} is not supported; expected float sRGB in [0, 1] or uint8")
    if x.dtype in xp.half_dtypes:
        return xp.astype(x, xp.float32)
    return x


def check_image(image: Tensor | np.ndarray, name: str = "image", *, numpy: bool = False) -> tuple[Array, bool]:
    """Return ``(images [B, H, W, 3] float in [0, 1], was_batched)`` or raise InputShapeError."""
    x = _convert(image, name, numpy)
    if x.ndim not in (3, 4):
        raise InputShapeError(
            f"{name}: shape {tuple(x.shape)} has {x.ndim} dims; expected [H, W, 3] or [B, H, W, 3] (channels last)"
        )
    batched = x.ndim == 4
    if not batched:
        x = x[None]
    if x.shape[-1] == 4:
        x = x[..., :3]
    elif x.shape[-1] != 3:
        raise InputShapeError(
            f"{name}: last dim is {x.shape[-1]}; expected 3 (RGB) or 4 (RGBA, alpha is dropped) channels last"
        )
    if math.prod(x.shape) == 0:
        raise InputShapeError(f"{name}: shape {tuple(x.shape)} is empty; expected at least one pixel")
    x = _as_float(x, name)
    return _check_finite_range(x, name, "pixels"), batched


def check_rgb(rgb: Tensor | np.ndarray, name: str = "rgb", *, numpy: bool = False) -> Array:
    """Return ``rgb [..., 3]`` as float in [0, 1] or raise InputShapeError (any leading shape, may be empty)."""
    x = _convert(rgb, name, numpy)
    if x.ndim == 0 or x.shape[-1] != 3:
        raise InputShapeError(f"{name}: shape {tuple(x.shape)}; expected [..., 3] sRGB colours")
    x = _as_float(x, name)
    return x if math.prod(x.shape) == 0 else _check_finite_range(x, name, "colours")


def check_colors(colors: Tensor | np.ndarray, name: str = "colors", *, numpy: bool = False) -> tuple[Array, bool]:
    """Return ``(colors [B, N, 3] float in [0, 1], was_batched)`` or raise InputShapeError."""
    x = _convert(colors, name, numpy)
    if x.ndim not in (2, 3) or x.shape[-1] != 3:
        raise InputShapeError(f"{name}: shape {tuple(x.shape)}; expected [N, 3] or [B, N, 3] sRGB colours")
    batched = x.ndim == 3
    if not batched:
        x = x[None]
    if x.shape[1] == 0:
        raise InputShapeError(f"{name}: no colours; expected at least one")
    x = _as_float(x, name)
    return _check_finite_range(x, name, "colours"), batched


def check_weights(weights: Tensor | np.ndarray | None, colors: Array, name: str = "weights") -> Array:
    """Return weights ``[B, N]`` (equal when None) normalised to sum 1, or raise InputShapeError.

    The result is of the colours' kind: a tensor on their device, or a numpy array for numpy colours.
    """
    xp = namespace(colors)
    b, n = colors.shape[0], colors.shape[1]
    if weights is None:
        return xp.full((b, n), 1.0 / n, like=colors)
    w = as_numpy(weights, name) if xp is NUMPY else as_tensor(weights, name).to(device=colors.device)
    if not xp.is_floating(w):
        w = xp.astype(w, colors.dtype)
    if w.ndim == 1:
        w = xp.broadcast_to(w[None], (b, w.shape[0]))
    if tuple(w.shape) != (b, n):
        raise InputShapeError(f"{name}: shape {tuple(w.shape)}; expected [{n}] or [{b}, {n}] to match the colours")
    if not bool(xp.isfinite(w).all()) or bool((w < 0).any()):
        raise InputShapeError(f"{name}: weights must be finite and >= 0")
    total = w.sum(-1)[..., None]
    if bool((total <= 0).any()):
        raise InputShapeError(f"{name}: weights sum to 0; at least one weight must be positive")
    return xp.astype(w / total, colors.dtype)
