"""Every control path of Entropy / Distance Control, checked for the exact condition it builds (no ComfyUI).

The paper §3.4 and docs/design.md §6: a condition carries ``distance`` and ``entropy`` (bits), NaN when
absent; the scalar token's input is ``[one_hot(kind), d, has_d, e / log2 4080, has_e]``. ``absolute`` sets
the value on the cond branch only; ``relative`` sets reference + change on the cond branch and the
reference on the uncond branch (which holds the negative palette, or the empty condition); ``off`` leaves
the control absent on both. The node's ``execute`` is ``palette_core.adapter.apply_controls``; the real
ComfyUI tier (tests/test_controls_comfyui.py) runs the node itself and samples with it.
"""

from __future__ import annotations

import colorsys
import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from packimport import pack_module
from scipy.stats import entropy as scipy_entropy

A = pack_module("palette_core.adapter")
H = pack_module("palette_core.histogram")
errors = pack_module("palette_core.errors")
patch_mod = pack_module("nodes.adapter_patch")

LAYER = "up_blocks.0.attentions.1.transformer_blocks.0.attn2"
C, HEADS, CTX = 64, 2, 32
LOG2_BINS = math.log2(34 * 12 * 10)  # the entropy of a uniform 4080-bin histogram
RED, GREEN, BLUE = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)
MODES = ["off", "absolute", "relative"]

finite = st.floats(-12.0, 12.0, allow_nan=False, width=32)
non_negative = st.floats(0.0, 12.0, allow_nan=False, width=32)


def hsv_bin(rgb: tuple[float, float, float]) -> int:
    """The docs/design.md §4 bin of one colour, by hand from colorsys (not the pack's binning code)."""
    h, s, v = colorsys.rgb_to_hsv(*rgb)
    return (int(h * 34) % 34 * 12 + min(int(s * 12), 11)) * 10 + min(int(v * 10), 9)


def f32(x: float) -> float:
    """``x`` as the float32 a condition tensor stores."""
    return float(np.float32(x))


def palette(*colors, weights=None):
    return A.palette_condition(torch.tensor(colors), None if weights is None else torch.tensor(weights))


def features(kind: int, d: float | None = None, e: float | None = None) -> list[float]:
    """The scalar token's input by hand: one-hot kind, then ``d, has_d, e / log2 4080, has_e`` (0 when absent)."""
    one_hot = [float(kind == k) for k in range(3)]
    return [
        *one_hot,
        0.0 if d is None else f32(d),
        float(d is not None),
        0.0 if e is None else e / LOG2_BINS,
        float(e is not None),
    ]


def assert_features(cond, rows: list[list[float]]) -> None:
    got = cond.scalar_features()
    assert got.shape == (len(rows), 7) and got.dtype == torch.float32
    for g, want in zip(got.tolist(), rows):
        assert g[:5] == want[:5] and g[6] == want[6]  # kind, distance and the flags are stored exactly
        assert g[5] == pytest.approx(want[5], rel=1e-6, abs=1e-7)  # entropy / log2 4080 in float32


def absent(x: torch.Tensor) -> bool:
    return bool(torch.isnan(x).all())


def test_hand_bins_agree_with_the_palette_histogram():
    assert [hsv_bin(c) for c in (RED, GREEN, BLUE)] == [119, 1439, 2759]
    hist = palette(RED, GREEN, weights=[3.0, 1.0]).histogram[0]
    assert hist[119] == 0.75 and hist[1439] == 0.25 and float(hist.sum()) == 1.0


@settings(max_examples=30, deadline=None)
@given(finite, non_negative, finite, non_negative)
def test_off_on_both_leaves_the_condition_as_it_was(entropy, entropy_ref, distance, distance_ref):
    base = palette(RED, BLUE)
    out = A.apply_controls(base, "off", entropy, entropy_ref, "off", distance, distance_ref)
    assert torch.equal(out.histogram, base.histogram) and torch.equal(out.kind, base.kind)
    assert absent(out.distance) and absent(out.entropy)
    assert out.null_distance is None and out.null_entropy is None
    assert_features(out, [features(A.KIND_PALETTE)])
    positive, negative = A.branch_conditions(out)
    assert_features(positive, [features(A.KIND_PALETTE)])
    assert_features(negative, [features(A.KIND_NONE)])  # the empty condition, no controls
    assert float(negative.histogram.abs().sum()) == 0.0


