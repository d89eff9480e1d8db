"""Contract tests of the ComfyUI attn2 patch, fed the host's call shapes (runs without ComfyUI).

Shapes and ``extra_options`` follow shared/notes/comfyui-host.md §2(b) (verified on ComfyUI 0.3.64):
q ``[B * len(cond_or_uncond), T, C]`` already projected, k/v ``[same, 77, C]``, ``cond_or_uncond`` in
either order, ``sigmas`` ``[1]``. The integration tests repeat the key checks inside a real ComfyUI.
"""

from __future__ import annotations

import copy

import pytest
import torch
from attn2_standin import HostModel, StandinImagePrompt, image_prompt_attention
from hypothesis import given, settings
from hypothesis import strategies as st
from packimport import pack_module

patch_mod = pack_module("nodes.adapter_patch")
A = pack_module("palette_core.adapter")
blocks = pack_module("palette_core.blocks")
errors = pack_module("palette_core.errors")

LAYER = "up_blocks.0.attentions.1.transformer_blocks.0.attn2"
C, HEADS, CTX = 64, 2, 32


def host_attention(q, k, v, extra_options):
    return A.sdpa_attention(q, k, v, extra_options["n_heads"])


def make_run(positive, negative=None, weight=1.0, sigma_start=float("inf"), sigma_end=0.0, version=A.FILE_VERSION):
    adapter = A.init_adapter({LAYER: C}, seed=0, context_dim=CTX, version=version)
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


def adapter_by_hand(q, tokens, wk, wv, heads, scalar_added):
    """The adapter attention one head at a time (docs/design.md §6): a softmax over all 5 tokens, or over the
    4 colour tokens plus the scalar token's value (version 4)."""
    k, v = tokens @ wk.T, tokens @ wv.T
    d = q.shape[-1] // heads
    attended = 4 if scalar_added else 5
    out = []
    for h in range(heads):
        cols = slice(h * d, (h + 1) * d)
        w = torch.softmax(q[..., cols] @ k[:, :attended, cols].transpose(1, 2) / d**0.5, dim=-1)
        out.append(w @ v[:, :attended, cols] + (v[:, 4:5, cols] if scalar_added else 0.0))
    return torch.cat(out, dim=-1)


def expected(run, q, k, v, cond, extra):
    tokens = run.adapter.tokens(cond).expand(q.shape[0], -1, -1)
    wk, wv = run.adapter.kv_weights(LAYER)
    extra_out = adapter_by_hand(q, tokens, wk, wv, HEADS, run.adapter.scalar_added)
    return host_attention(q, k, v, extra) + run.weight * extra_out


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


@pytest.mark.parametrize("version", ["3", "4"])
@pytest.mark.parametrize("host_given", [True, False])
def test_each_version_attends_its_scalar_token_its_own_way_on_either_path(monkeypatch, version, host_given):
    run = make_run(palette([1.0, 0, 0], [0.1, 0.3, 0.9]), version=version)
    if not host_given:  # the path taken under ComfyUI's own attention: K/V cached in heads
        monkeypatch.setattr(patch_mod, "comfy_attention", host_attention)
    assert run.adapter.scalar_added == (version == "4")
    q, k, v, extra = host_call(batch=2, cond_or_uncond=(0,), seed=3)
    out = patch_mod.PaletteAttn2Patch(run, LAYER)(q, k, v, extra)
    assert torch.allclose(out, expected(run, q, k, v, run.positive, extra), atol=1e-5)
    # the other version's attention on the same weights is not what came out
    tokens = run.adapter.tokens(run.positive).expand(q.shape[0], -1, -1)
    other = adapter_by_hand(q, tokens, *run.adapter.kv_weights(LAYER), HEADS, version != "4")
    assert not torch.allclose(out, host_attention(q, k, v, extra) + other, atol=1e-3)


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
    copied = cloned["transformer_options"]["patches_replace"]["attn2"][("output", 1, 0)]
    assert copied is not patch and copied.run is run and copied.layer == LAYER  # own patch, shared weights
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


# ------------------------------------------------------------------ other packs' attn2 patches (IPAdapter & co.)

KEY, OTHER_KEY = ("output", 1, 0), ("output", 1, 1)  # the palette patches KEY; the stand-in pack patches both


