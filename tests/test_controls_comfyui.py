"""Entropy / Distance Control in a real ComfyUI: every mode builds the condition it says, on both CFG branches.

The paper §3.4: absolute controls set the value on the positive (cond) branch; relative ones put the
reference on the negative (uncond) branch and reference + change on the positive one; 'off' leaves the
control absent (``has_* = 0``) on both. Sampling with the tiny random-weight SDXL and an untrained adapter
checks that what the node builds reaches the model: a spy on the patch's AdapterRun records the scalar-token
input of each CFG chunk and the adapter keys the patched attention receives, and compares them with the
conditions written out by hand; 'off' is bit-identical to no control node, every set control changes the
output, the same setting reproduces it bit for bit, and a relative control acts through the uncond branch.
Random weights cannot show "more entropy in the image": the tests assert on what reaches the attention.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import pytest
import torch
from comfyhost import load_comfyui, requires_comfyui, run_node, sample, tiny_sdxl

pytestmark = [requires_comfyui, pytest.mark.comfyui]

MODES = ["off", "absolute", "relative"]
ENTROPY, ENTROPY_REF, DISTANCE, DISTANCE_REF = -2.5, 7.0, 0.15, 0.6


@pytest.fixture(scope="module")
def host():
    return load_comfyui()


@pytest.fixture(scope="module")
def model(host):
    return tiny_sdxl(seed=0)


@pytest.fixture(scope="module")
def adapter(host, model):
    layers = host.pack.nodes.model_family.attention_layers_of(model)
    return host.pack.palette_core.adapter.init_adapter(layers.select(["up_blocks.0.attentions.1"]).dims, seed=1)


def palette(host, text="#e63946:2, #f1faee, #1d3557"):
    return host.pack.palette_core.palette.Palette.parse(text)


def control(condition, entropy_mode="off", distance_mode="off", entropy=ENTROPY, distance=DISTANCE):
    (out,) = run_node(
        "EntropyDistanceControl",
        condition=condition,
        entropy_mode=entropy_mode,
        entropy=entropy if entropy_mode != "absolute" else abs(entropy) + 1.0,
        entropy_reference=ENTROPY_REF,
        distance_mode=distance_mode,
        distance=distance,
        distance_reference=DISTANCE_REF,
    )
    return out


def expected(mode: str, change: float, reference: float, absolute: float, floor: float | None = None):
    """(cond value, uncond value) a control mode should give; NaN = absent."""
    if mode == "off":
        return math.nan, math.nan
    if mode == "absolute":
        return absolute, math.nan
    value = reference + change
    return (max(floor, value) if floor is not None else value), reference


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-6)


@pytest.mark.parametrize(("entropy_mode", "distance_mode"), list(itertools.product(MODES, MODES)))
def test_every_mode_builds_both_branches(host, entropy_mode, distance_mode):
    pa = host.pack.palette_core.adapter
    cond = control(palette(host), entropy_mode, distance_mode)
    positive, negative = pa.branch_conditions(cond)
    want_e = expected(entropy_mode, ENTROPY, ENTROPY_REF, abs(ENTROPY) + 1.0)
    want_d = expected(distance_mode, DISTANCE, DISTANCE_REF, DISTANCE, floor=0.0)
    assert same(float(positive.entropy[0]), want_e[0]) and same(float(negative.entropy[0]), want_e[1])
    assert same(float(positive.distance[0]), want_d[0]) and same(float(negative.distance[0]), want_d[1])
    assert int(positive.kind[0]) == pa.KIND_PALETTE and int(negative.kind[0]) == pa.KIND_NONE
    feats = positive.scalar_features()[0].tolist()  # [one-hot kind, d, has_d, e / log2 4080, has_e]
    assert feats[4] == float(distance_mode != "off") and feats[6] == float(entropy_mode != "off")
    if entropy_mode != "off":
        assert feats[5] == pytest.approx(want_e[0] / math.log2(4080))


def test_relative_distance_is_floored_at_zero_and_reaches_a_negative_palette(host):
    pa = host.pack.palette_core.adapter
    cond = control(palette(host), distance_mode="relative", distance=-1.0)
    assert float(cond.distance[0]) == 0.0 and cond.null_distance == DISTANCE_REF
    (neg,) = run_node("NegativePalette", palette=palette(host, "#00ff00"), weight=0.3)
    positive, negative = pa.branch_conditions(cond, neg)
    assert torch.equal(negative.histogram, neg.histogram) and float(negative.histogram.sum()) == pytest.approx(0.3)
    assert float(negative.distance[0]) == pytest.approx(DISTANCE_REF) and math.isnan(float(negative.entropy[0]))


def test_per_latent_conditions_get_the_control_on_every_entry(host):
    images = torch.stack([torch.full((8, 8, 3), 0.2), torch.rand(8, 8, 3, generator=torch.Generator().manual_seed(0))])
    cond, _ = run_node("HistogramFromImage", image=images)
    both = control(cond, "relative", "absolute")
    assert both.batch_size == 2
    assert both.entropy.tolist() == [ENTROPY_REF + ENTROPY] * 2 and both.distance.tolist() == pytest.approx(
        [DISTANCE] * 2
    )
    assert torch.equal(both.histogram, cond.histogram)


def test_controls_reach_the_model(host, model, adapter):
    pal = palette(host)

    def run(condition, negative=None):
        (m,) = run_node(
            "ApplyPaletteAdapter",
            model=model,
            adapter=adapter,
            condition=condition,
            weight=1.0,
            start_percent=0.0,
            end_percent=1.0,
            blocks="from file",
            negative=negative,
        )
        return sample(m, cfg=4.0, size=128)

    base = run(pal)
    assert torch.equal(run(control(pal)), base)  # both off: the condition is the palette's own
    outs = {
        (e, d): run(control(pal, e, d))
        for e, d in [("relative", "off"), ("absolute", "off"), ("off", "absolute"), ("off", "relative")]
    }
    for key, out in outs.items():
        assert not torch.equal(out, base), key
    assert not torch.equal(outs[("relative", "off")], outs[("absolute", "off")])
    low = run(control(pal, distance_mode="absolute", distance=0.1))
    high = run(control(pal, distance_mode="absolute", distance=0.9))
    assert not torch.equal(low, high)


def close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-5) -> bool:
    """Equal up to float32 rounding, relative to the largest magnitude (random-weight latents reach ~1e2)."""
    return float((a - b).abs().max()) <= rel * float(a.abs().max())


def patched(model, adapter, condition, negative=None):
    (m,) = run_node(
        "ApplyPaletteAdapter",
        model=model,
        adapter=adapter,
        condition=condition,
        weight=1.0,
        start_percent=0.0,
        end_percent=1.0,
        blocks="from file",
        negative=negative,
    )
    return m


def node_control(condition, entropy_mode, entropy, entropy_reference, distance_mode, distance, distance_reference):
    (out,) = run_node(
        "EntropyDistanceControl",
        condition=condition,
        entropy_mode=entropy_mode,
        entropy=entropy,
        entropy_reference=entropy_reference,
        distance_mode=distance_mode,
        distance=distance,
        distance_reference=distance_reference,
    )
    return out


def by_hand(cond, distance: float | None, entropy: float | None, **refs):
    """``cond`` with its scalars written directly (NaN = absent), bypassing the node and apply_controls."""
    b = cond.batch_size
    d = torch.full((b,), math.nan if distance is None else distance)
    e = torch.full((b,), math.nan if entropy is None else entropy)
    return dataclasses.replace(cond, distance=d, entropy=e, **refs)


class Spy:
    """Records, inside a real sampling run, what the palette patch feeds the adapter and its attention.

    The AdapterRun is shared by every layer's patch and by ComfyUI's model clones (its ``__deepcopy__``
    returns itself), so instance attributes set on it here see every evaluation. The patch asks ``run.kv``
    for the adapter's keys and values once per adapter attention it computes (``run.calls`` counts them),
    so the K/V recorded there are exactly those the patched attention consumes.
    """

    def __init__(self, model) -> None:
        patches = model.model_options["transformer_options"]["patches_replace"]["attn2"].values()
        (self.run,) = {id(p.run): p.run for p in patches}.values()
        self.scalars: list[tuple[list[int], list[torch.Tensor]]] = []  # (cond_or_uncond, scalar input per chunk)
        self.kv: list[tuple[str, list[int], int, torch.Tensor, torch.Tensor]] = []  # (layer, order, batch, K, V)
        run, tokens, kv = self.run, self.run.tokens, self.run.kv

        def spy_tokens(cond_or_uncond, batch, *args, **kwargs):
            seen: list[torch.Tensor] = []
            hook = run.adapter.scalar_proj.register_forward_pre_hook(lambda mod, a: seen.append(a[0].clone()))
            try:
                out = tokens(cond_or_uncond, batch, *args, **kwargs)
            finally:
                hook.remove()
            if seen:  # the tokens are computed once per batch layout, then every layer reads the cache
                self.scalars.append((list(cond_or_uncond), seen))
            return out

        def spy_kv(layer, cond_or_uncond, batch, *args, **kwargs):
            k, v = kv(layer, cond_or_uncond, batch, *args, **kwargs)
            self.kv.append((layer, list(cond_or_uncond), batch, k, v))
            return k, v

        run.tokens, run.kv = spy_tokens, spy_kv

    def check(self, positive, negative) -> None:
        """Each chunk's scalar input and adapter K/V equal those of ``positive`` (cond) / ``negative`` (uncond)."""
        pa = load_comfyui().pack.palette_core.adapter
        assert self.scalars and self.kv
        assert len(self.kv) == sum(self.run.calls.values())  # one K/V per adapter attention computed
        for order, seen in self.scalars:
            assert len(seen) == len(order)
            for flag, got in zip(order, seen):
                want = (positive if flag == 0 else negative).scalar_features()
                assert torch.equal(got, want.to(got.dtype)), (flag, got, want)
        for layer, order, batch, k, v in self.kv:
            chunks = []
            for flag in order:
                t = self.run.adapter.tokens(positive if flag == 0 else negative)
                chunks.append(t.expand(batch, -1, -1) if t.shape[0] == 1 else t)
            w_k, w_v = self.run.adapter.kv_weights(layer)
            for got, want in zip((k, v), pa.adapter_kv(torch.cat(chunks), w_k, w_v, k.dtype)):
                if got.ndim == 4:  # cached already split into heads [N, heads, tokens, C / heads]
                    got = got.transpose(1, 2).reshape(want.shape)
                assert torch.allclose(got, want, atol=1e-5, rtol=1e-5), layer

    @property
    def orders(self) -> list[list[int]]:
        return [order for _, order, _, _, _ in self.kv]


