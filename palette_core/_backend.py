"""numpy or torch, chosen by the type of the array given, so that one implementation of the maths serves both.

A kernel calls ``xp = namespace(x)`` and then uses the functions both libraries spell alike (``where``,
``maximum``, ``minimum``, ``floor``, ``remainder``, ``hypot``, ``arctan2``, ``sqrt``, ``sin``, ``cos``,
``exp``, ``sign``, ``clip``, ``stack``, ``bincount``, ``argsort``, dtypes such as ``xp.float64``) and the
few helpers below where their spellings differ. torch is only touched when a tensor is given: numpy
callers (the ``palette distance`` command) never import it.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

import numpy as np


class _Namespace:
    """The array module itself for shared names, plus the helpers whose spelling differs."""

    def __init__(self, module: ModuleType) -> None:
        self._module = module

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


class _Numpy(_Namespace):
    """numpy's spellings; new arrays take the dtype of ``like``."""

    half_dtypes = (np.dtype(np.float16),)

    def __init__(self) -> None:
        super().__init__(np)

    def const(self, values, like, dtype=None):
        return np.asarray(values, dtype=like.dtype if dtype is None else dtype)

    def astype(self, x, dtype):
        return x.astype(dtype, copy=False)

    def empty(self, shape, like, dtype=None):
        return np.empty(shape, dtype=like.dtype if dtype is None else dtype)

    def zeros(self, shape, like, dtype=None):
        return np.zeros(shape, dtype=like.dtype if dtype is None else dtype)

    def full(self, shape, value, like):
        return np.full(shape, value, dtype=like.dtype)

    def cat(self, arrays):
        return np.concatenate(arrays)

    def contiguous(self, x):
        return np.ascontiguousarray(x)

    def broadcast(self, a, b):
        return np.broadcast_arrays(a, b)

    def take_along_last(self, a, idx):
        return np.take_along_axis(a, idx, axis=-1)

    def searchsorted(self, sorted_values, value, right=False):
        return int(np.searchsorted(sorted_values, value, side="right" if right else "left"))

    def nonzero(self, mask):
        return np.nonzero(mask)

    def is_floating(self, x):
        return np.issubdtype(x.dtype, np.floating)

    def aminmax(self, x):
        return float(x.min()), float(x.max())

    def add_at_rows(self, out, idx, values):
        # np.add.at accumulates in index order, as torch's scatter_add_ does on the CPU
        np.add.at(out, (np.arange(out.shape[0])[:, None], idx), values)
        return out


class _Torch(_Namespace):
    """torch's spellings; new tensors take the dtype and device of ``like``."""

    def __init__(self, torch: ModuleType) -> None:
        super().__init__(torch)
        self.half_dtypes = (torch.float16, torch.bfloat16)

    def const(self, values, like, dtype=None):
        return self._module.tensor(values, dtype=like.dtype if dtype is None else dtype, device=like.device)

    def astype(self, x, dtype):
        return x.to(dtype)

    def empty(self, shape, like, dtype=None):
        return self._module.empty(shape, dtype=like.dtype if dtype is None else dtype, device=like.device)

    def zeros(self, shape, like, dtype=None):
        return self._module.zeros(shape, dtype=like.dtype if dtype is None else dtype, device=like.device)

    def full(self, shape, value, like):
        return self._module.full(shape, value, dtype=like.dtype, device=like.device)

    def cat(self, arrays):
        return self._module.cat(arrays)

    def contiguous(self, x):
        return x.contiguous()

    def broadcast(self, a, b):
        return self._module.broadcast_tensors(a, b)

    def take_along_last(self, a, idx):
        return self._module.gather(a, -1, idx)

    def searchsorted(self, sorted_values, value, right=False):
        return int(self._module.searchsorted(sorted_values, value, right=right))

    def nonzero(self, mask):
        return self._module.nonzero(mask, as_tuple=True)

    def is_floating(self, x):
        return x.is_floating_point()

    def aminmax(self, x):
        lo, hi = self._module.aminmax(x)  # one pass; NaN and inf propagate into both
        return float(lo), float(hi)

    def add_at_rows(self, out, idx, values):
        return out.scatter_add_(1, idx, values)


NUMPY = _Numpy()
_TORCH: _Torch | None = None


def is_tensor(x: object) -> bool:
    """True for a torch tensor; never imports torch (a tensor cannot exist before torch is imported)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def namespace(x: object) -> Any:
    """The torch namespace for a tensor, else numpy's."""
    global _TORCH
    if not is_tensor(x):
        return NUMPY
    if _TORCH is None:
        _TORCH = _Torch(sys.modules["torch"])
    return _TORCH