def apply_palette(model, run, keys=(KEY,)):
    """What ApplyPaletteAdapter.execute does: clone, then a patch per layer that chains what it finds."""
    m = model.clone()
    for key in keys:
        m.set_model_attn2_replace(patch_mod.PaletteAttn2Patch(run, LAYER, m.attn2().get(key)), *key)
    return m


def standin_pack(seed=3):
    return StandinImagePrompt({KEY: C, OTHER_KEY: C}, A.sdpa_attention, context=CTX, seed=seed)


def outputs(model, sigma=5.0, cond_or_uncond=(1, 0), seed=0):
    q, k, v, extra = host_call(batch=2, cond_or_uncond=cond_or_uncond, sigma=sigma, seed=seed)
    return [model.attention_at(key, host_attention, q, k, v, extra) for key in (KEY, OTHER_KEY)]


def test_a_pack_applied_after_the_palette_adds_its_callback_to_the_palette_patch():
    run = make_run(palette([1.0, 0, 0]), weight=0.7)
    pack = standin_pack()
    palette_only = apply_palette(HostModel(), run)
    both = pack.apply(palette_only, weight=0.6)  # used to raise AttributeError: no .add
    patch = both.attn2()[KEY]
    assert isinstance(patch, patch_mod.PaletteAttn2Patch) and len(patch.callback) == 1
    assert patch.weight == 0.6 and patch.module_key == pack.module_keys[KEY]  # add() keywords read as attributes
    assert patch.layer == LAYER and callable(patch.to)  # ... never over the patch's own
    assert type(both.attn2()[OTHER_KEY]).__name__ == "Attn2Replace"  # a free key gets the pack's own object

    q, k, v, extra = host_call(batch=2)
    text = host_attention(q, k, v, extra)
    seen = []

    def spy(out, *args, **kwargs):
        seen.append(out)
        return image_prompt_attention(out, *args, **kwargs)

    patch.callback[0] = spy
    got = patch(q, k, v, extra)
    assert torch.equal(seen[0], text)  # the callback sees the text attention, as under the pack's own object
    pack_term = image_prompt_attention(text, q, k, v, extra, **patch.kwargs[0])
    adapter_term = patch_mod.PaletteAttn2Patch(run, LAYER)(q, k, v, extra) - text
    assert pack_term.abs().max() > 0.05 and adapter_term.abs().max() > 0.05
    assert torch.allclose(got, text + pack_term + adapter_term, atol=1e-6)


@pytest.mark.parametrize("ortho", [False, True])
@pytest.mark.parametrize("sigma", [9.0, 5.0, 1.0])
@pytest.mark.parametrize("cond_or_uncond", [(1, 0), (0, 1)])
def test_either_order_of_the_palette_and_a_pack_gives_the_same_output(ortho, sigma, cond_or_uncond):
    neg = A.negative_condition(torch.tensor([[0.0, 1.0, 0.0]]), weight=0.4)
    run = make_run(palette([1.0, 0, 0], [0, 0, 1.0]), neg, weight=0.8, sigma_start=6.0, sigma_end=2.0)
    pack = standin_pack()
    base = HostModel()
    palette_first = pack.apply(apply_palette(base, run), 0.5, 8.0, 0.5, ortho)
    pack_first = apply_palette(pack.apply(base, 0.5, 8.0, 0.5, ortho), run)
    assert isinstance(pack_first.attn2()[KEY].previous, pack.replace_cls)
    a, b = outputs(palette_first, sigma, cond_or_uncond), outputs(pack_first, sigma, cond_or_uncond)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    text = outputs(base, sigma, cond_or_uncond)
    palette_only = outputs(apply_palette(base, run), sigma, cond_or_uncond)
    pack_only = outputs(pack.apply(base, 0.5, 8.0, 0.5, ortho), sigma, cond_or_uncond)
    assert torch.equal(pack_only[1], a[1])  # the key the palette does not patch
    palette_acts, pack_acts = 2.0 <= sigma <= 6.0, 0.5 <= sigma <= 8.0
    assert torch.equal(palette_only[0], text[0]) is not palette_acts
    assert torch.equal(a[0], pack_only[0]) is not palette_acts
    assert torch.equal(a[0], palette_only[0]) is not pack_acts  # sigma 9: only the pack waits


