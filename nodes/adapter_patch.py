"""The Palette-Adapter as ComfyUI attn2 replace patches (README.md, "The Palette-Adapter in ComfyUI").

Host-independent on import (ComfyUI's attention is imported when a patch first runs), so contract tests
can drive these objects with the host's call shapes on any machine.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from ..palette_core.adapter import (
    ColorCondition,
    PaletteAdapter,
    adapter_kv,
    attend_tokens,
    branch_conditions,
    head_attention,
    split_heads,
)
from ..palette_core.errors import AdapterError
from ..palette_core.masks import check_mask, fit_mask

HostAttention = Callable[..., Tensor]
NO_SIGMA = 999999999.9  # the sigma IPAdapter-style patches assume when the host gives none


def comfy_attention(q: Tensor, k: Tensor, v: Tensor, extra_options: Mapping) -> Tensor:
    """ComfyUI's default cross-attention, called exactly as CrossAttention.forward calls it."""
    from comfy.ldm.modules import attention

    return attention.optimized_attention(
        q,
        k,
        v,
        extra_options["n_heads"],
        attn_precision=extra_options.get("attn_precision"),
        transformer_options=extra_options,
    )


class AdapterRun:
    """One application of an adapter: its weights (a private copy), branch conditions, scale and window.

    Inside ComfyUI ``patcher`` is a ModelPatcher around ``adapter``: :meth:`models` hands it to ComfyUI's
    model management, which loads, counts and offloads the weights with the model, so :meth:`to` then
    leaves them where model management put them. Without one (contract tests, other hosts) :meth:`to`
    moves them.

    The adapter's tokens and each layer's K/V of them are constant during sampling, so they are computed
    once per batch layout, device and dtype and cached. :meth:`to`, and setting ``adapter``, ``positive``,
    ``negative`` or ``mask``, clear the caches; after editing the weights in place call :meth:`clear_cache`.
    """

    _CACHED_FROM = frozenset({"adapter", "positive", "negative", "mask"})

    def __init__(
        self,
        adapter: PaletteAdapter,
        positive: ColorCondition,
        negative: ColorCondition | None = None,
        weight: float = 1.0,
        sigma_start: float = float("inf"),
        sigma_end: float = 0.0,
        attention: Callable[[Tensor, Tensor, Tensor, Mapping], Tensor] = comfy_attention,
        patcher: object | None = None,
        mask: Tensor | None = None,
    ) -> None:
        self._tokens: dict[tuple, Tensor] = {}
        self._kv: dict[tuple, tuple[Tensor, Tensor]] = {}
        self._masks: dict[tuple, Tensor] = {}
        self._sigmas: Tensor | None = None  # the last sigmas tensor seen, and whether it was inside the window
        self._active = False
        self.adapter = adapter
        self.patcher = patcher
        self.positive, self.negative = branch_conditions(positive, negative)
        self.weight = float(weight)
        self.sigma_start, self.sigma_end = float(sigma_start), float(sigma_end)
        self.attention = attention
        self.mask = None if mask is None else check_mask(mask)
        self.calls: dict[str, int] = {}  # active evaluations per layer (tests and benchmarks read it)

    def __setattr__(self, name: str, value: object) -> None:
        super().__setattr__(name, value)
        if name in self._CACHED_FROM:
            self.clear_cache()

    def __deepcopy__(self, memo: dict) -> AdapterRun:
        return self  # ModelPatcher.clone() deep-copies model_options: share the weights instead

    def clear_cache(self) -> None:
        """Forget the cached tokens, K/V and masks (they are recomputed on the next call)."""
        self._tokens.clear()
        self._kv.clear()
        self._masks.clear()
        self._sigmas = None

    def to(
        self, device_or_dtype: torch.device | torch.dtype | str, _exiting: Callable[[], bool] = sys.is_finalizing
    ) -> AdapterRun:
        """Follow the model between devices and dtypes (ModelPatcher.model_patches_to) unless a patcher manages it."""
        if _exiting():  # ModelPatcher.__del__ at interpreter exit: torch may be half torn down; nothing to move
            return self
        if self.patcher is None:
            self.adapter.to(device_or_dtype)
        self.clear_cache()
        return self

    def models(self) -> list:
        """The ModelPatcher of the adapter's weights, for ComfyUI's model management (empty without one)."""
        return [] if self.patcher is None else [self.patcher]

    def active(self, sigmas: Tensor | None) -> bool:
        """True inside the start/end window (in sigma) with a non-zero weight."""
        if self.weight == 0.0:
            return False
        if sigmas is None:
            return True
        if sigmas is not self._sigmas:  # every layer of one evaluation gets the same tensor: read it once
            s = float(sigmas.reshape(-1)[0])
            self._sigmas, self._active = sigmas, self.sigma_end <= s <= self.sigma_start
        return self._active

    def tokens(self, cond_or_uncond: Sequence[int], batch: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """Tokens for a UNet batch of ``len(cond_or_uncond)`` chunks of ``batch`` latents each (cached)."""
        key = (tuple(cond_or_uncond), batch, device, dtype, torch.is_inference_mode_enabled())
        if key not in self._tokens:
            chunks = []  # computed once per batch layout and device, then reused by every layer and step
            for flag in cond_or_uncond:  # 0 = cond (positive), 1 = uncond (negative); order is not fixed
                cond = self.positive if flag == 0 else self.negative
                if cond.batch_size not in (1, batch):
                    raise AdapterError(
                        f"the colour condition holds {cond.batch_size} entries but the latent batch is {batch}: "
                        "give one condition for all latents or exactly one per latent"
                    )
                with torch.no_grad():
                    t = self.adapter.tokens(cond)
                chunks.append(t.expand(batch, -1, -1) if t.shape[0] == 1 else t)
            self._tokens[key] = torch.cat(chunks).to(device=device, dtype=dtype)
        return self._tokens[key]

    def kv(
        self,
        layer: str,
        cond_or_uncond: Sequence[int],
        batch: int,
        device: torch.device,
        dtype: torch.dtype,
        heads: int | None = None,
    ) -> tuple[Tensor, Tensor]:
        """One layer's adapter keys and values ``[len(cond_or_uncond) * batch, 5, C]`` for a batch layout (cached);
        with ``heads``, split into heads ``[N, heads, 5, C / heads]``."""
        # inference tensors cannot be saved for backward: a run sampled with gradients gets its own entries
        key = (layer, tuple(cond_or_uncond), batch, device, dtype, torch.is_inference_mode_enabled(), heads)
        kv = self._kv.get(key)
        if kv is None:
            tokens = self.tokens(cond_or_uncond, batch, device, dtype)
            # model management may hold the weights on another device than this evaluation (low-VRAM modes)
            w_k, w_v = (w.to(device=device) for w in self.adapter.kv_weights(layer))
            with torch.no_grad():
                kv = adapter_kv(tokens, w_k, w_v, dtype)
                if heads is not None:
                    kv = tuple(split_heads(x, heads).contiguous() for x in kv)
            self._kv[key] = kv
        return kv

    def token_mask(self, extra_options: Mapping, q: Tensor, chunks: int) -> Tensor:
        """The region mask on this layer's token grid, ``[len(q), T, 1]``: one per latent, repeated per CFG chunk."""
        tokens = q.shape[1]
        h, w = token_grid(extra_options, tokens)
        batch = q.shape[0] // chunks
        key = (h, w, batch, chunks, q.device, q.dtype, torch.is_inference_mode_enabled())
        if key not in self._masks:
            m = fit_mask(self.mask, h, w, batch).reshape(batch, tokens, 1)
            self._masks[key] = m.repeat(chunks, 1, 1).to(device=q.device, dtype=q.dtype)
        return self._masks[key]


def token_grid(extra_options: Mapping, tokens: int) -> tuple[int, int]:
    """``(h, w)`` of a layer's ``tokens`` query positions (ComfyUI's ``activations_shape``, else the latent's)."""
    shape = extra_options.get("activations_shape")
    if shape is not None and shape[-2] * shape[-1] == tokens:
        return int(shape[-2]), int(shape[-1])
    shape = extra_options.get("original_shape")
    if shape is not None:
        h, w = int(shape[-2]), int(shape[-1])
        for _ in range(8):  # each UNet level halves the grid, rounding up
            if h * w == tokens:
                return h, w
            h, w = -(-h // 2), -(-w // 2)
    raise AdapterError(
        f"cannot place a region mask on an attention layer of {tokens} tokens: the host gave no latent shape"
    )


class PaletteAttn2Patch:
    """attn2 replace patch for one layer: text attention (or the patch it chains), the callbacks other packs
    added, then + weight x adapter attention.

    Other packs (IPAdapter_plus, InstantID, PuLID and their forks) that find a patch on a layer call
    ``patch.add(callback, **kwargs)`` on it; like their own ``Attn2Replace`` this patch then adds
    ``callback(out, q, k, v, extra_options, **kwargs)`` to ``out`` inside ``[sigma_end, sigma_start]``, in
    the order added, before its own term, so either order of the nodes computes the same sum.
    """

    def __init__(self, run: AdapterRun, layer: str, previous: Callable | None = None) -> None:
        self.run = run
        self.layer = layer
        self.previous = previous
        self.callback: list[Callable] = []  # the names Attn2Replace uses, for code that reads them
        self.kwargs: list[dict] = []

    def __deepcopy__(self, memo: dict) -> PaletteAttn2Patch:
        # ModelPatcher.clone() deep-copies model_options: each clone gets its own patch, so callbacks a pack
        # adds to one clone stay there; the run (weights, caches) is shared and the rest is copied as
        # ComfyUI copies any patch (Attn2Replace included)
        new = object.__new__(type(self))
        memo[id(self)] = new
        new.run, new.layer = self.run, self.layer
        new.previous = copy.deepcopy(self.previous, memo)
        new.callback = copy.deepcopy(self.callback, memo)
        new.kwargs = copy.deepcopy(self.kwargs, memo)
        return new

    def __getattr__(self, name: str) -> object:
        # Attn2Replace.add also sets each keyword as an attribute (the last add wins); read here without
        # letting a keyword shadow this patch's own attributes
        if not name.startswith("__"):
            for kwargs in reversed(self.__dict__.get("kwargs", ())):
                if name in kwargs:
                    return kwargs[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def add(self, callback: Callable, **kwargs: object) -> None:
        """Take another pack's attention callback, as IPAdapter_plus's ``Attn2Replace.add`` does (README.md)."""
        self.callback.append(callback)
        self.kwargs.append(kwargs)

    def to(
        self, device_or_dtype: torch.device | torch.dtype | str, _exiting: Callable[[], bool] = sys.is_finalizing
    ) -> PaletteAttn2Patch:
        """Move the shared adapter (and a chained patch that can move) with the model."""
        if _exiting():  # as AdapterRun.to (a default argument: module globals may be None by then)
            return self
        self.run.to(device_or_dtype)
        if hasattr(self.previous, "to"):
            self.previous = self.previous.to(device_or_dtype)
        return self

    def models(self) -> list:
        """The adapter's ModelPatcher and those of a chained patch (ModelPatcher.model_patches_models)."""
        chained = self.previous.models() if hasattr(self.previous, "models") else []
        return [*self.run.models(), *chained]

    def _added(self, out: Tensor, q: Tensor, k: Tensor, v: Tensor, extra_options: dict) -> Tensor:
        sigmas = extra_options.get("sigmas")
        sigma = NO_SIGMA if sigmas is None else float(sigmas.detach().reshape(-1)[0])
        for callback, kwargs in zip(self.callback, self.kwargs):
            if kwargs.get("sigma_end", -float("inf")) <= sigma <= kwargs.get("sigma_start", float("inf")):
                out = out + callback(out, q, k, v, extra_options, **kwargs)
        return out.to(dtype=q.dtype)  # a callback may compute in float32 (PuLID's ortho modes)

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, extra_options: dict) -> Tensor:
        run = self.run
        if self.previous is not None:
            out = self.previous(q, k, v, extra_options)
        else:
            out = run.attention(q, k, v, extra_options)
        if self.callback:
            out = self._added(out, q, k, v, extra_options)
        if not run.active(extra_options.get("sigmas")):
            return out
        cond_or_uncond = extra_options["cond_or_uncond"]
        batch = q.shape[0] // len(cond_or_uncond)
        # the region's share of the adapter's attention (as IP-Adapter's attention mask)
        mask = None if run.mask is None else run.token_mask(extra_options, q, len(cond_or_uncond))
        run.calls[self.layer] = run.calls.get(self.layer, 0) + 1
        if run.attention is not comfy_attention:  # a host attention given explicitly, on the cached K/V
            ak, av = run.kv(self.layer, cond_or_uncond, batch, q.device, q.dtype)
            extra = attend_tokens(
                lambda k_, v_: run.attention(q, k_, v_, extra_options), ak, av, run.adapter.scalar_added
            )
        else:  # five tokens need none of the host's attention machinery (chunking, memory checks)
            ak, av = run.kv(self.layer, cond_or_uncond, batch, q.device, q.dtype, extra_options["n_heads"])
            # scaled dot-product attention on K/V cached in heads
            extra = head_attention(q, ak, av, run.adapter.scalar_added)
        if mask is not None:
            extra = extra * mask
        return out + (extra if run.weight == 1.0 else run.weight * extra)
