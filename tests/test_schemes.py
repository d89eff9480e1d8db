"""palette_core.oklab and palette_core.schemes: OKLab against colour-science, the CSS Color 4 gamut mapping
against a line-by-line scalar transcription of its pseudo-code, scheme hue relations, and the palette edits."""

from __future__ import annotations

import math

import colour
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from palette_core.errors import PaletteError, PaletteFormatError
from palette_core.oklab import (
    JND,
    delta_e_ok,
    gamut_map_oklch,
    in_srgb_gamut,
    oklab_to_oklch,
    oklab_to_srgb,
    oklch_to_oklab,
    srgb_to_oklab,
    srgb_to_oklch,
)
from palette_core.palette import Palette
from palette_core.schemes import (
    EDIT_OPERATIONS,
    SCHEME_HUES,
    SCHEMES,
    darken,
    desaturate,
    edit_palette,
    keep_heaviest,
    lighten,
    merge_palettes,
    palette_from_color,
    saturate,
    scheme_colors,
    scheme_oklch,
    sort_palette,
)

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# colour-science reaches OKLab through XYZ (the 4-digit IEC sRGB matrix, then Ottosson's XYZ -> LMS matrix);
# we go straight from linear sRGB with his sRGB matrix. The two paths differ by ~1e-4, a 200th of the JND.
COLOUR_SCIENCE_ATOL = 2.5e-4

hex_colours = st.integers(0, 0xFFFFFF).map(lambda v: f"#{v:06x}")
rgb_triples = st.tuples(*[st.floats(0.0, 1.0)] * 3).map(lambda t: np.array(t, dtype=np.float64))
palettes = st.lists(
    st.tuples(hex_colours, st.floats(0.01, 10.0)),
    min_size=1,
    max_size=12,
).map(lambda items: Palette.from_hex([h for h, _ in items], [w for _, w in items]))


def segment_distance(lab: np.ndarray, lch_target: np.ndarray) -> np.ndarray:
    """ΔEOK from ``lab`` to the nearest colour of the target's lightness and hue with chroma in [0, C]."""
    lightness, chroma, hue = lch_target[..., 0], lch_target[..., 1], np.radians(lch_target[..., 2])
    direction = np.stack((np.cos(hue), np.sin(hue)), -1)
    t = np.clip((lab[..., 1:] * direction).sum(-1), 0.0, chroma)
    ab = lab[..., 1:] - t[..., None] * direction
    return np.sqrt((lab[..., 0] - lightness) ** 2 + (ab**2).sum(-1))