def test_two_packs_and_the_palette_in_any_order_sum_the_same_terms():
    run = make_run(palette([1.0, 0, 0]), weight=0.8)
    first, second = standin_pack(seed=3), standin_pack(seed=4)
    base = HostModel()
    orders = {
        "palette, pack, pack": second.apply(first.apply(apply_palette(base, run), 0.5), 0.3, ortho=True),
        "pack, palette, pack": second.apply(apply_palette(first.apply(base, 0.5), run), 0.3, ortho=True),
        "pack, pack, palette": apply_palette(second.apply(first.apply(base, 0.5), 0.3, ortho=True), run),
    }
    got = {name: outputs(m) for name, m in orders.items()}
    for name, out in got.items():
        assert torch.equal(out[0], got["pack, pack, palette"][0]), name
        assert torch.equal(out[1], got["pack, pack, palette"][1]), name


def test_a_pack_added_on_one_clone_does_not_reach_another_branch():
    run = make_run(palette([1.0, 0, 0]))
    patched = apply_palette(HostModel(), run)
    before = outputs(patched)
    branch_a = standin_pack().apply(patched)  # clones, then add() on the clone's patch
    branch_b = patched.clone()
    pa, pb, p0 = branch_a.attn2()[KEY], branch_b.attn2()[KEY], patched.attn2()[KEY]
    assert len(pa.callback) == 1 and pb.callback == [] and p0.callback == [] and pb.kwargs == []
    assert pa.run is pb.run is p0.run is run  # one adapter, one cache
    assert not torch.equal(outputs(branch_a)[0], before[0])
    for m in (patched, branch_b):
        after = outputs(m)
        assert torch.equal(after[0], before[0]) and torch.equal(after[1], before[1])
    again = branch_a.clone()  # a clone of branch A keeps the pack, in a list of its own
    pc = again.attn2()[KEY]
    assert len(pc.callback) == 1 and pc.callback is not pa.callback and pc.kwargs[0] is not pa.kwargs[0]
    assert torch.equal(outputs(again)[0], outputs(branch_a)[0])


def test_a_chained_patch_is_copied_per_clone_like_any_patch():
    pack = standin_pack()
    pack_first = apply_palette(pack.apply(HostModel()), make_run(palette([1.0, 0, 0])))
    clone = pack_first.clone()
    assert clone.attn2()[KEY].previous is not pack_first.attn2()[KEY].previous
    pack.set_model_patch_replace(
        clone,
        {"pack": pack, "weight": 2.0, "sigma_start": 1e9, "sigma_end": 0.0, "module_key": pack.module_keys[KEY]},
        KEY,
    )
    assert len(clone.attn2()[KEY].callback) == 1 and pack_first.attn2()[KEY].callback == []


def test_a_callback_without_a_window_always_acts_and_zero_terms_are_allowed():
    run = make_run(palette([1.0, 0, 0]))
    patch = patch_mod.PaletteAttn2Patch(run, LAYER)
    q, k, v, extra = host_call()
    before = patch(q, k, v, extra)
    patch.add(lambda out, q, k, v, extra_options: 0)  # IPAdapter's callback returns 0 at weight 0
    assert torch.equal(patch(q, k, v, extra), before)
    patch.add(lambda out, q, k, v, extra_options, shift: torch.full_like(out, shift), shift=0.25)
    assert torch.allclose(patch(q, k, v, extra), before + 0.25, atol=1e-6)
    del extra["sigmas"]  # no sigma from the host: as the packs assume, every window is open
    assert torch.allclose(
        patch(q, k, v, extra) - patch_mod.PaletteAttn2Patch(run, LAYER)(q, k, v, extra),
        torch.full_like(q, 0.25),
        atol=1e-6,
    )


def test_a_missing_attribute_is_an_attribute_error():
    patch = patch_mod.PaletteAttn2Patch(make_run(palette([1.0, 0, 0])), LAYER)
    with pytest.raises(AttributeError, match="no attribute 'weight'"):
        _ = patch.weight
    assert not hasattr(patch, "__setstate_ex__")


# ------------------------------------------------------------------------------------------ cached K/V


def uncached(run, q, k, v, extra):
    """The patch without caches: decoupled_attention on freshly computed tokens (the pre-cache code path)."""
    cond_or_uncond = extra["cond_or_uncond"]
    batch = q.shape[0] // len(cond_or_uncond)
    conds = [run.positive if f == 0 else run.negative for f in cond_or_uncond]
    with torch.no_grad():
        tokens = torch.cat([run.adapter.tokens(c).expand(batch, -1, -1) for c in conds]).to(q.dtype)
    wk, wv = run.adapter.kv_weights(LAYER)
    host = lambda a, b, c, _h: host_attention(a, b, c, extra)  # noqa: E731
    added = A.decoupled_attention(q, tokens, wk, wv, HEADS, host, scalar_added=run.adapter.scalar_added)
    return host_attention(q, k, v, extra) + run.weight * added