@settings(max_examples=40, deadline=None)
@given(st.floats(0.0, 1.5, allow_nan=False), non_negative)
def test_absolute_distance_is_the_number_given_on_the_cond_branch_only(distance, reference):
    out = A.apply_controls(palette(RED), distance_mode="absolute", distance=distance, distance_reference=reference)
    assert out.distance.tolist() == [f32(distance)] and absent(out.entropy)  # not normalised: QC is already 0..~1.5
    assert out.null_distance is None  # the reference belongs to relative mode only
    positive, negative = A.branch_conditions(out)
    assert_features(positive, [features(A.KIND_PALETTE, d=distance)])
    assert_features(negative, [features(A.KIND_NONE)])


@settings(max_examples=40, deadline=None)
@given(st.floats(-1.5, 1.5, allow_nan=False), st.floats(0.0, 1.5, allow_nan=False))
def test_relative_distance_is_reference_plus_change_and_the_reference_on_uncond(change, reference):
    out = A.apply_controls(palette(RED), distance_mode="relative", distance=change, distance_reference=reference)
    want = reference + change if reference + change > 0 else 0.0  # a distance is never negative
    assert out.distance.tolist() == [f32(want)] and out.null_distance == reference
    positive, negative = A.branch_conditions(out)
    assert_features(positive, [features(A.KIND_PALETTE, d=want)])
    assert_features(negative, [features(A.KIND_NONE, d=reference)])
    assert float(negative.histogram.abs().sum()) == 0.0


@pytest.mark.parametrize(
    ("change", "reference", "cond"),
    [(0.15, 0.6, 0.75), (-0.6, 0.6, 0.0), (-1.0, 0.6, 0.0), (0.9, 0.6, 1.5), (0.0, 0.0, 0.0)],
)
def test_relative_distance_by_hand(change, reference, cond):
    out = A.apply_controls(palette(RED), distance_mode="relative", distance=change, distance_reference=reference)
    assert float(out.distance[0]) == pytest.approx(cond, abs=1e-7) and out.null_distance == reference


@settings(max_examples=40, deadline=None)
@given(non_negative, non_negative)
def test_absolute_entropy_is_the_bits_given_normalised_by_log2_of_the_bins(entropy, reference):
    out = A.apply_controls(palette(RED), "absolute", entropy, reference)
    assert out.entropy.tolist() == [f32(entropy)] and absent(out.distance) and out.null_entropy is None
    positive, negative = A.branch_conditions(out)
    assert_features(positive, [features(A.KIND_PALETTE, e=f32(entropy))])
    assert_features(negative, [features(A.KIND_NONE)])


@settings(max_examples=40, deadline=None)
@given(finite, non_negative)
def test_relative_entropy_is_reference_plus_change_floored_at_zero_bits(change, reference):
    out = A.apply_controls(palette(RED), "relative", change, reference)
    want = max(0.0, reference + change)  # Eq. 2 entropy is never negative
    assert out.entropy.tolist() == [f32(want)] and out.null_entropy == reference
    positive, negative = A.branch_conditions(out)
    assert_features(positive, [features(A.KIND_PALETTE, e=f32(want))])
    assert_features(negative, [features(A.KIND_NONE, e=reference)])


def test_the_papers_relative_entropy_example():
    """§3.4: a positive entropy on the null condition and a lower one on the positive condition."""
    out = A.apply_controls(palette(RED, BLUE), "relative", -3.0, 7.0)
    positive, negative = A.branch_conditions(out)
    assert float(positive.entropy[0]) == 4.0 and float(negative.entropy[0]) == 7.0
    assert positive.scalar_features()[0, 5] < negative.scalar_features()[0, 5]
    floored = A.apply_controls(palette(RED), "relative", -3.0, 1.0)
    assert float(floored.entropy[0]) == 0.0 and floored.null_entropy == 1.0


