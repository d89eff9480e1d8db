"""Contract tests of the ComfyUI attn2 patch, fed the host's call shapes (runs without ComfyUI).

Shapes and ``extra_options`` follow shared/notes/comfyui-host.md §2(b) (verified on ComfyUI 0.3.64):
q ``[B * len(cond_or_uncond), T, C]`` already projected, k/v ``[same, 77, C]``, ``cond_or_uncond`` in
either order, ``sigmas`` ``[1]``. The integration tests repeat the key checks inside a real ComfyUI.
"""

from __future__ import annotations

import copy

import pytest
import torch
from packimport import pack_module

patch_mod = pack_module("nodes.adapter_patch")
A = pack_module("palette_core.adapter")
blocks = pack_module("palette_core.blocks")
errors = pack_module("palette_core.errors")

LAYER = "up_blocks.0.attentions.1.transformer_blocks.0.attn2"
C, HEADS, CTX = 64, 2, 32


def host_attention(q, k, v, extra_options):
    return A.sdpa_attention(q, k, v, extra_options["n_heads"])


def make_run(positive, negative=None, weight=1.0, sigma_start=float("inf"), sigma_end=0.0):
    adapter = A.init_adapter({LAYER: C}, seed=0, context_dim=CTX)
    return patch_mod.AdapterRun(adapter, positive, negative, weight, sigma_start, sigma_end, host_attention)


def palette(*rgb):
    return A.palette_condition(torch.tensor(rgb, dtype=torch.float32))