PATHS = {  # (entropy mode, change or value, reference, distance mode, change or value, reference)
    "relative entropy": ("relative", -2.5, 7.0, "off", 0.3, 0.6),
    "absolute entropy": ("absolute", 4.5, 7.0, "off", 0.3, 0.6),
    "absolute distance": ("off", -2.0, 7.0, "absolute", 0.3, 0.6),
    "relative distance": ("off", -2.0, 7.0, "relative", 0.25, 0.6),
    "both relative": ("relative", 1.5, 6.0, "relative", -0.2, 0.5),
    "both absolute": ("absolute", 3.0, 7.0, "absolute", 0.9, 0.6),
}


def hand_branches(host, pal, path, negative=None):
    """(cond, uncond) conditions a path should give, written out from the paper §3.4 rules."""
    pa = host.pack.palette_core.adapter
    e_mode, e, e_ref, d_mode, d, d_ref = path
    pos_e = {"off": None, "absolute": e, "relative": max(0.0, e_ref + e)}[e_mode]
    pos_d = {"off": None, "absolute": d, "relative": max(0.0, d_ref + d)}[d_mode]
    neg_e = e_ref if e_mode == "relative" else None
    neg_d = d_ref if d_mode == "relative" else None
    positive = by_hand(pa.palette_condition(pal.colors, pal.weights), pos_d, pos_e)
    uncond = negative if negative is not None else pa.null_condition()
    return positive, by_hand(uncond, neg_d, neg_e)


