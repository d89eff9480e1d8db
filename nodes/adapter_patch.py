"""The Palette-Adapter as ComfyUI attn2 replace patches (SPEC §6-§7).

Host-independent on import (ComfyUI's attention is imported when a patch first runs), so contract tests
can drive these objects with the host's call shapes on any machine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from ..palette_core.adapter import ColorCondition, PaletteAdapter, branch_conditions, decoupled_attention
from ..palette_core.errors import AdapterError
from ..palette_core.masks import check_mask, fit_mask

HostAttention = Callable[..., Tensor]


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
    """

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
        self.adapter = adapter
        self.patcher = patcher
        self.positive, self.negative = branch_conditions(positive, negative)
        self.weight = float(weight)
        self.sigma_start, self.sigma_end = float(sigma_start), float(sigma_end)
        self.attention = attention
        self.mask = None if mask is None else check_mask(mask)
        self._tokens: dict[tuple, Tensor] = {}
        self._masks: dict[tuple, Tensor] = {}
        self.calls: dict[str, int] = {}  # active evaluations per layer (tests and benchmarks read it)

    def __deepcopy__(self, memo: dict) -> AdapterRun:
        return self  # ModelPatcher.clone() deep-copies model_options: share the weights instead

    def to(self, device_or_dtype: torch.device | torch.dtype | str) -> AdapterRun:
        """Follow the model between devices and dtypes (ModelPatcher.model_patches_to) unless a patcher manages it."""
        if self.patcher is None:
            self.adapter.to(device_or_dtype)
        self._tokens.clear()
        self._masks.clear()
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
        s = float(sigmas.reshape(-1)[0])
        return self.sigma_end <= s <= self.sigma_start

    def tokens(self, cond_or_uncond: Sequence[int], batch: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """Tokens for a UNet batch of ``len(cond_or_uncond)`` chunks of ``batch`` latents each (cached)."""
        key = (tuple(cond_or_uncond), batch, device, dtype)
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

    def token_mask(self, extra_options: Mapping, q: Tensor, chunks: int) -> Tensor:
        """The region mask on this layer's token grid, ``[len(q), T, 1]``: one per latent, repeated per CFG chunk."""
        tokens = q.shape[1]
        h, w = token_grid(extra_options, tokens)
        batch = q.shape[0] // chunks
        key = (h, w, batch, chunks, q.device, q.dtype)
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
    """attn2 replace patch for one layer: text attention (or the patch it chains) + weight x adapter attention."""

    def __init__(self, run: AdapterRun, layer: str, previous: Callable | None = None) -> None:
        self.run = run
        self.layer = layer
        self.previous = previous

    def __deepcopy__(self, memo: dict) -> PaletteAttn2Patch:
        return self

    def to(self, device_or_dtype: torch.device | torch.dtype | str) -> PaletteAttn2Patch:
        """Move the shared adapter (and a chained patch that can move) with the model."""
        self.run.to(device_or_dtype)
        if hasattr(self.previous, "to"):
            self.previous = self.previous.to(device_or_dtype)
        return self

    def models(self) -> list:
        """The adapter's ModelPatcher and those of a chained patch (ModelPatcher.model_patches_models)."""
        chained = self.previous.models() if hasattr(self.previous, "models") else []
        return [*self.run.models(), *chained]

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, extra_options: dict) -> Tensor:
        run = self.run
        if self.previous is not None:
            out = self.previous(q, k, v, extra_options)
        else:
            out = run.attention(q, k, v, extra_options)
        if not run.active(extra_options.get("sigmas")):
            return out
        cond_or_uncond = extra_options["cond_or_uncond"]
        tokens = run.tokens(cond_or_uncond, q.shape[0] // len(cond_or_uncond), q.device, q.dtype)
        # model management may hold the weights on another device than this evaluation (low-VRAM modes)
        w_k, w_v = (w.to(device=q.device) for w in run.adapter.kv_weights(self.layer))
        host = lambda a, b, c, _heads: run.attention(a, b, c, extra_options)  # noqa: E731  (heads are in extra_options)
        extra = decoupled_attention(q, tokens, w_k, w_v, extra_options["n_heads"], host)
        if run.mask is not None:  # the region's share of the adapter's attention (as IP-Adapter's attention mask)
            extra = extra * run.token_mask(extra_options, q, len(cond_or_uncond))
        run.calls[self.layer] = run.calls.get(self.layer, 0) + 1
        return out + run.weight * extra
