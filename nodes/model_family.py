"""What palette control needs to know about the loaded model, built from what ComfyUI knows about it.

The one place where model families differ (docs/training-free.md, "Model families"): the latent space
(a :class:`~palette_core.latent_family.LatentFamily`, from the model's ``latent_format`` and the VAE) for
the training-free nodes, and the cross-attention layers with their text width (an
:class:`~palette_core.blocks.AttentionLayers`, from the model's own modules) for the Palette-Adapter.
Nothing here imports ComfyUI: it reads the objects ComfyUI hands the nodes, so contract tests can drive it.
"""

from __future__ import annotations

import dataclasses

import torch

from ..palette_core.blocks import AttentionLayers, attention_layers, diffusers_block, layer_name
from ..palette_core.errors import AdapterError, IncompatibleModelError
from ..palette_core.latent_family import SUPPORTED_FAMILIES, LatentFamily

ADAPTER_FAMILIES = "SDXL (and SDXL finetunes such as Pony or Illustrious)"


def format_family(fmt) -> LatentFamily:
    """The LatentFamily of a ComfyUI latent format, or IncompatibleModelError naming what it lacks."""
    dims = getattr(fmt, "latent_dimensions", 2)
    if dims != 2:
        raise IncompatibleModelError(f"its latents have {dims} spatial dimensions (a video, audio or 3-D model)")
    factors = getattr(fmt, "latent_rgb_factors", None)
    if factors is None:
        raise IncompatibleModelError("it has no latent-to-RGB preview factors (latent_rgb_factors)")
    channels = getattr(fmt, "latent_channels", None)
    if channels != len(factors):
        raise IncompatibleModelError(f"it has {channels} latent channels but {len(factors)} rows of latent_rgb_factors")
    family = LatentFamily(
        name=type(fmt).__name__,
        channels=channels,
        scale_factor=float(fmt.scale_factor),
        shift_factor=float(getattr(fmt, "shift_factor", None) or 0.0),
        rgb_factors=tuple(tuple(row) for row in factors),
        rgb_bias=getattr(fmt, "latent_rgb_factors_bias", None),
    )
    # formats that normalise per channel (latents_mean/std) are not (z - shift) * scale
    probe = torch.linspace(-2.0, 2.0, channels * 4).reshape(1, channels, 2, 2)
    if not torch.allclose(fmt.process_in(probe), family.process_in(probe), atol=1e-5):
        raise IncompatibleModelError("its process_in is not (latent - shift_factor) * scale_factor")
    return family


def latent_family(model, node: str) -> LatentFamily:
    """The latent family of the model's own ``latent_format`` (docs/training-free.md), or IncompatibleModelError."""
    fmt = model.get_model_object("latent_format")
    try:
        return format_family(fmt)
    except IncompatibleModelError as e:
        raise IncompatibleModelError(
            f"{node} cannot use this model's latent format {type(fmt).__name__}: {e}. Supported families: "
            f"{SUPPORTED_FAMILIES}; load a checkpoint of one of them"
        ) from e


def vae_family(vae, family: LatentFamily) -> LatentFamily:
    """``family`` with the VAE's downscale, or IncompatibleModelError unless the VAE makes its latents."""
    if getattr(vae, "first_stage_model", None) is None:
        raise IncompatibleModelError(f"the VAE is empty (the checkpoint had no VAE weights): load a {family.name} VAE")
    channels = getattr(vae, "latent_channels", None)
    dims = getattr(vae, "latent_dim", 2)
    ratio = vae.spacial_compression_encode() if hasattr(vae, "spacial_compression_encode") else None
    if channels != family.channels or dims != 2 or not isinstance(ratio, int):
        raise IncompatibleModelError(
            f"the VAE makes {channels}-channel {dims}-D latents at 1/{ratio} scale; the model ({family.name}) samples "
            f"{family.channels}-channel 2-D latents: connect the VAE of the same checkpoint (or a {family.name} VAE)"
        )
    return dataclasses.replace(family, downscale=ratio)


def _model_name(model) -> str:
    """How errors name the loaded model: its ComfyUI model class and latent format (e.g. ``Flux (Flux latents)``)."""
    base = getattr(model, "model", None)
    kind = type(base).__name__ if base is not None else type(model).__name__
    fmt = getattr(base, "latent_format", None)
    return f"this model ({kind}, {type(fmt).__name__} latents)" if fmt is not None else f"this model ({kind})"


def attention_layers_of(model) -> AttentionLayers:
    """The cross-attention layers of a ComfyUI ModelPatcher's UNet, named the diffusers way, or an AdapterError
    saying which families the adapter supports (its layers are SDXL's; other families use the training-free nodes)."""
    base = getattr(model, "model", None)
    unet = getattr(base, "diffusion_model", None)
    config = getattr(getattr(base, "model_config", None), "unet_config", {}) or {}
    num_res_blocks = config.get("num_res_blocks")
    name = _model_name(model)
    if unet is None or not hasattr(unet, "input_blocks") or num_res_blocks is None:
        raise AdapterError(
            f"the Palette-Adapter works on {ADAPTER_FAMILIES}; {name} is not a UNet of that layout. "
            "On SD1.5, SD3.5 and Flux use Palette Align or Palette Guidance, which need no adapter"
        )
    if isinstance(num_res_blocks, int):
        num_res_blocks = [num_res_blocks] * len(config.get("channel_mult", [1]))
    entries = []
    groups = [("input", "input_blocks", unet.input_blocks), ("middle", "middle_block", [unet.middle_block])]
    groups.append(("output", "output_blocks", unet.output_blocks))
    for kind, attr, blocks in groups:
        for block_id, block in enumerate(blocks):
            for m, module in enumerate(block):
                for index, tb in enumerate(getattr(module, "transformer_blocks", [])):
                    if getattr(tb, "attn2", None) is None:
                        continue
                    prefix = f"{attr}.{m}" if kind == "middle" else f"{attr}.{block_id}.{m}"
                    path = f"{prefix}.transformer_blocks.{index}.attn2"
                    diffusers = layer_name(diffusers_block(kind, block_id, num_res_blocks), index)
                    entries.append((diffusers, (kind, block_id, index), path, tb.attn2))
    return attention_layers(entries, name)