ENTROPY, ENTROPY_REF, DISTANCE, DISTANCE_REF = -2.5, 7.0, 0.15, 0.6
ABS_ENTROPY, ABS_DISTANCE = 3.5, 0.4


def expected_branches(entropy_mode: str, distance_mode: str):
    """(cond, uncond) ``(d, e)`` each path must build, written out per mode (None = absent)."""
    e = {"off": (None, None), "absolute": (ABS_ENTROPY, None), "relative": (ENTROPY_REF + ENTROPY, ENTROPY_REF)}
    d = {"off": (None, None), "absolute": (ABS_DISTANCE, None), "relative": (DISTANCE_REF + DISTANCE, DISTANCE_REF)}
    (e_pos, e_neg), (d_pos, d_neg) = e[entropy_mode], d[distance_mode]
    return (d_pos, e_pos), (d_neg, e_neg)


def controlled(cond, entropy_mode: str, distance_mode: str):
    entropy = ABS_ENTROPY if entropy_mode == "absolute" else ENTROPY
    distance = ABS_DISTANCE if distance_mode == "absolute" else DISTANCE
    return A.apply_controls(cond, entropy_mode, entropy, ENTROPY_REF, distance_mode, distance, DISTANCE_REF)


@pytest.mark.parametrize(("entropy_mode", "distance_mode"), list(itertools.product(MODES, MODES)))
def test_entropy_and_distance_together_build_both_branches(entropy_mode, distance_mode):
    out = controlled(palette(RED, GREEN), entropy_mode, distance_mode)
    (d_pos, e_pos), (d_neg, e_neg) = expected_branches(entropy_mode, distance_mode)
    positive, negative = A.branch_conditions(out)
    assert_features(positive, [features(A.KIND_PALETTE, d_pos, e_pos)])
    assert_features(negative, [features(A.KIND_NONE, d_neg, e_neg)])
    assert out.null_entropy == e_neg and out.null_distance == d_neg
    # one control never touches the other: the same path alone builds the same value
    alone_e = controlled(palette(RED, GREEN), entropy_mode, "off")
    alone_d = controlled(palette(RED, GREEN), "off", distance_mode)
    assert torch.equal(out.entropy.nan_to_num(-1), alone_e.entropy.nan_to_num(-1))
    assert torch.equal(out.distance.nan_to_num(-1), alone_d.distance.nan_to_num(-1))


@pytest.mark.parametrize(("entropy_mode", "distance_mode"), list(itertools.product(MODES, MODES)))
def test_with_a_negative_palette_the_uncond_branch_is_the_negative_with_the_references(entropy_mode, distance_mode):
    out = controlled(palette(RED, GREEN), entropy_mode, distance_mode)
    neg = A.negative_condition(torch.tensor([BLUE, GREEN]), torch.tensor([3.0, 1.0]), weight=0.3)
    want_neg_hist = torch.zeros(34 * 12 * 10)
    want_neg_hist[hsv_bin(BLUE)], want_neg_hist[hsv_bin(GREEN)] = 0.3 * 0.75, 0.3 * 0.25  # not renormalised
    assert torch.allclose(neg.histogram[0], want_neg_hist, atol=1e-7, rtol=0)
    positive, negative = A.branch_conditions(out, neg)
    (d_pos, e_pos), (d_neg, e_neg) = expected_branches(entropy_mode, distance_mode)
    assert positive is out  # the cond branch is the controlled condition itself
    assert_features(positive, [features(A.KIND_PALETTE, d_pos, e_pos)])
    assert_features(negative, [features(A.KIND_PALETTE, d_neg, e_neg)])  # a negative palette is kind palette
    assert torch.equal(negative.histogram, neg.histogram)
    assert negative.null_entropy is None and negative.null_distance is None


