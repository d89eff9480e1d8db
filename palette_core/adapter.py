"""The Palette-Adapter (paper §3.2, docs/design.md §6): colour condition -> 5 tokens -> decoupled cross-attention.

Host-independent: the diffusers attention processor of the training script calls
:func:`decoupled_attention` with this module's weights; the ComfyUI attn2 patch (nodes/adapter_patch.py)
calls its two halves, :func:`adapter_kv` (cached per layer) and the host's attention.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import as_tensor
from .blocks import (
    BASE_MODEL,
    CONTEXT_DIM,
    DEFAULT_BLOCKS,
    AttentionLayers,
    blocks_in,
    kv_file_keys,
    sdxl_layers,
    select_layers,
)
from .errors import AdapterError, InputShapeError
from .histogram import HISTOGRAM_ID, MAX_ENTROPY, NUM_BINS, entropy, palette_histogram

NUM_COLOR_TOKENS = 4
NUM_TOKENS = NUM_COLOR_TOKENS + 1
NUM_SCALARS = 7
KIND_NONE, KIND_PALETTE, KIND_HISTOGRAM = 0, 1, 2
KIND_NAMES = {KIND_NONE: "unconditioned", KIND_PALETTE: "palette", KIND_HISTOGRAM: "histogram"}
FILE_FORMAT = "palette-adapter"
FILE_VERSION = "4"
# what the versions change in the scalar token; older files load and keep theirs (docs/design.md §6)
SCALAR_NORM_VERSION = "1"  # a LayerNorm on the scalar token
SCALAR_GAIN = 10.0  # versions 3 and 4 multiply the distance and entropy features by this before the projection
SCALAR_GAIN_COLUMNS = (3, 5)  # distance and entropy / log2(4080) in ColorCondition.scalar_features


@dataclass(frozen=True)
class TokenLayout:
    """What a file version changes in the scalar token: a LayerNorm after it, a gain on its two values, and
    whether its value is added to every query instead of competing with the colour tokens in one softmax."""

    scalar_norm: bool
    scalar_gain: float
    scalar_added: bool = False


LAYOUTS = {
    SCALAR_NORM_VERSION: TokenLayout(scalar_norm=True, scalar_gain=1.0),
    "2": TokenLayout(scalar_norm=False, scalar_gain=1.0),
    "3": TokenLayout(scalar_norm=False, scalar_gain=SCALAR_GAIN),
    FILE_VERSION: TokenLayout(scalar_norm=False, scalar_gain=SCALAR_GAIN, scalar_added=True),
}
READABLE_VERSIONS = tuple(LAYOUTS)
MAX_FILE_BYTES = 8 << 30  # all 70 SDXL layers in float32 are ~1.5 GB; anything far larger is not an adapter

Attention = Callable[[Tensor, Tensor, Tensor, int], Tensor]


@dataclass(frozen=True, eq=False)
class ColorCondition:
    """What the adapter sees per image (docs/design.md §6): histogram, kind, optional distance and entropy.

    Tensors are batched: ``histogram [B, 4080]``, ``kind [B]``, ``distance [B]`` and ``entropy [B]``
    (bits), where NaN means *absent*. ``null_distance``/``null_entropy`` are the reference values the
    null (negative) branch carries when a control is *relative* (paper §3.4); None otherwise.
    """

    histogram: Tensor
    kind: Tensor
    distance: Tensor
    entropy: Tensor
    null_distance: float | None = None
    null_entropy: float | None = None

    def __post_init__(self) -> None:
        b = self.histogram.shape[0]
        if self.histogram.ndim != 2 or self.histogram.shape[1] != NUM_BINS:
            raise InputShapeError(f"ColorCondition.histogram: shape {tuple(self.histogram.shape)}; expected [B, 4080]")
        for name in ("kind", "distance", "entropy"):
            if getattr(self, name).shape != (b,):
                raise InputShapeError(
                    f"ColorCondition.{name}: shape {tuple(getattr(self, name).shape)}; expected [{b}]"
                )

    @property
    def batch_size(self) -> int:
        """Number of conditions (1 = shared by every latent of a batch)."""
        return int(self.histogram.shape[0])

    def scalar_features(self) -> Tensor:
        """``[one_hot(kind) (3), distance, has_distance, entropy / log2(4080), has_entropy]`` (docs/design.md §6)."""
        one_hot = F.one_hot(self.kind.long(), 3).to(self.histogram.dtype)
        has_d = torch.isfinite(self.distance)
        has_e = torch.isfinite(self.entropy)
        d = torch.where(has_d, self.distance, 0.0).to(self.histogram.dtype)
        e = torch.where(has_e, self.entropy / MAX_ENTROPY, 0.0).to(self.histogram.dtype)
        return torch.cat([one_hot, torch.stack([d, has_d.to(d.dtype), e, has_e.to(e.dtype)], dim=-1)], dim=-1)

    def with_controls(
        self,
        distance: float | None = None,
        entropy: float | None = None,
        null_distance: float | None = None,
        null_entropy: float | None = None,
    ) -> ColorCondition:
        """Set distance/entropy (absolute; or relative when a null reference is given); None leaves them."""
        out = self
        if distance is not None:
            out = replace(out, distance=torch.full_like(out.distance, float(distance)), null_distance=null_distance)
        if entropy is not None:
            out = replace(out, entropy=torch.full_like(out.entropy, float(entropy)), null_entropy=null_entropy)
        return out

    def select(self, index: int) -> ColorCondition:
        """The condition of one batch element (as a batch of 1)."""
        sl = slice(index, index + 1)
        return replace(
            self, histogram=self.histogram[sl], kind=self.kind[sl], distance=self.distance[sl], entropy=self.entropy[sl]
        )

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> ColorCondition:
        """Move the float tensors (and kind) to a device / float dtype."""
        return replace(
            self,
            histogram=self.histogram.to(device=device, dtype=dtype),
            kind=self.kind.to(device=device),
            distance=self.distance.to(device=device, dtype=dtype),
            entropy=self.entropy.to(device=device, dtype=dtype),
        )

    @staticmethod
    def cat(conditions: Sequence[ColorCondition]) -> ColorCondition:
        """Concatenate conditions along the batch (the null references of the first are kept)."""
        if not conditions:
            raise InputShapeError("no conditions to concatenate")
        first = conditions[0]
        return replace(
            first,
            histogram=torch.cat([c.histogram for c in conditions]),
            kind=torch.cat([c.kind for c in conditions]),
            distance=torch.cat([c.distance for c in conditions]),
            entropy=torch.cat([c.entropy for c in conditions]),
        )


def _condition(hist: Tensor, kind: int) -> ColorCondition:
    b = hist.shape[0]
    nan = torch.full((b,), math.nan, dtype=torch.float32, device=hist.device)
    return ColorCondition(hist.float(), torch.full((b,), kind, dtype=torch.long, device=hist.device), nan, nan.clone())


def palette_condition(colors: Tensor, weights: Tensor | None = None) -> ColorCondition:
    """Palette condition: the palette histogram, kind 1, no scalars (paper §3.1); ``[N,3]`` or ``[B,N,3]``."""
    hist = palette_histogram(colors, weights)
    return _condition(hist.reshape(-1, NUM_BINS), KIND_PALETTE)


def histogram_condition(hist: Tensor) -> ColorCondition:
    """Full-histogram condition (kind 2) from ``[4080]`` or ``[B, 4080]`` non-negative bins (normalised)."""
    h = as_tensor(hist, "hist").float()
    if h.ndim not in (1, 2) or h.shape[-1] != NUM_BINS or not bool(torch.isfinite(h).all()) or bool((h < 0).any()):
        raise InputShapeError(f"hist: expected finite non-negative [4080] or [B, 4080] bins, got {tuple(h.shape)}")
    h = h.reshape(-1, NUM_BINS)
    total = h.sum(-1, keepdim=True)
    if bool((total <= 0).any()):
        raise InputShapeError("hist: an all-zero histogram is not a histogram condition; use null_condition()")
    return _condition(h / total, KIND_HISTOGRAM)


def null_condition(batch: int = 1, device: torch.device | str | None = None) -> ColorCondition:
    """The unconditioned input: zero histogram, kind 0, no scalars (docs/design.md §6)."""
    return _condition(torch.zeros(batch, NUM_BINS, device=device), KIND_NONE)


def negative_condition(colors: Tensor, weights: Tensor | None = None, weight: float = 1.0) -> ColorCondition:
    """Negative palette (paper §3.3): its histogram scaled by ``weight``, not renormalised (docs/design.md §6)."""
    if not (math.isfinite(weight) and weight >= 0):
        raise InputShapeError(f"weight: {weight} must be finite and >= 0")
    cond = palette_condition(colors, weights)
    return replace(cond, histogram=cond.histogram * float(weight))


def image_scalars(image_hist: Tensor, condition_hist: Tensor) -> tuple[Tensor, Tensor]:
    """Training scalars (paper §3.2): QC distance of the condition to the image histogram, image entropy."""
    from .distance import quadratic_chi

    return quadratic_chi(condition_hist, image_hist).float(), entropy(image_hist).float()


def branch_conditions(positive: ColorCondition, negative: ColorCondition | None = None):
    """Conditions of the cond and uncond CFG branches (paper Eq. 1, §3.4; docs/design.md §6 "Guidance").

    The uncond branch gets the negative condition, or the null condition; relative controls put the
    positive condition's reference value on it; an unset control stays absent on both branches.
    """
    neg = negative if negative is not None else null_condition(1, positive.histogram.device)
    nan = torch.full((neg.batch_size,), math.nan, device=neg.histogram.device)
    d = torch.full_like(nan, positive.null_distance) if positive.null_distance is not None else nan
    e = torch.full_like(nan, positive.null_entropy) if positive.null_entropy is not None else nan
    return positive, replace(neg, distance=d, entropy=e, null_distance=None, null_entropy=None)


CONTROL_MODES = ("off", "absolute", "relative")


def apply_controls(
    condition: ColorCondition,
    entropy_mode: str = "off",
    entropy: float = 0.0,
    entropy_reference: float = 0.0,
    distance_mode: str = "off",
    distance: float = 0.0,
    distance_reference: float = 0.0,
) -> ColorCondition:
    """Paper §3.4 controls: absolute sets the value; relative, reference + change (cond) and reference (uncond)."""
    for name, mode in (("entropy_mode", entropy_mode), ("distance_mode", distance_mode)):
        if mode not in CONTROL_MODES:
            raise InputShapeError(f"{name}: {mode!r} is not one of {', '.join(CONTROL_MODES)}")
    values = {"entropy": entropy, "entropy_reference": entropy_reference}
    values.update(distance=distance, distance_reference=distance_reference)
    for name, value in values.items():
        if not math.isfinite(value):
            raise InputShapeError(f"{name}: {value} is not a finite number")
    for name, mode, value in (("entropy", entropy_mode, entropy), ("distance", distance_mode, distance)):
        if mode == "absolute" and value < 0:
            raise InputShapeError(f"{name}: absolute {value} is negative; use relative mode for a change")
    out = condition
    if entropy_mode == "absolute":
        out = out.with_controls(entropy=entropy)
    elif entropy_mode == "relative":
        # entropy (Eq. 2) is never negative, like a distance: a change below -reference asks for 0 bits
        out = out.with_controls(entropy=max(0.0, entropy_reference + entropy), null_entropy=entropy_reference)
    if distance_mode == "absolute":
        out = out.with_controls(distance=distance)
    elif distance_mode == "relative":
        out = out.with_controls(distance=max(0.0, distance_reference + distance), null_distance=distance_reference)
    return out


def _module_key(layer: str) -> str:
    return layer.replace(".", "__")


class ScalarProjection(nn.Linear):
    """``Linear(7 -> context_dim)`` of the scalar features, their distance and entropy times ``gain`` (§6)."""

    def __init__(self, context_dim: int, gain: float = 1.0) -> None:
        super().__init__(NUM_SCALARS, context_dim)
        self.gain = gain

    def forward(self, features: Tensor) -> Tensor:
        """The scalar token of ``[..., 7]`` features (docs/design.md §6, "Tokens")."""
        if self.gain != 1.0:
            scale = torch.ones(NUM_SCALARS, device=features.device, dtype=features.dtype)
            scale[list(SCALAR_GAIN_COLUMNS)] = self.gain
            features = features * scale
        return super().forward(features)


class PaletteAdapter(nn.Module):
    """Token projections (4 colour + 1 scalar token) and per-layer ``W_k, W_v`` (paper Fig. 3, docs/design.md §6)."""

    def __init__(self, layers: Mapping[str, int], context_dim: int = CONTEXT_DIM, version: str = FILE_VERSION) -> None:
        super().__init__()
        if not layers:
            raise AdapterError("an adapter needs at least one cross-attention layer")
        if version not in LAYOUTS:
            raise AdapterError(f"adapter version {version!r}: this pack makes versions {', '.join(LAYOUTS)}")
        layout = LAYOUTS[version]
        self.file_version = version  # the file format version its token layout is written as (LAYOUTS)
        self.context_dim = context_dim
        self.layer_dims = dict(layers)
        self.color_proj = nn.Linear(NUM_BINS, NUM_COLOR_TOKENS * context_dim)
        self.color_norm = nn.LayerNorm(context_dim)
        # the scalar token is not normalised (paper Fig. 3 normalises the histogram's tokens) and its two values
        # are scaled up: with a LayerNorm, or with values spanning a third of a unit beside constant features, the
        # entropy and distance moved it too little to learn (docs/training.md, "Toy run")
        self.scalar_proj = ScalarProjection(context_dim, layout.scalar_gain)
        self.scalar_norm = nn.LayerNorm(context_dim) if layout.scalar_norm else None
        # version 4: the scalar token's value is added to every query; in one softmax with the colour tokens it
        # won a layer's attention by chance, and a toy run either read it there or stalled (docs/training.md)
        self.scalar_added = layout.scalar_added
        self.to_k = nn.ModuleDict({_module_key(n): nn.Linear(context_dim, d, bias=False) for n, d in layers.items()})
        self.to_v = nn.ModuleDict({_module_key(n): nn.Linear(context_dim, d, bias=False) for n, d in layers.items()})

    @property
    def layers(self) -> list[str]:
        """Diffusers names of the cross-attention layers this adapter has weights for."""
        return list(self.layer_dims)

    @property
    def blocks(self) -> list[str]:
        """Diffusers names of the blocks covered."""
        return blocks_in(self.layer_dims)

    def tokens(self, condition: ColorCondition) -> Tensor:
        """The 5 adapter tokens ``[B, 5, context_dim]`` of a condition (paper §3.2)."""
        p = self.color_proj.weight
        hist = condition.histogram.to(device=p.device, dtype=p.dtype)
        color = self.color_norm(self.color_proj(hist).reshape(-1, NUM_COLOR_TOKENS, self.context_dim))
        scalars = condition.scalar_features().to(device=p.device, dtype=p.dtype)
        scalar = self.scalar_proj(scalars)
        if self.scalar_norm is not None:
            scalar = self.scalar_norm(scalar)
        return torch.cat([color, scalar.unsqueeze(1)], dim=1)

    def kv_weights(self, layer: str) -> tuple[Tensor, Tensor]:
        """``(W_k, W_v)`` of one layer, each ``[C, context_dim]``."""
        key = _module_key(layer)
        if key not in self.to_k:
            raise AdapterError(f"this adapter has no weights for layer {layer}; it covers {self.blocks}")
        return self.to_k[key].weight, self.to_v[key].weight

    def token_modules(self) -> list[str]:
        """Names of the modules that make the tokens (shared by every layer)."""
        return ["color_proj", "color_norm", "scalar_proj"] + ([] if self.scalar_norm is None else ["scalar_norm"])

    def file_tensors(self) -> dict[str, Tensor]:
        """Tensors under the docs/design.md §6 file names."""
        out = {
            f"{name}.{p}": getattr(self, name).get_parameter(p).detach()
            for name in self.token_modules()
            for p in ("weight", "bias")
        }
        for layer in self.layer_dims:
            for key, w in zip(kv_file_keys(layer), self.kv_weights(layer)):
                out[key] = w.detach()
        return out

    def subset(self, layers: Sequence[str]) -> PaletteAdapter:
        """A frozen copy holding the token projections and only ``layers`` (same device and dtype)."""
        out = PaletteAdapter({name: self.layer_dims[name] for name in layers}, self.context_dim, self.file_version)
        copy_weights(out, self, layers)
        p = next(self.parameters())
        return out.to(device=p.device, dtype=p.dtype).eval().requires_grad_(False)


def copy_weights(dst: PaletteAdapter, src: PaletteAdapter, layers: Iterable[str]) -> None:
    """Copy ``src``'s token projections and the ``W_k, W_v`` of ``layers`` into ``dst`` (in place)."""
    if dst.file_version != src.file_version:
        raise AdapterError(
            f"cannot copy a version {src.file_version} adapter's tokens into a version {dst.file_version} one "
            "(the versions make or attend the scalar token differently: docs/design.md §6)"
        )
    with torch.no_grad():
        for module in src.token_modules():
            getattr(dst, module).load_state_dict(getattr(src, module).state_dict())
        for name in layers:
            for d, w in zip(dst.kv_weights(name), src.kv_weights(name)):
                d.copy_(w)


