"""UNet attention-block naming: users name blocks as diffusers does; ComfyUI keys patches by position (SPEC §6).

A *block* is one transformer stack (``down_blocks.1.attentions.0``); a *layer* is one cross-attention
inside it (``down_blocks.1.attentions.0.transformer_blocks.3.attn2``). ComfyUI addresses the same layer
as ``("input", 4, 3)``. The mapping is derived from the UNet's ``num_res_blocks`` and the layers that
actually exist in a model, never from a fixed list.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .errors import AdapterError

ComfyKey = tuple[str, int, int]

DEFAULT_BLOCKS = ("up_blocks.0.attentions.1",)  # paper: "a single intermediate block" (see SPEC §6)
_LAYER_RE = re.compile(r"^(.*\.attentions\.\d+)\.transformer_blocks\.(\d+)\.attn2$")


@dataclass(frozen=True)
class AttentionLayer:
    """One cross-attention layer: its diffusers name, ComfyUI key and inner width C (= heads x 64)."""

    name: str
    comfy_key: ComfyKey
    dim: int

    @property
    def block(self) -> str:
        """The diffusers name of the block holding this layer."""
        return block_of(self.name)


def block_of(layer_name: str) -> str:
    """``down_blocks.1.attentions.0.transformer_blocks.3.attn2`` -> ``down_blocks.1.attentions.0``."""
    m = _LAYER_RE.match(layer_name)
    if not m:
        raise AdapterError(
            f"{layer_name!r} is not a cross-attention layer name (…attentions.N.transformer_blocks.I.attn2)"
        )
    return m.group(1)


def layer_name(block: str, index: int) -> str:
    """Diffusers module name of transformer ``index``'s cross-attention inside ``block``."""
    return f"{block}.transformer_blocks.{index}.attn2"


def diffusers_block(kind: str, block_id: int, num_res_blocks: Sequence[int]) -> str:
    """Diffusers block name of ComfyUI's ``(kind, block_id)`` for a UNet with ``num_res_blocks`` per level."""
    levels = len(num_res_blocks)
    if kind == "middle":
        return "mid_block.attentions.0"
    if kind == "input":
        idx = 1  # input_blocks[0] is conv_in
        for level, n in enumerate(num_res_blocks):
            for k in range(n):
                if idx == block_id:
                    return f"down_blocks.{level}.attentions.{k}"
                idx += 1
            idx += level < levels - 1  # the downsampler closing every level but the last
        raise AdapterError(f"input block {block_id} holds no attention for num_res_blocks {list(num_res_blocks)}")
    if kind == "output":
        idx = 0
        for up_level, n in enumerate(reversed(num_res_blocks)):
            for k in range(n + 1):
                if idx == block_id:
                    return f"up_blocks.{up_level}.attentions.{k}"
                idx += 1
        raise AdapterError(f"output block {block_id} does not exist for num_res_blocks {list(num_res_blocks)}")
    raise AdapterError(f"unknown ComfyUI block kind {kind!r}: expected input, middle or output")


def sdxl_layers(
    model_channels: int = 320,
    channel_mult: Sequence[int] = (1, 2, 4),
    num_res_blocks: Sequence[int] = (2, 2, 2),
    transformer_depth: Sequence[int] = (0, 2, 10),
    transformer_depth_middle: int = 10,
) -> list[AttentionLayer]:
    """The 70 cross-attention layers of an SDXL-layout UNet in UNet order (input, middle, output)."""
    keys: list[tuple[ComfyKey, int]] = []
    idx = 1
    for level, n in enumerate(num_res_blocks):
        for _ in range(n):
            dim = model_channels * channel_mult[level]
            keys += [(("input", idx, i), dim) for i in range(transformer_depth[level])]
            idx += 1
        idx += level < len(num_res_blocks) - 1
    dim_mid = model_channels * channel_mult[-1]
    keys += [(("middle", 0, i), dim_mid) for i in range(transformer_depth_middle)]
    idx = 0
    for level in reversed(range(len(num_res_blocks))):
        for _ in range(num_res_blocks[level] + 1):
            keys += [
                (("output", idx, i), model_channels * channel_mult[level]) for i in range(transformer_depth[level])
            ]
            idx += 1
    return [AttentionLayer(layer_name(diffusers_block(k[0], k[1], num_res_blocks), k[2]), k, dim) for k, dim in keys]


def blocks_in(layers: Iterable[AttentionLayer]) -> list[str]:
    """Distinct block names of ``layers`` in UNet order."""
    return list(dict.fromkeys(layer.block for layer in layers))


def parse_blocks(text: str) -> list[str] | None:
    """User block list (comma/space separated diffusers names) to names; ``"from file"``/empty -> None."""
    t = text.strip()
    if not t or t.lower() in ("from file", "from_file", "file"):
        return None
    names = [s for s in re.split(r"[\s,;]+", t) if s]
    bad = [n for n in names if not re.fullmatch(r"(down_blocks\.\d+|up_blocks\.\d+|mid_block)\.attentions\.\d+", n)]
    if bad:
        raise AdapterError(
            f"{bad[0]!r} is not a block name: expected names such as up_blocks.0.attentions.1, "
            "down_blocks.2.attentions.0 or mid_block.attentions.0 (or 'from file')"
        )
    return list(dict.fromkeys(names))