def test_a_negatives_own_controls_give_way_to_the_positives_references():
    """The uncond branch carries only what the positive's relative controls put there (docs/design.md §6)."""
    own = A.apply_controls(
        A.negative_condition(torch.tensor([BLUE]), weight=0.2), "absolute", 9.0, 0.0, "absolute", 1.0
    )
    _, negative = A.branch_conditions(palette(RED), own)
    assert absent(negative.entropy) and absent(negative.distance)
    rel = A.apply_controls(palette(RED), "relative", -1.0, 5.0)
    _, negative = A.branch_conditions(rel, own)
    assert negative.entropy.tolist() == [5.0] and absent(negative.distance)


def test_chained_controls_absolute_replaces_relative_and_other_controls_stay():
    rel = A.apply_controls(palette(RED), "relative", -2.0, 7.0, "relative", 0.1, 0.6)
    entropy_abs = A.apply_controls(rel, "absolute", 3.0, 7.0, "off", 0.0, 0.0)
    assert entropy_abs.entropy.tolist() == [3.0] and entropy_abs.null_entropy is None
    assert entropy_abs.distance.tolist() == [f32(0.7)] and entropy_abs.null_distance == 0.6  # untouched
    _, negative = A.branch_conditions(entropy_abs)
    assert absent(negative.entropy) and negative.distance.tolist() == [f32(0.6)]


def test_absolute_values_mean_what_training_fed():
    """An absolute entropy / distance is the trainer's scalar (paper §3.2) for an image with that histogram.

    An image of exactly the palette's colours in the palette's proportions has the palette's histogram,
    so its Quadratic-Chi distance to the palette is 0 and its entropy is the palette's: 1.5 bits for shares
    1/2, 1/4, 1/4 (by hand, and by scipy).
    """
    image = torch.tensor([RED] * 8 + [GREEN] * 4 + [BLUE] * 4).reshape(4, 4, 3)
    pal = palette(RED, GREEN, BLUE, weights=[2.0, 1.0, 1.0])
    distance, entropy = A.image_scalars(H.image_histogram(image).reshape(1, -1), pal.histogram)
    assert float(entropy[0]) == pytest.approx(1.5, abs=1e-6)
    assert float(entropy[0]) == pytest.approx(scipy_entropy([0.5, 0.25, 0.25], base=2), abs=1e-6)
    assert float(distance[0]) == pytest.approx(0.0, abs=1e-6)
    out = A.apply_controls(pal, "absolute", float(entropy[0]), 0.0, "absolute", float(distance[0]), 0.0)
    assert torch.equal(out.entropy, entropy) and torch.equal(out.distance, distance)


def flat_images(*colors) -> torch.Tensor:
    return torch.stack([torch.tensor(c).expand(4, 4, 3) for c in colors])


def test_per_latent_histograms_get_the_control_on_every_row_in_order():
    hist = A.histogram_condition(H.image_histogram(flat_images(RED, GREEN, BLUE)).reshape(3, -1))
    out = controlled(hist, "relative", "absolute")
    assert out.batch_size == 3
    assert [int(row.argmax()) for row in out.histogram] == [hsv_bin(RED), hsv_bin(GREEN), hsv_bin(BLUE)]
    assert out.entropy.tolist() == [ENTROPY_REF + ENTROPY] * 3 and out.distance.tolist() == [f32(ABS_DISTANCE)] * 3
    positive, negative = A.branch_conditions(out)
    assert_features(positive, [features(A.KIND_HISTOGRAM, ABS_DISTANCE, ENTROPY_REF + ENTROPY)] * 3)
    assert negative.batch_size == 1  # one uncond condition, shared by every latent
    assert_features(negative, [features(A.KIND_NONE, None, ENTROPY_REF)])


item_controls = st.lists(
    st.tuples(st.sampled_from([RED, GREEN, BLUE]), st.none() | st.floats(0.0, 1.5, width=32), st.none() | non_negative),
    min_size=1,
    max_size=4,
)


