"""The Palette-Adapter inside a diffusers UNet: an attention processor for the targeted attn2 layers.

Mirrors diffusers' ``IPAdapterAttnProcessor2_0`` in a simpler form: the text attention is computed
exactly as ``AttnProcessor2_0`` does, and ``scale x decoupled_attention(q, tokens, W_k, W_v)`` (the one
function the ComfyUI patch calls too) is added before ``to_out``. The processor owns no weights: ``W_k,
W_v`` and the token projections live in one :class:`~palette_core.adapter.PaletteAdapter`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from palette_core.adapter import (
    ColorCondition,
    PaletteAdapter,
    branch_conditions,
    decoupled_attention,
    token_shares,
)
from palette_core.blocks import BASE_MODEL, diffusers_unet_layers
from palette_core.errors import AdapterError


class AdapterContext:
    """State shared by one UNet's palette processors: the adapter, this forward's tokens, scale, ablations.

    ``tokens`` stay set after a forward pass on purpose: gradient checkpointing recomputes the blocks
    during backward and must see the same tokens.
    """

    def __init__(self, adapter: PaletteAdapter) -> None:
        self.adapter = adapter
        self.tokens: Tensor | None = None
        self.scale = 1.0
        self.disabled: frozenset[str] = frozenset()
        self.calls: dict[str, int] = {}
        self.originals: dict[str, object] = {}  # layer -> the processor install_adapter replaced
        self.probe: dict[str, list[Tensor]] | None = None  # set to a dict: each layer's mean share per token

    def active(self, layer: str) -> bool:
        """Whether ``layer`` adds the adapter attention in the current forward pass."""
        return self.tokens is not None and self.scale != 0.0 and layer not in self.disabled


def _attention(q: Tensor, k: Tensor, v: Tensor, heads: int, mask: Tensor | None) -> Tensor:
    b = q.shape[0]
    dh = k.shape[-1] // heads
    q, k, v = (x.view(b, -1, heads, dh).transpose(1, 2) for x in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False)
    return out.transpose(1, 2).reshape(b, -1, heads * dh).to(q.dtype)


class PaletteAttnProcessor:
    """diffusers processor of one attn2 layer: text attention + scale x adapter attention (docs/design.md §6)."""

    def __init__(self, context: AdapterContext, layer: str) -> None:
        self.context = context
        self.layer = layer

    def __call__(
        self,
        attn,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        temb: Tensor | None = None,
        *args,
        **kwargs,
    ) -> Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        batch, seq, _ = hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, seq, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        out = _attention(query, key, value, attn.heads, attention_mask)
        ctx = self.context
        if ctx.active(self.layer):
            w_k, w_v = ctx.adapter.kv_weights(self.layer)
            added = ctx.adapter.scalar_added
            out = out + ctx.scale * decoupled_attention(query, ctx.tokens, w_k, w_v, attn.heads, scalar_added=added)
            if ctx.probe is not None:
                with torch.no_grad():
                    weights = token_shares(query, ctx.tokens, w_k, w_v, attn.heads, added)
                ctx.probe.setdefault(self.layer, []).append(weights.mean(dim=(0, 1, 2)))
            ctx.calls[self.layer] = ctx.calls.get(self.layer, 0) + 1
        out = attn.to_out[1](attn.to_out[0](out))
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def install_adapter(unet: nn.Module, adapter: PaletteAdapter) -> AdapterContext:
    """Give each of the adapter's layers a :class:`PaletteAttnProcessor`; other layers keep theirs.

    The processors they replace are kept in the context, so :func:`uninstall_adapter` restores them.
    """
    model = diffusers_unet_layers(unet, None)  # the fit check below compares the text width
    model.check_fits(adapter.layer_dims, adapter.context_dim, getattr(adapter, "base", BASE_MODEL))
    context = AdapterContext(adapter)
    for name in adapter.layers:
        attn = unet.get_submodule(model.layer(name).module_path)
        context.originals[name] = attn.processor
        attn.set_processor(PaletteAttnProcessor(context, name))
    return context


def uninstall_adapter(unet: nn.Module, context: AdapterContext) -> None:
    """Put back the processors :func:`install_adapter` replaced (inject/eject symmetry); the UNet is as before."""
    for name, processor in context.originals.items():
        attn = unet.get_submodule(name)
        if isinstance(attn.processor, PaletteAttnProcessor) and attn.processor.context is context:
            attn.set_processor(processor)
    context.originals.clear()


def expand_condition(condition: ColorCondition, batch: int) -> ColorCondition:
    """A batch-1 condition repeated to ``batch`` entries (others are returned as they are)."""
    if condition.batch_size == batch:
        return condition
    if condition.batch_size != 1:
        raise AdapterError(f"{condition.batch_size} colour conditions for a batch of {batch}: give 1 or {batch}")
    return replace(
        condition,
        histogram=condition.histogram.expand(batch, -1),
        kind=condition.kind.expand(batch),
        distance=condition.distance.expand(batch),
        entropy=condition.entropy.expand(batch),
    )


class PaletteUNet(nn.Module):
    """A frozen diffusers UNet with the Palette-Adapter installed; only the adapter's parameters train."""

    def __init__(self, unet: nn.Module, adapter: PaletteAdapter) -> None:
        super().__init__()
        self.unet = unet
        self.adapter = adapter
        self.context = install_adapter(unet, adapter)

    def eject(self) -> nn.Module:
        """Remove the adapter from the UNet (its original processors back) and return the bare UNet."""
        uninstall_adapter(self.unet, self.context)
        return self.unet

    def forward(
        self,
        sample: Tensor,
        timestep: Tensor,
        text: Tensor,
        pooled: Tensor,
        time_ids: Tensor,
        condition: ColorCondition | None = None,
        scale: float = 1.0,
    ) -> Tensor:
        """The noise (or v) prediction for ``sample`` under text and colour condition (None = adapter off)."""
        self.context.tokens = None if condition is None else self.adapter.tokens(condition)
        self.context.scale = float(scale)
        added = {"text_embeds": pooled, "time_ids": time_ids}
        return self.unet(sample, timestep, encoder_hidden_states=text, added_cond_kwargs=added).sample


