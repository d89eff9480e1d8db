"""The cross-attention layers a model offers the Palette-Adapter, named as users know them (README.md,
"The Palette-Adapter in ComfyUI").

A *block* is one transformer stack (``down_blocks.1.attentions.0``); a *layer* is one cross-attention
inside it (``down_blocks.1.attentions.0.transformer_blocks.3.attn2``). ComfyUI addresses the same layer
as ``("input", 4, 3)``. Every host (ComfyUI's UNet, a diffusers UNet, the SDXL table below) describes its
layers as one :class:`AttentionLayers` value, built by :func:`attention_layers` from the model's own
modules; selection, the distinct-blocks list, the K/V projection names and the "does this adapter fit
this model" check are written here once, for all of them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from .errors import AdapterError

ComfyKey = tuple[str, int, int]

CONTEXT_DIM = 2048  # SDXL's text features (CLIP-L 768 + CLIP-G 1280): the width the adapter's tokens have
BASE_MODEL = "sdxl"  # the paper's model; the only base the adapter is defined for
DEFAULT_BLOCKS = ("up_blocks.0.attentions.1",)  # paper §4: "a single intermediate block"
KV_PROJECTIONS = ("to_k", "to_v")  # the attention modules' text projections and the adapter's own
_LAYER_RE = re.compile(r"^(.*\.attentions\.\d+)\.transformer_blocks\.(\d+)\.attn2$")
_BLOCK_RE = re.compile(r"(down_blocks\.\d+|up_blocks\.\d+|mid_block)\.attentions\.\d+")
NEEDS = "an SDXL model (a UNet whose cross-attention reads 2048-dim text features, with SDXL's block layout)"


@dataclass(frozen=True)
class AttentionLayer:
    """One cross-attention layer: diffusers ``name``, inner width ``dim`` (= heads x 64), the host's module
    ``path`` (empty: same as ``name``) and ComfyUI ``comfy_key`` (None outside ComfyUI)."""

    name: str
    comfy_key: ComfyKey | None
    dim: int
    path: str = ""

    @property
    def block(self) -> str:
        """The diffusers name of the block holding this layer."""
        return block_of(self.name)

    @property
    def module_path(self) -> str:
        """Where the layer's module sits in the host model (``get_submodule``)."""
        return self.path or self.name


@dataclass(frozen=True)
class AttentionLayers(Sequence[AttentionLayer]):
    """The cross-attention layers of one model (UNet order) and the text width ``context_dim`` they read."""

    layers: tuple[AttentionLayer, ...]
    context_dim: int
    model: str = "this model"

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[AttentionLayer]:
        return iter(self.layers)

    def __getitem__(self, index):  # Sequence protocol: an int or a slice
        return self.layers[index]

    @property
    def dims(self) -> dict[str, int]:
        """``{diffusers layer name: inner dim}``: what an adapter for these layers is built from."""
        return {x.name: x.dim for x in self.layers}

    @property
    def blocks(self) -> list[str]:
        """Distinct block names in UNet order."""
        return blocks_in(self.layers)

    def layer(self, name: str) -> AttentionLayer:
        """The layer called ``name``, or an AdapterError listing the model's blocks."""
        for x in self.layers:
            if x.name == name:
                return x
        raise AdapterError(f"layer {name} does not exist in {self.model}; it has blocks {self.blocks}")

    def select(self, blocks: Sequence[str] | None) -> AttentionLayers:
        """The layers inside ``blocks`` (all when None); an unknown block is an error listing the model's."""
        names = set(select_layers([x.name for x in self.layers], blocks, self.model))
        return AttentionLayers(tuple(x for x in self.layers if x.name in names), self.context_dim, self.model)

    def check_fits(self, layer_dims: Mapping[str, int], context_dim: int, base: str = BASE_MODEL) -> None:
        """Raise an AdapterError unless every ``{layer: dim}`` of an adapter exists here with that width and
        its tokens have this model's text width (the one "does this file fit this model" check)."""
        hint = f": this adapter was made for base model {base!r}"
        if context_dim != self.context_dim:
            raise AdapterError(
                f"the adapter's tokens are {context_dim}-dim, {self.model}'s cross-attention reads "
                f"{self.context_dim}-dim text features{hint}"
            )
        own = self.dims
        for name, dim in layer_dims.items():
            if name not in own:
                raise AdapterError(f"adapter layer {name} does not exist in {self.model}{hint}; it has {self.blocks}")
            if own[name] != dim:
                raise AdapterError(f"adapter layer {name} has inner dim {dim}, {self.model} has {own[name]}{hint}")


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


def is_layer_name(name: str) -> bool:
    """Whether a module name is a diffusers cross-attention layer (``…attentions.N.transformer_blocks.I.attn2``)."""
    return _LAYER_RE.match(name) is not None


