"""A stand-in for the attn2 patch protocol of IPAdapter_plus, InstantID and PuLID (written for these tests).

What those packs do, as read in cubiq/ComfyUI_IPAdapter_plus (``IPAdapterPlus.set_model_patch_replace``,
``CrossAttentionPatch.Attn2Replace``), cubiq/ComfyUI_InstantID and cubiq/PuLID_ComfyUI:

* The node clones the model, then for each attn2 key it patches copies ``transformer_options``,
  ``patches_replace`` and ``patches_replace["attn2"]`` (shallow dict copies). A key without a patch gets a
  new ``Attn2Replace(callback, **kwargs)`` and the copy is written back to the clone's ``model_options``; a
  key that already holds a patch gets ``existing.add(callback, **kwargs)`` and the copy is dropped, so
  ``add`` must change the object the clone holds, and its return value is ignored.
* ``Attn2Replace`` computes ``out = attention(q, k, v, heads)``, then for each callback, in the order
  added, whose ``[sigma_end, sigma_start]`` holds the step's sigma: ``out = out + callback(out, q, k, v,
  extra_options, **kwargs)``; it returns ``out`` in q's dtype. ``add`` also sets each keyword as an
  attribute. It defines no ``__deepcopy__``: ``ModelPatcher.clone()`` deep-copies it with its keywords.
* The callback reads ``cond_or_uncond``, projects its own image embeddings with per-layer ``to_k/to_v``
  and attends to them; PuLID's ``ortho`` modes also read ``out`` (the text attention so far).

Nothing here is their code; the stand-in pack reproduces those calls with its own random weights.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

Attention = Callable[[Tensor, Tensor, Tensor, int], Tensor]
NO_SIGMA = 999999999.9


class StandinAttn2Replace:
    """The packs' attn2 replace object: host attention plus the callbacks added to it."""

    attention: Attention  # (q, k, v, heads); set by the pack that makes the object

    def __init__(self, callback: Callable | None = None, **kwargs) -> None:
        self.callback = [callback]
        self.kwargs = [kwargs]

    def add(self, callback: Callable, **kwargs) -> None:
        self.callback.append(callback)
        self.kwargs.append(kwargs)
        for name, value in kwargs.items():
            setattr(self, name, value)

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, extra_options: dict) -> Tensor:
        dtype = q.dtype
        out = self.attention(q, k, v, extra_options["n_heads"])
        sigma = float(extra_options["sigmas"].detach().cpu()[0]) if "sigmas" in extra_options else NO_SIGMA
        for callback, kwargs in zip(self.callback, self.kwargs):
            if kwargs["sigma_end"] <= sigma <= kwargs["sigma_start"]:
                out = out + callback(out, q, k, v, extra_options, **kwargs)
        return out.to(dtype=dtype)


def image_prompt_attention(
    out: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    extra_options: dict,
    module_key: str = "",
    pack: StandinImagePrompt | None = None,
    weight: float = 1.0,
    ortho: bool = False,
    **kwargs,
) -> Tensor:
    """The packs' callback: attention to the pack's own cond/uncond embeddings, in cond_or_uncond order."""
    cond_or_uncond = extra_options["cond_or_uncond"]
    batch = q.shape[0] // len(cond_or_uncond)
    embeds = (pack.cond, pack.uncond)
    ip_k = torch.cat([pack.to_k[module_key](embeds[i]).repeat(batch, 1, 1) for i in cond_or_uncond])
    ip_v = torch.cat([pack.to_v[module_key](embeds[i]).repeat(batch, 1, 1) for i in cond_or_uncond])
    out_ip = pack.attention(q, ip_k.to(q.dtype), ip_v.to(q.dtype), extra_options["n_heads"])
    if ortho:  # like PuLID's ortho mode: keep the part of out_ip orthogonal to out (so it depends on out)
        out, out_ip = out.float(), out_ip.float()
        out_ip = out_ip - (out * out_ip).sum(-2, keepdim=True) / (out * out).sum(-2, keepdim=True) * out
    return out_ip * weight


class StandinImagePrompt(nn.Module):
    """The stand-in pack: random image embeddings and per-layer K/V projections, patched in as those packs do."""

    def __init__(self, dims: dict[tuple, int], attention: Attention, context: int = 2048, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.attention = attention
        self.keys = list(dims)
        self.module_keys = {key: str(2 * i + 1) for i, key in enumerate(self.keys)}
        self.to_k, self.to_v = nn.ModuleDict(), nn.ModuleDict()
        with torch.no_grad():
            for key, dim in dims.items():
                for table in (self.to_k, self.to_v):
                    lin = nn.Linear(context, dim, bias=False)
                    lin.weight.copy_(torch.randn(dim, context, generator=g) / context**0.5)
                    table[self.module_keys[key]] = lin
        self.register_buffer("cond", torch.randn(1, 4, context, generator=g))
        self.register_buffer("uncond", torch.zeros(1, 4, context))
        self.requires_grad_(False)
        self.replace_cls = type("Attn2Replace", (StandinAttn2Replace,), {"attention": staticmethod(attention)})

    def set_model_patch_replace(self, model, patch_kwargs: dict, key: tuple) -> None:
        """The packs' registration: a new replace object on a free key, ``add`` on a taken one."""
        to = model.model_options["transformer_options"].copy()
        to["patches_replace"] = dict(to.get("patches_replace", {}))
        to["patches_replace"]["attn2"] = dict(to["patches_replace"].get("attn2", {}))
        attn2 = to["patches_replace"]["attn2"]
        if key not in attn2:
            attn2[key] = self.replace_cls(image_prompt_attention, **patch_kwargs)
            model.model_options["transformer_options"] = to
        else:
            attn2[key].add(image_prompt_attention, **patch_kwargs)

    def apply(
        self,
        model,
        weight: float = 1.0,
        sigma_start: float = float("inf"),
        sigma_end: float = 0.0,
        ortho: bool = False,
        keys: Iterable[tuple] | None = None,
    ):
        """The packs' node: clone the model, then register the callback on every key."""
        m = model.clone()
        patch_kwargs = {"pack": self, "weight": weight, "sigma_start": sigma_start, "sigma_end": sigma_end}
        patch_kwargs["ortho"] = ortho
        for key in self.keys if keys is None else keys:
            patch_kwargs["module_key"] = self.module_keys[key]
            self.set_model_patch_replace(m, patch_kwargs, key)
        return m


class HostModel:
    """The parts of ComfyUI's ModelPatcher the patches meet: deep-copied model_options and attn2 replace keys."""

    def __init__(self) -> None:
        self.model_options: dict = {"transformer_options": {}}

    def clone(self) -> HostModel:
        n = HostModel()
        n.model_options = copy.deepcopy(self.model_options)
        return n

    def set_model_attn2_replace(self, patch: Callable, kind: str, number: int, index: int) -> None:
        to = self.model_options["transformer_options"].copy()
        to["patches_replace"] = dict(to.get("patches_replace", {}))
        to["patches_replace"]["attn2"] = dict(to["patches_replace"].get("attn2", {}))
        to["patches_replace"]["attn2"][(kind, number, index)] = patch
        self.model_options["transformer_options"] = to

    def attn2(self) -> dict:
        return self.model_options["transformer_options"].get("patches_replace", {}).get("attn2", {})

    def attention_at(self, key: tuple, fallback: Callable, q: Tensor, k: Tensor, v: Tensor, extra: dict) -> Tensor:
        """What CrossAttention computes at ``key``: the replace patch there, else the host's attention."""
        patch = self.attn2().get(key)
        return fallback(q, k, v, extra) if patch is None else patch(q, k, v, extra)