def host_call(batch=1, cond_or_uncond=(1, 0), sigma=5.0, tokens=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = batch * len(cond_or_uncond)
    q, k, v = (
        torch.randn(n, tokens, C, generator=g),
        torch.randn(n, 77, C, generator=g),
        torch.randn(n, 77, C, generator=g),
    )
    extra = {
        "cond_or_uncond": list(cond_or_uncond),
        "sigmas": torch.tensor([sigma]),
        "n_heads": HEADS,
        "dim_head": C // HEADS,
        "attn_precision": None,
        "block": ("output", 1),
        "block_index": 0,
        "original_shape": [n, 4, 8, 8],
        "transformer_index": 6,
    }
    return q, k, v, extra


def expected(run, q, k, v, cond, extra):
    tokens = run.adapter.tokens(cond).expand(q.shape[0], -1, -1)
    wk, wv = run.adapter.kv_weights(LAYER)
    return host_attention(q, k, v, extra) + run.weight * A.sdpa_attention(q, tokens @ wk.T, tokens @ wv.T, HEADS)


@pytest.mark.parametrize("order", [(1, 0), (0, 1)])
def test_positive_reaches_cond_chunks_and_negative_uncond_chunks(order):
    pos, neg = palette([1.0, 0, 0]), A.negative_condition(torch.tensor([[0.0, 1.0, 0.0]]), weight=0.5)
    run = make_run(pos, neg, weight=0.8)
    patch = patch_mod.PaletteAttn2Patch(run, LAYER)
    q, k, v, extra = host_call(batch=2, cond_or_uncond=order)
    out = patch(q, k, v, extra)
    _, neg_branch = A.branch_conditions(pos, neg)
    for i, flag in enumerate(order):
        sl = slice(2 * i, 2 * i + 2)
        want = expected(run, q[sl], k[sl], v[sl], pos if flag == 0 else neg_branch, extra)
        assert torch.allclose(out[sl], want, atol=1e-5), f"chunk {i} ({'cond' if flag == 0 else 'uncond'})"
    base = host_attention(q, k, v, extra)
    assert not torch.allclose(out, base)


def test_weight_zero_and_outside_the_window_return_the_host_output_exactly():
    q, k, v, extra = host_call()
    base = host_attention(q, k, v, extra)
    assert torch.equal(
        patch_mod.PaletteAttn2Patch(make_run(palette([1.0, 0, 0]), weight=0.0), LAYER)(q, k, v, extra), base
    )
    late = make_run(palette([1.0, 0, 0]), sigma_start=2.0, sigma_end=0.0)  # acts only below sigma 2
    patch = patch_mod.PaletteAttn2Patch(late, LAYER)
    assert torch.equal(patch(q, k, v, extra), base)  # sigma 5: outside
    q2, k2, v2, extra2 = host_call(sigma=1.0)
    assert not torch.equal(patch(q2, k2, v2, extra2), host_attention(q2, k2, v2, extra2))
    assert late.calls == {LAYER: 1}


def test_one_condition_for_all_latents_or_one_per_latent():
    q, k, v, extra = host_call(batch=3, cond_or_uncond=(0,))
    shared = make_run(palette([1.0, 0, 0]))
    out = patch_mod.PaletteAttn2Patch(shared, LAYER)(q, k, v, extra)
    assert torch.allclose(out, expected(shared, q, k, v, palette([1.0, 0, 0]), extra), atol=1e-5)
    per_latent = A.ColorCondition.cat([palette([1.0, 0, 0]), palette([0, 1.0, 0]), palette([0, 0, 1.0])])
    run = make_run(per_latent)
    out = patch_mod.PaletteAttn2Patch(run, LAYER)(q, k, v, extra)
    for i in range(3):
        want = expected(run, q[i : i + 1], k[i : i + 1], v[i : i + 1], per_latent.select(i), extra)
        assert torch.allclose(out[i : i + 1], want, atol=1e-5)
    two = make_run(A.ColorCondition.cat([palette([1.0, 0, 0]), palette([0, 1.0, 0])]))
    with pytest.raises(errors.AdapterError, match="holds 2 entries but the latent batch is 3"):
        patch_mod.PaletteAttn2Patch(two, LAYER)(q, k, v, extra)


def test_chains_an_existing_replace_patch():
    seen = []

    def other_pack(q, k, v, extra_options):
        seen.append(q.shape)
        return torch.zeros_like(q)

    run = make_run(palette([1.0, 0, 0]))
    patch = patch_mod.PaletteAttn2Patch(run, LAYER, previous=other_pack)
    q, k, v, extra = host_call(cond_or_uncond=(0,))
    out = patch(q, k, v, extra)
    assert seen == [q.shape]
    assert torch.allclose(
        out, expected(run, q, k, v, palette([1.0, 0, 0]), extra) - host_attention(q, k, v, extra), atol=1e-5
    )


def test_clone_shares_weights_and_to_follows_device_and_dtype():
    run = make_run(palette([1.0, 0, 0]))
    patch = patch_mod.PaletteAttn2Patch(run, LAYER)
    model_options = {"transformer_options": {"patches_replace": {"attn2": {("output", 1, 0): patch}}}}
    cloned = copy.deepcopy(model_options)  # what ModelPatcher.clone() does
    assert cloned["transformer_options"]["patches_replace"]["attn2"][("output", 1, 0)] is patch
    assert patch.to(torch.float64) is patch
    assert run.adapter.color_proj.weight.dtype == torch.float64
    q, k, v, extra = host_call()
    out = patch(q.double(), k.double(), v.double(), extra)
    assert out.dtype == torch.float64


def test_subset_keeps_only_the_chosen_layers():
    names = {
        x.name: x.dim for x in blocks.sdxl_layers() if x.block in ("up_blocks.1.attentions.0", "mid_block.attentions.0")
    }
    adapter = A.init_adapter({n: 8 for n in names}, seed=2, context_dim=16)
    chosen = [n for n in names if n.startswith("mid_block")]
    copy_ = adapter.subset(chosen)
    assert copy_.layers == chosen
    assert torch.equal(copy_.kv_weights(chosen[3])[1], adapter.kv_weights(chosen[3])[1])
    copy_.to(torch.float16)
    assert adapter.color_proj.weight.dtype == torch.float32  # the loader's value is untouched
