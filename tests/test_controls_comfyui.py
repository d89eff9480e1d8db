"""Entropy / Distance Control in a real ComfyUI: every mode builds the condition it says, on both CFG branches.

The paper §3.4: absolute controls set the value on the positive (cond) branch; relative ones put the
reference on the negative (uncond) branch and reference + change on the positive one; 'off' leaves the
control absent (``has_* = 0``) on both. Sampling with the tiny random-weight SDXL and an untrained adapter
checks that what the node builds reaches the model: 'off' is bit-identical to no control node, every set
control changes the output, and different values give different outputs.
"""

from __future__ import annotations

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