@pytest.mark.parametrize("name", list(PATHS))
@pytest.mark.parametrize("with_negative", [False, True])
def test_each_branchs_values_reach_the_scalar_token_and_the_patched_attention(
    host, model, adapter, name, with_negative
):
    pal = palette(host)
    neg = None
    if with_negative:
        (neg,) = run_node("NegativePalette", palette=palette(host, "#00ff00, #ffff00"), weight=0.2)
    m = patched(model, adapter, node_control(pal, *PATHS[name]), neg)
    spy = Spy(m)
    sample(m, cfg=4.0, size=64, steps=1)
    spy.check(*hand_branches(host, pal, PATHS[name], neg))
    assert sorted(spy.orders[0]) == [0, 1]  # cond and uncond chunks in one evaluation


def test_a_relative_control_reaches_the_uncond_branch_even_at_cfg_one(host, model, adapter):
    pal = palette(host)
    rel = patched(model, adapter, node_control(pal, *PATHS["relative entropy"]))
    spy = Spy(rel)
    sample(rel, cfg=1.0, size=64, steps=1)
    assert all(sorted(order) == [0, 1] for order in spy.orders)  # ComfyUI's cfg-1 shortcut is off
    spy.check(*hand_branches(host, pal, PATHS["relative entropy"]))
    absolute = patched(model, adapter, node_control(pal, *PATHS["absolute entropy"]))
    spy_abs = Spy(absolute)
    sample(absolute, cfg=1.0, size=64, steps=1)
    assert all(order == [0] for order in spy_abs.orders)  # absolute: nothing for the uncond branch to carry