def hue_gap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angular distance in degrees, in [0, 180]."""
    d = np.abs(a - b) % 360.0
    return np.minimum(d, 360.0 - d)


# --- OKLab ---------------------------------------------------------------------------------------------


@FAST
@given(st.lists(rgb_triples, min_size=1, max_size=32))
def test_oklab_matches_colour_science(rows):
    rgb = np.stack(rows)
    ours = srgb_to_oklab(rgb)
    np.testing.assert_allclose(ours, colour.convert(rgb, "sRGB", "Oklab"), atol=COLOUR_SCIENCE_ATOL, rtol=0)
    # OKLCH: the same polar form as colour-science's (hue compared where it is defined).
    lch, ref = oklab_to_oklch(ours), colour.Oklab_to_Oklch(ours)
    np.testing.assert_allclose(lch[:, :2], ref[:, :2], atol=1e-12)
    defined = lch[:, 1] > 1e-6
    assert (hue_gap(lch[defined, 2], ref[defined, 2]) < 1e-9).all()


def test_oklab_fixed_points_and_round_trip():
    white, black = srgb_to_oklab(np.ones(3)), srgb_to_oklab(np.zeros(3))
    np.testing.assert_allclose(white, [1.0, 0.0, 0.0], atol=1e-7)
    np.testing.assert_allclose(black, [0.0, 0.0, 0.0], atol=1e-12)
    rgb = np.random.default_rng(0).random((5000, 3))
    np.testing.assert_allclose(oklab_to_srgb(srgb_to_oklab(rgb)), rgb, atol=1e-12)
    lch = srgb_to_oklch(rgb)
    assert (lch[:, 2] >= 0).all() and (lch[:, 2] < 360).all()
    np.testing.assert_allclose(oklch_to_oklab(lch), srgb_to_oklab(rgb), atol=1e-12)
    # torch (float32 and float64) agrees with numpy and keeps its kind and dtype
    t64 = srgb_to_oklab(torch.from_numpy(rgb))
    assert t64.dtype == torch.float64 and torch.allclose(t64, torch.from_numpy(srgb_to_oklab(rgb)), atol=1e-12)
    t32 = srgb_to_oklch(torch.from_numpy(rgb).float())
    assert t32.dtype == torch.float32
    assert float((t32[:, :2].double() - torch.from_numpy(lch[:, :2])).abs().max()) < 1e-5


# --- gamut mapping -------------------------------------------------------------------------------------


def css_gamut_map_reference(lightness: float, chroma: float, hue: float) -> np.ndarray:
    """CSS Color 4 'binary search gamut mapping with local MINDE', one colour, step by step as published."""
    if lightness >= 1.0:
        return np.ones(3)
    if lightness <= 0.0:
        return np.zeros(3)

    def lab(c: float) -> np.ndarray:
        return np.array([lightness, c * math.cos(math.radians(hue)), c * math.sin(math.radians(hue))])

    def in_gamut(rgb: np.ndarray) -> bool:
        return bool(((rgb >= 0) & (rgb <= 1)).all())

    def delta(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.sqrt(((a - b) ** 2).sum()))

    current = lab(chroma)
    if in_gamut(oklab_to_srgb(current)):
        return np.clip(oklab_to_srgb(current), 0, 1)
    clipped = np.clip(oklab_to_srgb(current), 0, 1)
    if delta(srgb_to_oklab(clipped), current) < 0.02:
        return clipped
    low, high, low_in_gamut = 0.0, chroma, True
    while high - low > 1e-4:
        mid = (low + high) / 2
        current = lab(mid)
        if low_in_gamut and in_gamut(oklab_to_srgb(current)):
            low = mid
            continue
        clipped = np.clip(oklab_to_srgb(current), 0, 1)
        e = delta(srgb_to_oklab(clipped), current)
        if e < 0.02:
            if 0.02 - e < 1e-4:
                return clipped
            low_in_gamut, low = False, mid
        else:
            high = mid
    return clipped


def test_gamut_map_follows_the_css_algorithm():
    rng = np.random.default_rng(3)
    n = 1500
    lch = np.stack((rng.uniform(-0.05, 1.05, n), rng.uniform(0, 0.45, n), rng.uniform(0, 360, n)), -1)
    ours = gamut_map_oklch(lch)
    ref = np.stack([css_gamut_map_reference(*row) for row in lch])
    diff = np.abs(ours - ref).max(-1)
    # When the published loop ends on an in-gamut step it returns the last clipped candidate, at most one
    # chroma epsilon (1e-4) away; we return the candidate at the final lower bound. Everywhere else: equal.
    assert (diff < 1e-9).mean() > 0.99
    assert diff.max() < 1e-3
    assert (ours >= 0).all() and (ours <= 1).all()


@FAST
@given(st.lists(st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 0.6), st.floats(0.0, 360.0)), min_size=1, max_size=16))
def test_gamut_map_stays_in_gamut_within_a_jnd_of_the_target_hue_and_lightness(rows):
    lch = np.array(rows, dtype=np.float64)
    rgb = gamut_map_oklch(lch)
    assert (rgb >= 0).all() and (rgb <= 1).all()
    inner = (lch[:, 0] > 0) & (lch[:, 0] < 1)
    dist = segment_distance(srgb_to_oklab(rgb), lch)
    assert (dist[inner] <= JND + 1e-9).all()
    # in-gamut targets come back as they are
    exact = in_srgb_gamut(oklab_to_srgb(oklch_to_oklab(lch))) & inner
    np.testing.assert_allclose(srgb_to_oklch(rgb[exact])[:, :2], lch[exact, :2], atol=1e-6)


def test_gamut_map_torch_matches_numpy_and_refuses_nan():
    rng = np.random.default_rng(4)
    lch = np.stack((rng.random(300), rng.random(300) * 0.4, rng.random(300) * 360), -1)
    ref = gamut_map_oklch(lch)
    np.testing.assert_allclose(gamut_map_oklch(torch.from_numpy(lch)).numpy(), ref, atol=1e-12)
    assert float((gamut_map_oklch(torch.from_numpy(lch).float()).double() - torch.from_numpy(ref)).abs().max()) < 1e-3
    with pytest.raises(PaletteError, match="NaN or infinite"):
        gamut_map_oklch(np.array([0.5, math.nan, 10.0]))


# --- schemes -------------------------------------------------------------------------------------------


@FAST
@given(hex_colours, st.sampled_from(list(SCHEME_HUES)))
def test_scheme_hues_keep_their_relations(base, scheme):
    count = len(SCHEME_HUES[scheme])
    p = palette_from_color(base, scheme, count, 0.3)
    assert len(p) == count and p.is_uniform
    assert p.hex[0] == base  # an sRGB base is in gamut: the first colour is the base itself
    out = srgb_to_oklab(p.colors_array.astype(np.float64))
    base_lch = srgb_to_oklch(np.array([int(base[i : i + 2], 16) for i in (1, 3, 5)]) / 255.0)
    # The first K colours are the base's lightness and chroma at the scheme's hues, each hue within the JND
    # of its target; where sRGB can show the target it is exact (hues exactly 120 degrees apart for triadic).
    for off, colour_lab in zip(SCHEME_HUES[scheme], out):
        target = np.array([base_lch[0], base_lch[1], (base_lch[2] + off) % 360])
        assert segment_distance(colour_lab, target) <= JND + 1e-6
        if bool(in_srgb_gamut(oklab_to_srgb(oklch_to_oklab(target)))) and base_lch[1] > 0.02:
            got = oklab_to_oklch(colour_lab)
            assert hue_gap(got[2], target[2]) < 0.05  # 8-bit rounding of the output moves hue slightly
            assert abs(got[0] - target[0]) < 0.005


def test_triadic_and_complementary_hues_exact_when_in_gamut():
    base = oklch_to_oklab(np.array([0.7, 0.05, 40.0]))  # low chroma: every hue fits in sRGB
    rgb = oklab_to_srgb(base)
    for scheme, gaps in (("triadic", [120.0, 240.0]), ("complementary", [180.0]), ("tetradic", [90.0, 180, 270])):
        out = srgb_to_oklch(scheme_colors(rgb, scheme, len(gaps) + 1, 0.0))
        np.testing.assert_allclose((out[1:, 2] - out[0, 2]) % 360, gaps, atol=1e-6)
        np.testing.assert_allclose(out[:, :2], np.broadcast_to(out[0, :2], out[:, :2].shape), atol=1e-9)


@FAST
@given(hex_colours, st.sampled_from(SCHEMES), st.integers(1, 64), st.floats(0.0, 1.0))
def test_count_respected_colours_in_gamut(base, scheme, count, spread):
    p = palette_from_color(base, scheme, count, spread)
    assert len(p) == count
    assert (p.colors_array >= 0).all() and (p.colors_array <= 1).all()
    np.testing.assert_allclose(p.weights_array, np.full(count, 1 / count), rtol=1e-6)


@FAST
@given(hex_colours, st.integers(2, 12), st.one_of(st.just(0.0), st.floats(1e-3, 1.0)))
def test_monochromatic_lightness_grid(base, count, spread):
    base_lch = srgb_to_oklch(np.array([int(base[i : i + 2], 16) for i in (1, 3, 5)]) / 255.0)
    target = scheme_oklch(base_lch, "monochromatic", count, spread)
    lightness = target[:, 0]
    assert lightness[0] == base_lch[0]  # the base's own lightness comes first
    assert (lightness >= 0).all() and (lightness <= 1).all()
    np.testing.assert_allclose(target[:, 1:], np.broadcast_to(base_lch[1:], (count, 2)), atol=1e-12)
    step = spread / (count - 1)
    if step > 0:
        inside = (lightness > 0) & (lightness < 1)
        k = (lightness[inside] - base_lch[0]) / step
        np.testing.assert_allclose(k, np.round(k), atol=1e-6)  # on the grid through the base
        if spread / 2 + step <= min(base_lch[0], 1 - base_lch[0]):  # room on both sides: exactly spread wide
            assert lightness.max() - lightness.min() == pytest.approx(spread, abs=1e-9)
            assert len(np.unique(np.round(lightness, 9))) == count


def test_tints_and_shades_mix_toward_white_and_black():
    base = np.array([0.2, 0.4, 0.7])
    lch = srgb_to_oklch(base)
    tints = scheme_oklch(lch, "tints", 5, 1.0)
    np.testing.assert_allclose(tints[:, 0], lch[0] + np.linspace(0, 1, 5) * (1 - lch[0]), atol=1e-12)
    np.testing.assert_allclose(tints[:, 1], lch[1] * np.linspace(1, 0, 5), atol=1e-12)
    assert (tints[:, 2] == lch[2]).all()
    shades = scheme_colors(base, "shades", 5, 1.0)
    np.testing.assert_allclose(shades[0], base, atol=1e-9)
    np.testing.assert_allclose(shades[-1], 0.0, atol=1e-9)
    assert (np.diff(srgb_to_oklab(shades)[:, 0]) < 0).all()


def test_scheme_colors_are_batched_and_keep_the_array_kind():
    bases = np.random.default_rng(5).random((2, 3, 3))
    out = scheme_colors(bases, "split_complementary", 7, 0.4)
    assert out.shape == (2, 3, 7, 3) and out.dtype == np.float64
    single = scheme_colors(bases[1, 2], "split_complementary", 7, 0.4)
    np.testing.assert_allclose(out[1, 2], single, atol=1e-12)
    t = scheme_colors(torch.from_numpy(bases).float(), "split_complementary", 7, 0.4)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.shape == (2, 3, 7, 3)
    assert float((t.double() - torch.from_numpy(out)).abs().max()) < 2e-3


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"base": "#12345g"}, PaletteFormatError, "is not a colour"),
        ({"base": "red"}, PaletteFormatError, "is not a colour"),
        ({"base": "  "}, PaletteError, "empty"),
        ({"base": [0.1, 0.2]}, PaletteError, "expected"),
        ({"base": [0.1, math.nan, 0.2]}, PaletteError, "NaN"),
        ({"count": 0}, PaletteError, "count: 0 must be a whole number of colours from 1 to 64"),
        ({"count": 65}, PaletteError, "from 1 to 64"),
        ({"count": 2.5}, PaletteError, "whole number"),
        ({"count": True}, PaletteError, "whole number"),
        ({"scheme": "pentadic"}, PaletteError, "not one of complementary"),
        ({"lightness_spread": math.nan}, PaletteError, "lightness_spread: nan must be a number from 0 to 1"),
        ({"lightness_spread": 1.5}, PaletteError, "from 0 to 1"),
    ],
)
def test_bad_scheme_input_gives_clear_errors(kwargs, error, match):
    args = {"base": "#e63946", "scheme": "triadic", "count": 5, "lightness_spread": 0.3} | kwargs
    with pytest.raises(error, match=match):
        palette_from_color(**args)


# --- edits ---------------------------------------------------------------------------------------------


def pairs(p: Palette) -> list[tuple[str, float]]:
    return sorted(zip(p.hex, p.weights_array.tolist()))


@FAST
@given(palettes, st.sampled_from(["hue", "lightness", "weight"]))
def test_sort_is_a_permutation_in_order(p, key):
    s = sort_palette(p, key)
    assert pairs(s) == pairs(p)  # same colours with the same weights
    lch = srgb_to_oklch(s.colors_array.astype(np.float64))
    if key == "lightness":
        assert (np.diff(lch[:, 0]) >= 0).all()
    elif key == "weight":
        assert (np.diff(s.weights_array) <= 0).all()
    else:
        grey = lch[:, 1] < 0.01
        assert not (np.diff(grey.astype(int)) < 0).any()  # greys last
        assert (np.diff(lch[~grey, 2]) >= 0).all() and (np.diff(lch[grey, 0]) >= 0).all()


@FAST
@given(palettes, st.sampled_from(EDIT_OPERATIONS), st.floats(0.0, 1.0), st.integers(1, 20))
def test_edits_keep_weights_summing_to_one(p, operation, amount, n):
    out = edit_palette(p, operation, amount, n)
    assert float(out.weights_array.astype(np.float64).sum()) == pytest.approx(1.0, abs=1e-6)
    assert (out.colors_array >= 0).all() and (out.colors_array <= 1).all()
    if operation in ("lighten", "darken", "saturate", "desaturate"):
        assert np.array_equal(out.weights_array, p.weights_array)  # colour edits leave weights alone
        assert len(out) == len(p)


@FAST
@given(palettes, st.floats(0.0, 1.0), st.sampled_from(["lighten", "darken", "saturate", "desaturate"]))
def test_lightness_and_chroma_edits_hit_their_targets(p, amount, operation):
    out = edit_palette(p, operation, amount)
    before = srgb_to_oklch(p.colors_array.astype(np.float64))
    target = before.copy()
    if operation == "lighten":
        target[:, 0] = np.minimum(before[:, 0] + amount, 1.0)
    elif operation == "darken":
        target[:, 0] = np.maximum(before[:, 0] - amount, 0.0)
    else:
        target[:, 1] *= 1 + amount if operation == "saturate" else 1 - amount
    inner = (target[:, 0] > 0) & (target[:, 0] < 1)
    dist = segment_distance(srgb_to_oklab(out.colors_array.astype(np.float64)), target)
    assert (dist[inner] <= JND + 1e-5).all()  # float32 storage adds ~1e-7


def test_edit_extremes():
    p = Palette.parse("#e63946, #457b9d, #f1faee")
    assert lighten(p, 1.0).hex == ["#ffffff"] * 3
    assert darken(p, 1.0).hex == ["#000000"] * 3
    grey = srgb_to_oklch(desaturate(p, 1.0).colors_array.astype(np.float64))
    assert (grey[:, 1] < 1e-6).all()
    np.testing.assert_allclose(grey[:, 0], srgb_to_oklch(p.colors_array.astype(np.float64))[:, 0], atol=1e-6)
    assert lighten(p, 0.0).hex == p.hex and saturate(p, 0.0).hex == p.hex
    more = srgb_to_oklch(saturate(Palette.parse("#8a7f78"), 1.0).colors_array.astype(np.float64))
    less = srgb_to_oklch(Palette.parse("#8a7f78").colors_array.astype(np.float64))
    assert more[0, 1] == pytest.approx(2 * less[0, 1], rel=1e-3)  # a dull colour doubles its chroma in gamut


@FAST
@given(palettes, st.integers(1, 15))
def test_keep_heaviest(p, n):
    out = keep_heaviest(p, n)
    assert len(out) == min(n, len(p))
    w = p.weights_array
    heaviest = np.argsort(-w, kind="stable")[:n]
    dropped = np.setdiff1d(np.arange(len(p)), heaviest)
    if len(dropped):  # every kept colour weighs at least as much as every dropped one
        assert w[heaviest].min() >= w[dropped].max()
    idx = np.sort(heaviest)  # original order, proportions kept
    assert out.hex == [p.hex[i] for i in idx]
    np.testing.assert_allclose(out.weights_array, w[idx] / w[idx].sum(), rtol=1e-5)


@FAST
@given(palettes, palettes, st.floats(0.0, 1.0))
def test_merge_sums_weights_per_colour(a, b, balance):
    out = merge_palettes(a, b, balance)
    expected: dict[str, float] = {}
    for pal, share in ((a, balance), (b, 1 - balance)):
        for h, w in zip(pal.hex, pal.weights_array.tolist()):
            expected[h] = expected.get(h, 0.0) + share * w
    assert out.hex == list(expected)  # duplicates merged, first occurrence order
    np.testing.assert_allclose(out.weights_array, list(expected.values()), atol=1e-6)
    assert float(out.weights_array.sum()) == pytest.approx(1.0, abs=1e-6)


def test_merge_with_tolerance_and_limits():
    a = Palette.parse("#ff0000:3, #00ff00")
    b = Palette.parse("#fe0101, #0000ff")
    assert merge_palettes(a, b).hex == ["#ff0000", "#00ff00", "#fe0101", "#0000ff"]
    near = merge_palettes(a, b, balance=0.5, tolerance=0.02)
    assert near.hex == ["#ff0000", "#00ff00", "#0000ff"]
    np.testing.assert_allclose(near.weights_array, [0.375 + 0.25, 0.125, 0.25], atol=1e-6)
    many = Palette.from_colors(np.random.default_rng(6).random((200, 3)))
    other = Palette.from_colors(np.random.default_rng(7).random((100, 3)))
    with pytest.raises(PaletteError, match="300 distinct colours, more than 256: keep fewer"):
        merge_palettes(many, other)


def test_bad_edit_input_gives_clear_errors():
    p = Palette.parse("#e63946, #457b9d")
    empty = Palette(np.zeros((0, 3)), np.zeros(0))
    with pytest.raises(PaletteError, match="palette: the palette is empty"):
        sort_palette(empty)
    with pytest.raises(PaletteError, match="the palette is empty"):
        lighten(empty, 0.1)
    with pytest.raises(PaletteError, match="b: the palette is empty"):
        merge_palettes(p, empty)
    with pytest.raises(PaletteError, match="amount: nan must be a number from 0 to 1"):
        lighten(p, math.nan)
    with pytest.raises(PaletteError, match="amount: 1.5"):
        saturate(p, 1.5)
    with pytest.raises(PaletteError, match="n: 0 must be a whole number"):
        keep_heaviest(p, 0)
    with pytest.raises(PaletteError, match="balance: nan"):
        merge_palettes(p, p, math.nan)
    with pytest.raises(PaletteError, match="operation: 'blur' is not one of sort_hue"):
        edit_palette(p, "blur")
    with pytest.raises(PaletteError, match="key: 'chroma'"):
        sort_palette(p, "chroma")
    with pytest.raises(PaletteError, match="expected a Palette, got str"):
        sort_palette("#e63946")
    # delta_e_ok is plain Euclidean OKLab distance
    assert float(delta_e_ok(np.array([0.5, 0.1, 0.0]), np.array([0.5, 0.1, 0.02]))) == pytest.approx(0.02)