def time_ids(batch: int, height: int, width: int, device: torch.device | str | None = None) -> Tensor:
    """SDXL's added time ids ``(orig h, orig w, crop top, crop left, target h, target w)``, uncropped."""
    return torch.tensor([[height, width, 0, 0, height, width]], dtype=torch.float32, device=device).expand(batch, -1)


@torch.no_grad()
def generate(
    model: PaletteUNet,
    codec,
    scheduler_config,
    text: tuple[Tensor, Tensor],
    empty_text: tuple[Tensor, Tensor],
    seeds: Sequence[int],
    size: int,
    positive: ColorCondition | None = None,
    negative: ColorCondition | None = None,
    guidance: float = 5.0,
    steps: int = 20,
    scale: float = 1.0,
) -> Tensor:
    """Images ``[B, H, W, 3]`` by DDIM with classifier-free guidance (paper Eq. 1; docs/design.md §6 "Guidance").

    The cond half gets the text and ``positive``, the uncond half the empty text and ``negative`` (or the
    null condition); ``positive=None`` samples the base model (adapter off). One seed per image.
    """
    from diffusers import DDIMScheduler

    b = len(seeds)
    p = next(model.unet.parameters())
    device, dtype = p.device, p.dtype
    latent = size // codec.factor
    channels = model.unet.config.in_channels
    x = torch.cat([torch.randn(1, channels, latent, latent, generator=torch.Generator().manual_seed(s)) for s in seeds])
    x = x.to(device)
    sched = DDIMScheduler.from_config(scheduler_config)
    sched.set_timesteps(steps, device=device)
    x = x * sched.init_noise_sigma
    cfg = guidance != 1.0
    emb, pooled = (t.to(device, dtype).expand(b, *t.shape[1:]) for t in text)
    if cfg:
        e_emb, e_pooled = (t.to(device, dtype).expand(b, *t.shape[1:]) for t in empty_text)
        emb, pooled = torch.cat([e_emb, emb]), torch.cat([e_pooled, pooled])
    cond = None
    if positive is not None:
        pos, neg = branch_conditions(positive, negative)
        pos = expand_condition(pos, b)
        cond = ColorCondition.cat([expand_condition(neg, b), pos]) if cfg else pos
        cond = cond.to(device)
    ids = time_ids(emb.shape[0], size, size, device)
    for t in sched.timesteps:
        inp = torch.cat([x, x]) if cfg else x
        inp = sched.scale_model_input(inp, t).to(dtype)
        out = model(inp, t.expand(inp.shape[0]), emb, pooled, ids, cond, scale).float()
        if cfg:
            uncond, c = out.chunk(2)
            out = uncond + guidance * (c - uncond)
        x = sched.step(out, t, x).prev_sample
    return codec.decode(x).permute(0, 2, 3, 1).cpu()