def split_heads(x: Tensor, heads: int) -> Tensor:
    """``[B, S, C]`` as ``[B, heads, S, C / heads]``, the layout of scaled dot-product attention (a view)."""
    return x.reshape(x.shape[0], x.shape[1], heads, x.shape[2] // heads).transpose(1, 2)


def sdpa_attention(q: Tensor, k: Tensor, v: Tensor, heads: int) -> Tensor:
    """Multi-head attention on ``[B, T, C]`` tensors (the default when no host attention is given)."""
    return head_attention(q, split_heads(k, heads), split_heads(v, heads))


def attend_tokens(attend: Callable[[Tensor, Tensor], Tensor], k: Tensor, v: Tensor, scalar_added: bool) -> Tensor:
    """``attend(k, v)`` over the adapter's keys and values (tokens on dim -2: ``[B, 5, C]`` or ``[B, h, 5, C / h]``);
    with ``scalar_added`` (version 4) over the colour tokens only, plus the scalar token's value (docs/design.md §6)."""
    if not scalar_added:
        return attend(k, v)
    colours = slice(0, NUM_COLOR_TOKENS)
    return attend(k[..., colours, :], v[..., colours, :]) + v[..., NUM_COLOR_TOKENS:, :]


def head_attention(q: Tensor, k: Tensor, v: Tensor, scalar_added: bool = False) -> Tensor:
    """Attention of ``q [B, T, C]`` over keys and values already split into heads ``[B, h, S, C / h]`` (Eq. 5);
    with ``scalar_added`` over the colour tokens only, plus the scalar token's value (docs/design.md §6)."""
    b, t, c = q.shape
    qh = split_heads(q, k.shape[1])
    out = attend_tokens(lambda k_, v_: F.scaled_dot_product_attention(qh, k_, v_), k, v, scalar_added)
    return out.transpose(1, 2).reshape(b, t, c)


def decoupled_attention(
    q: Tensor,
    tokens: Tensor,
    w_k: Tensor,
    w_v: Tensor,
    heads: int,
    attention: Attention | None = None,
    scalar_added: bool = False,
) -> Tensor:
    """The adapter's extra attention ``Attn(q, W_k tokens, W_v tokens)`` (IP-Adapter Eq. 5; docs/design.md §6).

    ``q`` is the layer's own projected query ``[B, T, C]``; ``tokens`` ``[B, 5, 2048]`` (or ``[1, 5, 2048]``,
    broadcast). With ``scalar_added`` (version 4) only the colour tokens are attended and the scalar token's
    value ``W_v token`` is added to every query. The caller adds ``scale *`` this to the text attention output.
    """
    if tokens.shape[0] != q.shape[0]:
        if tokens.shape[0] != 1:
            raise InputShapeError(f"tokens: batch {tokens.shape[0]} does not match the query batch {q.shape[0]}")
        tokens = tokens.expand(q.shape[0], -1, -1)
    k, v = adapter_kv(tokens, w_k, w_v, q.dtype)
    if attention is None:
        return head_attention(q, split_heads(k, heads), split_heads(v, heads), scalar_added)
    return attend_tokens(lambda k_, v_: attention(q, k_, v_, heads), k, v, scalar_added)


def token_attention(q: Tensor, tokens: Tensor, w_k: Tensor, heads: int) -> Tensor:
    """Each query's attention weights over the adapter's tokens ``[B, heads, T, 5]`` (softmax of IP-Adapter Eq. 5)."""
    if tokens.shape[0] != q.shape[0]:
        tokens = tokens.expand(q.shape[0], -1, -1)
    k = split_heads(F.linear(tokens.to(q.dtype), w_k.to(q.dtype)), heads)
    return torch.softmax(split_heads(q, heads) @ k.transpose(-1, -2) / math.sqrt(k.shape[-1]), dim=-1)


def token_shares(q: Tensor, tokens: Tensor, w_k: Tensor, w_v: Tensor, heads: int, scalar_added: bool = False) -> Tensor:
    """Each token's share of each query's adapter output ``[B, heads, T, 5]``, summing to 1 (docs/design.md §6).

    In one softmax (versions 1-3) the attention weights; with ``scalar_added`` (version 4) the scalar token
    takes ``|v_s| / (|colour attention| + |v_s|)`` of the output norm and the colour tokens their weights of
    the rest."""
    weights = token_attention(q, tokens, w_k, heads)
    if not scalar_added:
        return weights
    if tokens.shape[0] != q.shape[0]:
        tokens = tokens.expand(q.shape[0], -1, -1)
    colours = weights[..., :NUM_COLOR_TOKENS]
    colours = colours / colours.sum(dim=-1, keepdim=True)  # the softmax over the colour tokens alone
    v = split_heads(F.linear(tokens.to(q.dtype), w_v.to(q.dtype)), heads)
    colour_norm = (colours @ v[:, :, :NUM_COLOR_TOKENS]).norm(dim=-1, keepdim=True)
    scalar_norm = v[:, :, NUM_COLOR_TOKENS:].norm(dim=-1, keepdim=True)
    share = scalar_norm / (colour_norm + scalar_norm).clamp_min(torch.finfo(q.dtype).tiny)
    return torch.cat([colours * (1 - share), share], dim=-1)


def adapter_kv(tokens: Tensor, w_k: Tensor, w_v: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """The adapter's keys and values ``(W_k tokens, W_v tokens)`` in ``dtype`` (IP-Adapter Eq. 5; paper §3.2)."""
    tokens = tokens.to(dtype=dtype)
    return F.linear(tokens, w_k.to(dtype=dtype)), F.linear(tokens, w_v.to(dtype=dtype))


def init_adapter(
    layers: Mapping[str, int],
    seed: int = 0,
    text_kv: Mapping[str, tuple[Tensor, Tensor]] | None = None,
    context_dim: int = CONTEXT_DIM,
    version: str = FILE_VERSION,
) -> PaletteAdapter:
    """A new adapter: seeded random projections; ``W_k, W_v`` copied from the text ``to_k/to_v`` when given."""
    g = torch.Generator().manual_seed(seed)
    adapter = PaletteAdapter(layers, context_dim, version)
    with torch.no_grad():
        for lin in (adapter.color_proj, adapter.scalar_proj):
            bound = 1.0 / math.sqrt(lin.in_features)
            lin.weight.copy_(torch.empty_like(lin.weight).uniform_(-bound, bound, generator=g))
            lin.bias.copy_(torch.empty_like(lin.bias).uniform_(-bound, bound, generator=g))
        # the gained columns start smaller by the gain: the same token at step 0, only their learning rate grows
        # (started as large, the token outweighed the colour tokens and one toy run learnt no colour)
        adapter.scalar_proj.weight[:, list(SCALAR_GAIN_COLUMNS)] /= adapter.scalar_proj.gain
        for layer, dim in layers.items():
            wk, wv = adapter.kv_weights(layer)
            if text_kv is not None and layer in text_kv:
                wk.copy_(text_kv[layer][0])
                wv.copy_(text_kv[layer][1])
            else:
                wk.copy_(torch.randn(dim, context_dim, generator=g) / math.sqrt(context_dim))
                wv.copy_(torch.randn(dim, context_dim, generator=g) / math.sqrt(context_dim))
    return adapter


def save_adapter(adapter: PaletteAdapter, path: str | os.PathLike, trained_steps: int = 0, **metadata: str) -> Path:
    """Write the docs/design.md §6 ``.safetensors`` file atomically (temporary file, then rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise AdapterError(f"{path.name}: adapters are written as .safetensors files")
    meta = {
        "format": FILE_FORMAT,
        "version": adapter.file_version,
        "base": BASE_MODEL,
        "histogram": HISTOGRAM_ID,
        "layers": json.dumps(adapter.layers),
        "trained_steps": str(int(trained_steps)),
        **{k: str(v) for k, v in metadata.items()},
    }
    tensors = {k: v.contiguous().cpu() for k, v in adapter.file_tensors().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _expect(found: Sequence[int], expected: Sequence[int], key: str, hint: str) -> None:
    if tuple(found) != tuple(expected):
        raise AdapterError(f"{key}: shape {list(found)} found, {list(expected)} expected{hint}")


MAX_TRAINED_STEPS = 10**9  # far beyond any training run (the paper's: 10^5); larger values are corrupt metadata


def _trained_steps(text: str, name: str) -> int:
    """The ``trained_steps`` metadata as a count, or an AdapterError naming the file and what is expected."""
    t = (text or "0").strip()
    if not (t.isascii() and t.isdigit() and len(t) <= 10 and int(t) <= MAX_TRAINED_STEPS):
        shown = t if len(t) <= 40 else t[:40] + "…"
        raise AdapterError(
            f"{name}: metadata trained_steps {shown!r} is not a step count (a whole number from 0 to "
            f"{MAX_TRAINED_STEPS}); the file's metadata is damaged: write it again with save_adapter"
        )
    return int(t)


def read_adapter_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of an adapter file, after checking it is a ``.safetensors`` palette adapter."""
    from safetensors import safe_open

    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise AdapterError(
            f"{path.name}: only .safetensors adapter files are loaded (never pickled .bin/.pt/.ckpt files); "
            "ask for a .safetensors export or convert it yourself in a trusted environment"
        )
    if not path.is_file():
        raise AdapterError(f"{path}: no such file")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise AdapterError(f"{path.name}: {path.stat().st_size} bytes is too large for a palette adapter")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise AdapterError(f"{path.name}: not a readable .safetensors file ({e})") from e
    if meta.get("format") != FILE_FORMAT:
        raise AdapterError(f"{path.name}: metadata format {meta.get('format')!r}; expected {FILE_FORMAT!r}")
    if meta.get("version") not in READABLE_VERSIONS:
        raise AdapterError(
            f"{path.name}: format version {meta.get('version')!r}; this pack reads versions "
            f"{', '.join(READABLE_VERSIONS)}: update the pack to read newer files"
        )
    if meta.get("histogram") != HISTOGRAM_ID:
        raise AdapterError(f"{path.name}: histogram {meta.get('histogram')!r}; this pack computes {HISTOGRAM_ID!r}")
    return meta


def load_adapter(
    path: str | os.PathLike,
    model_layers: AttentionLayers | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> PaletteAdapter:
    """Load an adapter file (README.md, "The Palette-Adapter in ComfyUI"), checking every shape, and that it
    fits ``model_layers`` when given."""
    from safetensors import safe_open

    path = Path(path)
    meta = read_adapter_metadata(path)
    base = meta.get("base", "?")
    try:
        names = json.loads(meta.get("layers", ""))
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or not names:
            raise ValueError
    except ValueError:
        raise AdapterError(f"{path.name}: metadata 'layers' must be a JSON list of layer names") from None
    hint = f" (this adapter was made for base model {base!r})"
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
        shapes = {k: f.get_slice(k).get_shape() for k in keys}
        ctx = shapes.get("scalar_proj.weight", [0, 0])[0]
        if "scalar_proj.weight" in shapes and not ctx > 0:
            raise AdapterError(f"{path.name}: scalar_proj.weight has context size {ctx}; an adapter's tokens need >= 1")
        expected = {
            "color_proj.weight": [NUM_COLOR_TOKENS * ctx, NUM_BINS],
            "color_proj.bias": [NUM_COLOR_TOKENS * ctx],
            "color_norm.weight": [ctx],
            "color_norm.bias": [ctx],
            "scalar_proj.weight": [ctx, NUM_SCALARS],
            "scalar_proj.bias": [ctx],
        }
        version = meta["version"]
        if LAYOUTS[version].scalar_norm:
            expected |= {"scalar_norm.weight": [ctx], "scalar_norm.bias": [ctx]}
        dims: dict[str, int] = {}
        for layer in names:
            kk, vk = kv_file_keys(layer)
            for key in (kk, vk):
                if key not in keys:
                    raise AdapterError(f"{path.name}: metadata lists layer {layer} but tensor {key} is missing")
            dims[layer] = shapes[kk][0]
            expected[kk] = [dims[layer], ctx]
            expected[vk] = [dims[layer], ctx]
        extra = sorted(keys - set(expected))
        if extra:
            raise AdapterError(
                f"{path.name}: unexpected tensor {extra[0]}; not a version {meta['version']} palette adapter"
            )
        for key, shape in expected.items():
            if key not in keys:
                raise AdapterError(f"{path.name}: tensor {key} is missing")
            _expect(shapes[key], shape, f"{path.name}: {key}", hint)
        if model_layers is not None:
            try:
                model_layers.check_fits(dims, ctx, base)
            except AdapterError as e:
                raise AdapterError(f"{path.name}: {e}") from None
        adapter = PaletteAdapter(dims, ctx, version)
        state = {}
        for key in keys:
            t = f.get_tensor(key)
            if not t.is_floating_point() or not bool(torch.isfinite(t).all()):
                raise AdapterError(f"{path.name}: tensor {key} has non-finite or non-float values")
            state[key] = t
    with torch.no_grad():
        for key, t in state.items():
            if key.startswith("layers."):
                layer, which, _ = key.removeprefix("layers.").rsplit(".", 2)  # <name>.to_k.weight
                getattr(adapter, which)[_module_key(layer)].weight.copy_(t)
            else:
                mod, p = key.split(".")
                getattr(adapter, mod).get_parameter(p).copy_(t)
    adapter.trained_steps = _trained_steps(meta.get("trained_steps", "0"), path.name)
    adapter.base = base
    return adapter.to(device=device, dtype=dtype).eval().requires_grad_(False)


def untrained_sdxl(blocks: Sequence[str] | None = None, seed: int = 0) -> PaletteAdapter:
    """An *untrained* SDXL adapter (paper §3.2) for ``blocks`` (default: the paper's block), seeded random weights.

    Its random weights visibly change images but not toward the palette: it exists so workflows can be
    built and tested before trained weights do.
    """
    return init_adapter(sdxl_layers().select(list(blocks) if blocks else list(DEFAULT_BLOCKS)).dims, seed)


def adapter_nbytes(adapter: PaletteAdapter) -> int:
    """Bytes of the adapter's tensors: about the size of its file (README.md, 'The Palette-Adapter in ComfyUI')."""
    return sum(t.numel() * t.element_size() for t in adapter.state_dict().values())


def write_untrained_sdxl(out: str | os.PathLike, blocks: Sequence[str] | None = None, seed: int = 0) -> Path:
    """Write :func:`untrained_sdxl` to ``out`` with ``trained_steps`` 0 (paper §3.2; file format in README.md)."""
    return save_untrained(untrained_sdxl(blocks, seed), out, seed)


def save_untrained(adapter: PaletteAdapter, out: str | os.PathLike, seed: int) -> Path:
    """Save an adapter made by :func:`untrained_sdxl` with its metadata (file format in README.md)."""
    return save_adapter(adapter, out, trained_steps=0, note="untrained random initialisation", seed=str(seed))


__all__ = [
    "CONTEXT_DIM",
    "ColorCondition",
    "PaletteAdapter",
    "CONTROL_MODES",
    "adapter_kv",
    "apply_controls",
    "copy_weights",
    "blocks_in",
    "branch_conditions",
    "attend_tokens",
    "decoupled_attention",
    "token_shares",
    "histogram_condition",
    "init_adapter",
    "load_adapter",
    "negative_condition",
    "null_condition",
    "palette_condition",
    "adapter_nbytes",
    "save_adapter",
    "save_untrained",
    "select_layers",
    "token_attention",
    "untrained_sdxl",
    "write_untrained_sdxl",
]
