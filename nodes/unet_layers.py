"""The cross-attention layers of a loaded ComfyUI UNet, named the diffusers way (SPEC §6 "Blocks").

Walks the model's own modules, so a block that exists is never missed and one that does not is never
patched; diffusers names come from palette_core.blocks and the UNet's ``num_res_blocks``.
"""

from __future__ import annotations

from ..palette_core.adapter import CONTEXT_DIM
from ..palette_core.blocks import AttentionLayer, diffusers_block, layer_name
from ..palette_core.errors import AdapterError

NEEDS = "an SDXL model (a UNet whose cross-attention reads 2048-dim text features, with SDXL's block layout)"


def model_attention_layers(model) -> list[AttentionLayer]:
    """Every attn2 layer of a ComfyUI ModelPatcher's UNet, or an AdapterError naming what was found."""
    base = getattr(model, "model", None)
    unet = getattr(base, "diffusion_model", None)
    kind = type(base).__name__ if base is not None else type(model).__name__
    config = getattr(getattr(base, "model_config", None), "unet_config", {}) or {}
    num_res_blocks = config.get("num_res_blocks")
    if unet is None or not hasattr(unet, "input_blocks") or num_res_blocks is None:
        raise AdapterError(f"the palette adapter needs {NEEDS}; this model is {kind}, which has no such UNet")
    if isinstance(num_res_blocks, int):
        num_res_blocks = [num_res_blocks] * len(config.get("channel_mult", [1]))
    layers = []
    groups = [("input", unet.input_blocks), ("middle", [unet.middle_block]), ("output", unet.output_blocks)]
    for kind_name, blocks in groups:
        for block_id, block in enumerate(blocks):
            for module in block:
                for index, tb in enumerate(getattr(module, "transformer_blocks", [])):
                    attn2 = getattr(tb, "attn2", None)
                    if attn2 is None:
                        continue
                    dim, context = attn2.to_k.weight.shape
                    if context != CONTEXT_DIM:
                        raise AdapterError(
                            f"the palette adapter needs {NEEDS}; this model is {kind} whose cross-attention reads "
                            f"{context}-dim text features (SD1.5 uses 768, SD2 1024)"
                        )
                    name = layer_name(diffusers_block(kind_name, block_id, num_res_blocks), index)
                    layers.append(AttentionLayer(name, (kind_name, block_id, index), int(dim)))
    if not layers:
        raise AdapterError(f"the palette adapter needs {NEEDS}; this model ({kind}) has no cross-attention layers")
    return layers