@settings(max_examples=25, deadline=None)
@given(item_controls)
def test_per_item_palettes_and_controls_give_per_item_rows_in_order(items):
    conds = [
        A.apply_controls(
            palette(color),
            "off" if e is None else "absolute",
            e or 0.0,
            0.0,
            "off" if d is None else "absolute",
            d or 0.0,
            0.0,
        )
        for color, d, e in items
    ]
    batch = A.ColorCondition.cat(conds)
    assert [int(row.argmax()) for row in batch.histogram] == [hsv_bin(c) for c, _, _ in items]
    assert_features(batch, [features(A.KIND_PALETTE, d, e) for _, d, e in items])
    for i in range(len(items)):
        assert_features(batch.select(i), [features(A.KIND_PALETTE, items[i][1], items[i][2])])


def spy_run(positive, negative=None):
    """An AdapterRun whose adapter records every input of its scalar-token projection."""
    adapter = A.init_adapter({LAYER: C}, seed=0, context_dim=CTX)
    seen: list[torch.Tensor] = []
    adapter.scalar_proj.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    run = patch_mod.AdapterRun(adapter, positive, negative, 1.0, attention=lambda q, k, v, extra: q)
    return run, seen


@pytest.mark.parametrize("order", [(1, 0), (0, 1)])
def test_the_scalar_token_gets_each_branchs_values_in_the_hosts_chunk_order(order):
    hist = A.histogram_condition(H.image_histogram(flat_images(RED, GREEN)).reshape(2, -1))
    cond = controlled(hist, "relative", "relative")
    neg = A.negative_condition(torch.tensor([BLUE]), weight=0.3)
    run, seen = spy_run(cond, neg)
    tokens = run.tokens(order, 2, torch.device("cpu"), torch.float32)
    pos_rows = [features(A.KIND_HISTOGRAM, DISTANCE_REF + DISTANCE, ENTROPY_REF + ENTROPY)] * 2
    neg_rows = [features(A.KIND_PALETTE, DISTANCE_REF, ENTROPY_REF)]
    assert len(seen) == 2
    for flag, got in zip(order, seen):  # one projection per chunk, in the host's order
        want = pos_rows if flag == 0 else neg_rows
        assert got.shape == (len(want), 7)
        for g, w in zip(got.tolist(), want):
            assert g[:5] == w[:5] and g[6] == w[6] and g[5] == pytest.approx(w[5], rel=1e-6)
    # the cond chunk holds one token set per latent in latent order; the uncond one repeats the negative's
    cond_chunk = tokens[2 * order.index(0) : 2 * order.index(0) + 2]
    uncond_chunk = tokens[2 * order.index(1) : 2 * order.index(1) + 2]
    for i in range(2):
        assert torch.allclose(cond_chunk[i], run.adapter.tokens(run.positive.select(i))[0], atol=1e-6)
    assert torch.equal(uncond_chunk[0], uncond_chunk[1])
    assert not torch.allclose(cond_chunk[0], cond_chunk[1], atol=1e-3)  # different histograms, different rows


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"entropy_mode": "relativ"}, "entropy_mode: 'relativ' is not one of off, absolute, relative"),
        ({"distance_mode": "ABSOLUTE"}, "distance_mode: 'ABSOLUTE' is not one of"),
        ({"entropy_mode": "absolute", "entropy": -1.0}, "entropy: absolute -1.0 is negative; use relative mode"),
        ({"distance_mode": "absolute", "distance": -0.1}, "distance: absolute -0.1 is negative"),
        ({"distance_mode": "relative", "distance": math.nan}, "distance: nan is not a finite number"),
        ({"entropy_reference": math.inf}, "entropy_reference: inf is not a finite number"),
    ],
)
def test_bad_controls_are_clear_errors(kwargs, match):
    with pytest.raises(errors.InputShapeError, match=match):
        A.apply_controls(palette(RED), **kwargs)


def test_relative_controls_without_a_negative_put_the_references_on_the_empty_condition():
    out = controlled(palette(RED), "relative", "relative")
    _, negative = A.branch_conditions(out)
    assert float(negative.histogram.abs().sum()) == 0.0 and negative.kind.tolist() == [A.KIND_NONE]
    assert negative.entropy.tolist() == [ENTROPY_REF] and negative.distance.tolist() == [f32(DISTANCE_REF)]