@pytest.fixture
def kv_calls(monkeypatch):
    calls = []
    real = patch_mod.adapter_kv

    def counted(*args):
        calls.append(args[0].shape)
        return real(*args)

    monkeypatch.setattr(patch_mod, "adapter_kv", counted)
    return calls


@settings(max_examples=25, deadline=None)
@given(
    cond_or_uncond=st.sampled_from([(0,), (1,), (0, 1), (1, 0)]),
    batch=st.integers(1, 3),
    weight=st.sampled_from([1.0, 0.35, -1.5]),
    double=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_cached_kv_is_bit_identical_to_the_uncached_path(cond_or_uncond, batch, weight, double, seed):
    neg = A.negative_condition(torch.tensor([[0.0, 1.0, 0.0]]), weight=0.3)
    run = make_run(palette([1.0, 0, 0], [0.2, 0.4, 0.9]), neg, weight=weight)
    patch = patch_mod.PaletteAttn2Patch(run, LAYER)
    if double:
        patch.to(torch.float64)
    for step in range(2):  # the second step reads the cache
        q, k, v, extra = host_call(batch=batch, cond_or_uncond=cond_or_uncond, seed=seed + step)
        if double:
            q, k, v = q.double(), k.double(), v.double()
        assert torch.equal(patch(q, k, v, extra), uncached(run, q, k, v, extra))


def test_kv_is_computed_once_per_layout_and_again_when_an_input_changes(kv_calls):
    run = make_run(palette([1.0, 0, 0]), A.negative_condition(torch.tensor([[0.0, 1.0, 0.0]]), weight=0.3))
    patch = patch_mod.PaletteAttn2Patch(run, LAYER)
    for step in range(4):
        patch(*host_call(batch=2, seed=step))
    assert kv_calls == [(4, 5, CTX)]
    # another order of the CFG chunks, another batch: entries of their own, right for each layout
    for layout in ((0, 1), (0,), (1, 0)):
        for batch in (1, 2):
            q, k, v, extra = host_call(batch=batch, cond_or_uncond=layout, seed=batch)
            assert torch.equal(patch(q, k, v, extra), uncached(run, q, k, v, extra)), (layout, batch)
    assert len(kv_calls) == 6  # (1, 0) with batch 2 was cached already

    q, k, v, extra = host_call(batch=2)
    run.positive = palette([0, 0, 1.0])  # a new condition: new tokens and K/V
    assert torch.equal(patch(q, k, v, extra), uncached(run, q, k, v, extra))
    assert len(kv_calls) == 7
    patch.to(torch.float64)  # the model moved: everything recomputed in its dtype
    out = patch(q.double(), k.double(), v.double(), extra)
    assert out.dtype == torch.float64 and len(kv_calls) == 8
    with torch.no_grad():
        wk, _ = run.adapter.kv_weights(LAYER)
        wk.mul_(2.0)  # weights edited in place: the cache is stale until cleared
    run.clear_cache()
    assert torch.equal(
        patch(q.double(), k.double(), v.double(), extra), uncached(run, q.double(), k.double(), v.double(), extra)
    )


def test_kv_cached_in_inference_mode_is_not_reused_with_gradients():
    run = make_run(palette([1.0, 0, 0]))
    patch = patch_mod.PaletteAttn2Patch(run, LAYER)
    q, k, v, extra = host_call()
    with torch.inference_mode():
        patch(q, k, v, extra)  # how ComfyUI samples
    q = q.clone().requires_grad_()
    patch(q, k, v, extra).sum().backward()  # inference tensors in the graph would raise here
    assert q.grad is not None and torch.isfinite(q.grad).all()


def test_sigma_window_is_read_once_per_sigmas_tensor():
    run = make_run(palette([1.0, 0, 0]), sigma_start=4.0, sigma_end=2.0)
    inside, outside = torch.tensor([3.0]), torch.tensor([5.0])
    assert run.active(inside) and not run.active(outside) and run.active(inside)
    assert run.active(None)