def kv_file_keys(layer: str) -> tuple[str, str]:
    """The file keys of one layer's ``W_k, W_v`` (README.md, "The Palette-Adapter in ComfyUI")."""
    return tuple(f"layers.{layer}.{p}.weight" for p in KV_PROJECTIONS)  # type: ignore[return-value]


def text_projections(attn: nn.Module) -> tuple[Tensor, Tensor]:
    """The text ``to_k``/``to_v`` weights ``[C, context]`` of one cross-attention module (ComfyUI or diffusers)."""
    try:
        return tuple(getattr(attn, p).weight for p in KV_PROJECTIONS)  # type: ignore[return-value]
    except AttributeError as e:
        raise AdapterError(f"{type(attn).__name__} has no {'/'.join(KV_PROJECTIONS)} text projections") from e


def text_kv(model: nn.Module, layers: Iterable[AttentionLayer]) -> dict[str, tuple[Tensor, Tensor]]:
    """Each layer's text ``to_k``/``to_v`` weights (float32 copies), to initialise the adapter's (paper §3.2)."""
    out = {}
    for x in layers:
        k, v = text_projections(model.get_submodule(x.module_path))
        out[x.name] = (k.detach().float().clone(), v.detach().float().clone())
    return out


def attention_layers(
    entries: Iterable[tuple[str, ComfyKey | None, str, nn.Module]], model: str, context_dim: int | None = CONTEXT_DIM
) -> AttentionLayers:
    """Describe ``(name, comfy_key, module path, attention module)`` entries; refuse what the adapter cannot use.

    ``context_dim`` is the text width required (SDXL's 2048); ``None`` accepts the model's own (toys, tests).
    """
    found: list[AttentionLayer] = []
    widths: set[int] = set()
    for name, key, path, attn in entries:
        if getattr(attn, "norm_q", None) is not None or getattr(attn, "norm_k", None) is not None:
            raise AdapterError(f"the palette adapter needs {NEEDS}; {model}'s {name} normalises q/k, SDXL's does not")
        k, _ = text_projections(attn)
        dim, context = (int(s) for s in k.shape)
        if context_dim is not None and context != context_dim:
            raise AdapterError(
                f"the palette adapter needs {NEEDS}; {model}'s cross-attention reads {context}-dim text features "
                "(SD1.5 uses 768, SD2 1024)"
            )
        widths.add(context)
        found.append(AttentionLayer(name, key, dim, "" if path == name else path))
    if not found:
        raise AdapterError(f"the palette adapter needs {NEEDS}; {model} has no cross-attention layers")
    if len(widths) > 1:
        raise AdapterError(f"{model}'s cross-attention layers read different text widths {sorted(widths)}")
    return AttentionLayers(tuple(found), widths.pop(), model)


def diffusers_unet_layers(
    unet: nn.Module, context_dim: int | None = CONTEXT_DIM, model: str = "this UNet"
) -> AttentionLayers:
    """The cross-attention layers of a diffusers ``UNet2DConditionModel``, from its own module names."""
    entries = ((n, None, n, m) for n, m in unet.named_modules() if is_layer_name(n) and hasattr(m, "to_k"))
    return attention_layers(entries, model, context_dim)


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
) -> AttentionLayers:
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
    layers = (AttentionLayer(layer_name(diffusers_block(k[0], k[1], num_res_blocks), k[2]), k, d) for k, d in keys)
    return AttentionLayers(tuple(layers), CONTEXT_DIM, "SDXL")


def blocks_in(layers: Iterable[AttentionLayer | str]) -> list[str]:
    """Distinct block names of layers (or layer names), in their order."""
    return list(dict.fromkeys(block_of(x if isinstance(x, str) else x.name) for x in layers))


def select_layers(names: Sequence[str], blocks: Sequence[str] | None, owner: str = "this adapter file") -> list[str]:
    """The layer names inside ``blocks`` (all when None); an error names a block ``owner`` lacks."""
    if blocks is None:
        return list(names)
    have = blocks_in(names)
    missing = [b for b in blocks if b not in have]
    if missing:
        raise AdapterError(f"block {missing[0]} is not in {owner}; it has {have}")
    chosen = set(blocks)
    return [n for n in names if block_of(n) in chosen]


def parse_blocks(text: str) -> list[str] | None:
    """User block list (comma/space separated diffusers names) to names; ``"from file"``/empty -> None."""
    t = text.strip()
    if not t or t.lower() in ("from file", "from_file", "file"):
        return None
    names = [s for s in re.split(r"[\s,;]+", t) if s]
    bad = [n for n in names if not _BLOCK_RE.fullmatch(n)]
    if bad:
        raise AdapterError(
            f"{bad[0]!r} is not a block name: expected names such as up_blocks.0.attentions.1, "
            "down_blocks.2.attentions.0 or mid_block.attentions.0 (or 'from file')"
        )
    return list(dict.fromkeys(names))