def test_relative_and_absolute_with_the_same_cond_value_differ_only_through_uncond(host, model, adapter):
    """Relative -2.5 from 7 and absolute 4.5 give the cond branch the same 4.5 bits; only uncond differs."""
    pal = palette(host)
    rel = node_control(pal, *PATHS["relative entropy"])
    absolute = node_control(pal, *PATHS["absolute entropy"])
    other_ref = node_control(pal, "relative", -1.5, 6.0, "off", 0.0, 0.6)  # 4.5 bits again, reference 6
    assert rel.entropy.tolist() == absolute.entropy.tolist() == other_ref.entropy.tolist() == [4.5]
    outs = [sample(patched(model, adapter, c), cfg=4.0, size=64) for c in (rel, absolute, other_ref)]
    assert not torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])
    at_cfg_one = [sample(patched(model, adapter, c), cfg=1.0, size=64) for c in (rel, absolute)]
    # cfg 1 is the cond prediction alone (up to rounding: the relative run batches cond with uncond)
    assert close(at_cfg_one[0], at_cfg_one[1])
    assert not close(outs[0], outs[1], rel=1e-3)


def test_entropy_changes_the_latent_and_the_same_setting_reproduces_it(host, model, adapter):
    pal = palette(host)

    def run(change):
        return sample(patched(model, adapter, node_control(pal, "relative", change, 7.0, "off", 0.0, 0.6)), size=64)

    low, high, low_again = run(-3.0), run(2.0), run(-3.0)
    assert torch.equal(low, low_again)  # fresh nodes, fresh patch, same setting: bit for bit
    assert not torch.equal(low, high)
    assert (low - high).abs().max() > 1e-3


def test_distance_off_is_the_same_as_never_setting_it(host, model, adapter):
    pal = palette(host)
    pa = host.pack.palette_core.adapter
    off_low = node_control(pal, "relative", -2.5, 7.0, "off", 0.1, 0.2)
    off_high = node_control(pal, "relative", -2.5, 7.0, "off", 1.4, 1.5)
    assert torch.isnan(off_low.distance).all() and off_low.null_distance is None
    entropy_only = by_hand(pa.palette_condition(pal.colors, pal.weights), None, 4.5, null_entropy=7.0)
    outs = [sample(patched(model, adapter, c), size=64) for c in (off_low, off_high, entropy_only)]
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])
    set_distance = node_control(pal, "relative", -2.5, 7.0, "absolute", 0.0, 0.6)  # a distance of 0 is not "off"
    assert not torch.equal(sample(patched(model, adapter, set_distance), size=64), outs[0])


def test_per_latent_conditions_carry_the_control_in_latent_order(host, model, adapter):
    pa = host.pack.palette_core.adapter
    images = torch.stack([torch.full((8, 8, 3), 0.2), torch.rand(8, 8, 3, generator=torch.Generator().manual_seed(0))])
    images[0, ..., 0] = 0.9
    hist, _ = run_node("HistogramFromImage", image=images)
    path = ("relative", -2.0, 7.0, "absolute", 0.4, 0.6)
    both = node_control(hist, *path)
    m = patched(model, adapter, both)
    spy = Spy(m)
    out = sample(m, size=64, batch=2)
    positive = by_hand(hist, 0.4, 5.0)  # one row per latent, in order
    spy.check(positive, by_hand(pa.null_condition(), None, 7.0))
    for i in range(2):  # each latent gets its own row: the same as giving its row to the whole batch
        alone = sample(patched(model, adapter, node_control(hist.select(i), *path)), size=64, batch=2)
        assert close(out[i], alone[i])  # up to the rounding of a differently batched attention
        assert not close(out[1 - i], alone[1 - i], rel=1e-3)
