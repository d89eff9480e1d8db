"""palette_core.histogram: the frozen 34x12x10 bin layout, histograms and entropy."""

from __future__ import annotations

import colorsys
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from palette_core import InputShapeError, bins
from palette_core import histogram as H


def reference_bin(r: float, g: float, b: float) -> int:
    """SPEC §4 written out with colorsys, one colour at a time."""
    h, s, v = colorsys.rgb_to_hsv(r, g, b)
    hi = math.floor(34 * h) % 34
    si = min(math.floor(12 * s), 11)
    vi = min(math.floor(10 * v), 9)
    return (hi * 12 + si) * 10 + vi


def flat(h: int, s: int, v: int) -> int:
    return (h * 12 + s) * 10 + v


@pytest.mark.parametrize(
    ("rgb", "expected"),
    [
        ((0.0, 0.0, 0.0), flat(0, 0, 0)),  # black
        ((1.0, 1.0, 1.0), flat(0, 0, 9)),  # white: V = 1 clamps to the last bin
        ((0.5, 0.5, 0.5), flat(0, 0, 5)),  # grey: S = 0, hue bin 0
        ((0.45, 0.45, 0.45), flat(0, 0, 4)),
        ((1.0, 0.0, 0.0), flat(0, 11, 9)),  # red
        ((0.0, 1.0, 0.0), flat(11, 11, 9)),  # green: H = 1/3 -> floor(11.33)
        ((0.0, 0.0, 1.0), flat(22, 11, 9)),  # blue: H = 2/3 -> floor(22.67)
        ((1.0, 1.0, 0.0), flat(5, 11, 9)),  # yellow: H = 1/6 -> floor(5.67)
        ((1.0, 0.5, 0.5), flat(0, 6, 9)),  # S = 0.5 exactly: first colour of bin 6
        ((0.3, 0.3, 0.3), flat(0, 0, 3)),  # V = 0.3: 10 * 0.3 = 3.0000000000000004 -> 3
        ((0.1, 0.1, 0.1), flat(0, 0, 1)),  # V = 0.1: 10 * 0.1 = 1.0 -> bin 1 (edge)
        ((1.0, 0.0, 1.0 / 34 * 6), flat(33, 11, 9)),  # hue just below 1 -> last hue bin
    ],
)
def test_named_colours_land_in_their_bins(rgb, expected):
    assert reference_bin(*rgb) == expected
    assert int(H.bin_index(torch.tensor(rgb, dtype=torch.float64))) == expected


def test_hue_rounding_to_one_wraps_to_bin_zero():
    b = np.nextafter(0.1, 1.0)  # r is max, b a hair above g: h/6 is a tiny negative, and (h/6) % 1 == 1.0
    assert colorsys.rgb_to_hsv(0.5, 0.1, b)[0] == 1.0
    idx = int(H.bin_index(torch.tensor([0.5, 0.1, b], dtype=torch.float64)))
    assert idx // 120 == 0
    assert idx == reference_bin(0.5, 0.1, b)


def test_bins_match_the_colorsys_reference_on_random_and_8bit_colours():
    g = torch.Generator().manual_seed(3)
    rgb = torch.cat(
        [
            torch.rand(20_000, 3, generator=g, dtype=torch.float64),
            torch.randint(0, 256, (20_000, 3), generator=g).double() / 255.0,
        ]
    )
    ref = torch.tensor([reference_bin(*c) for c in rgb.tolist()])
    assert torch.equal(H.bin_index(rgb), ref)


def test_bins_do_not_depend_on_dtype_for_the_same_values():
    x32 = (torch.randint(0, 256, (50_000, 3), generator=torch.Generator().manual_seed(4)) / 255.0).float()
    assert torch.equal(H.bin_index(x32), H.bin_index(x32.double()))


def test_bin_centres_fall_in_their_own_bins():
    centres = H.bin_centers(torch.float64)
    assert centres.shape == (H.NUM_BINS, 3)
    assert torch.equal(H.bin_index(centres), torch.arange(H.NUM_BINS))
    assert centres.min() >= 0 and centres.max() <= 1


def test_image_histogram_sums_to_one_and_counts_pixels():
    img = torch.zeros(4, 5, 3)
    img[0, :] = torch.tensor([1.0, 0.0, 0.0])  # 5 red pixels of 20
    hist = H.image_histogram(img)
    assert hist.shape == (H.NUM_BINS,)
    assert torch.isclose(hist.sum(), torch.tensor(1.0))
    assert hist[flat(0, 11, 9)] == pytest.approx(0.25)
    assert hist[0] == pytest.approx(0.75)


def test_batched_histogram_equals_per_image_and_handles_large_images():
    imgs = torch.rand(3, 300, 500, 3, generator=torch.Generator().manual_seed(5))  # > one binning slice
    batch = H.image_histogram(imgs)
    assert batch.shape == (3, H.NUM_BINS)
    for i in range(3):
        assert torch.equal(batch[i], H.image_histogram(imgs[i]))
    counts = torch.bincount(H.bin_index(imgs[1]).reshape(-1), minlength=H.NUM_BINS)
    assert torch.allclose(batch[1], counts.float() / counts.sum())


def test_documented_conversions_uint8_rgba_numpy():
    u8 = torch.randint(0, 256, (16, 16, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(6))
    as_float = u8.float() / 255
    assert torch.equal(H.image_histogram(u8), H.image_histogram(as_float))
    rgba = torch.cat([as_float, torch.rand(16, 16, 1)], dim=-1)
    assert torch.equal(H.image_histogram(rgba), H.image_histogram(as_float))
    assert torch.equal(H.image_histogram(as_float.numpy()), H.image_histogram(as_float))


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (torch.rand(8, 8), "expected [H, W, 3]"),
        (torch.rand(1, 2, 8, 8, 3), "expected [H, W, 3]"),
        (torch.rand(8, 8, 2), "expected 3 (RGB)"),
        (torch.zeros(0, 8, 3), "empty"),
        (torch.full((4, 4, 3), float("nan")), "NaN"),
        (torch.rand(4, 4, 3) * 255, "[0, 1]"),
        (torch.ones(4, 4, 3, dtype=torch.int32), "dtype"),
        ("not an image", "torch.Tensor"),
    ],
)
def test_bad_images_raise_a_clear_error(image, message):
    with pytest.raises(InputShapeError, match="image") as info:
        H.image_histogram(image)
    assert message in str(info.value)


def test_palette_histogram_accumulates_duplicates_and_normalises_weights():
    colors = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    hist = H.palette_histogram(colors, torch.tensor([2.0, 1.0, 1.0]))
    assert hist.sum() == pytest.approx(1.0)
    assert hist[flat(0, 11, 9)] == pytest.approx(0.75)
    assert hist[flat(22, 11, 9)] == pytest.approx(0.25)
    equal = H.palette_histogram(colors)
    assert equal[flat(0, 11, 9)] == pytest.approx(2 / 3)


def test_palette_histogram_batched_and_bad_weights():
    colors = torch.rand(4, 6, 3)
    batch = H.palette_histogram(colors)
    assert batch.shape == (4, H.NUM_BINS)
    assert torch.allclose(batch[2], H.palette_histogram(colors[2]))
    with pytest.raises(InputShapeError, match="weights"):
        H.palette_histogram(colors[0], torch.tensor([1.0, -1, 1, 1, 1, 1]))
    with pytest.raises(InputShapeError, match="sum to 0"):
        H.palette_histogram(colors[0], torch.zeros(6))
    with pytest.raises(InputShapeError, match=r"expected \[6\]"):
        H.palette_histogram(colors[0], torch.ones(5))


@given(st.sets(st.integers(0, H.NUM_BINS - 1), min_size=1, max_size=300))
@settings(max_examples=100, deadline=None)
def test_entropy_of_k_equal_bins_is_log2_k(bins):
    hist = torch.zeros(H.NUM_BINS, dtype=torch.float64)
    hist[list(bins)] = 1.0 / len(bins)
    assert float(H.entropy(hist)) == pytest.approx(math.log2(len(bins)), abs=1e-9)


def test_entropy_edge_values_and_batch():
    uniform = torch.full((H.NUM_BINS,), 1.0 / H.NUM_BINS, dtype=torch.float64)
    assert float(H.entropy(uniform)) == pytest.approx(H.MAX_ENTROPY)
    assert float(H.entropy(torch.zeros(H.NUM_BINS))) == 0.0
    counts = torch.zeros(2, H.NUM_BINS)
    counts[0, :4] = 3.0  # counts, not probabilities: normalised first
    counts[1, 0] = 1.0
    assert torch.allclose(H.entropy(counts), torch.tensor([2.0, 0.0]))


@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=64))
@settings(max_examples=200, deadline=None)
def test_bin_index_property_matches_reference(colors):
    got = H.bin_index(torch.tensor(colors, dtype=torch.float64)).tolist()
    assert got == [reference_bin(*c) for c in colors]


def test_8bit_lookup_path_is_identical_to_the_exact_path(monkeypatch):
    g = torch.Generator().manual_seed(8)
    img = torch.randint(0, 256, (600, 520, 3), generator=g).float() / 255.0  # float32(k / 255), >= 2^18 pixels
    assert H._counts_8bit(img.reshape(-1, 3)) is not None
    fast = H.image_histogram(img)
    monkeypatch.setattr(H, "_LUT_MIN_PIXELS", 1 << 40)
    assert H._counts_8bit(img.reshape(-1, 3)) is None
    assert torch.equal(fast, H.image_histogram(img))
    nudged = img.clone()
    nudged[0, 0, 0] = 0.5  # not a multiple of 1/255: the whole image takes the exact path
    monkeypatch.setattr(H, "_LUT_MIN_PIXELS", 1)
    assert H._counts_8bit(nudged.reshape(-1, 3)) is None


# ---------------------------------------------------------------------------------------------- float32 pre-pass


def edge_pixels(n: int, seed: int) -> np.ndarray:
    """float32 pixels built to sit on or a few ulps off bin edges, near-greys (1-ulp chroma), ties, subnormals."""
    rng = np.random.default_rng(seed)
    hsv = np.stack([rng.integers(0, 35, n) / 34.0, rng.integers(0, 13, n) / 12.0, rng.integers(0, 11, n) / 10.0], -1)
    hsv = np.where(rng.random((n, 3)) < 0.3, rng.random((n, 3)), hsv)  # some components off the edges
    hsv[:, 0] %= 1.0
    rgb = np.array([colorsys.hsv_to_rgb(*c) for c in hsv.tolist()], dtype=np.float32)
    steps = rng.integers(-3, 4, rgb.shape)
    for k in range(1, 4):
        rgb = np.where(steps >= k, np.nextafter(rgb, np.float32(2)), rgb)
        rgb = np.where(-steps >= k, np.nextafter(rgb, np.float32(-1)), rgb)
    x = rng.random(n // 4).astype(np.float32)
    near_grey = np.stack([x, np.nextafter(x, np.float32(1)), np.nextafter(x, np.float32(0))], -1)
    near_grey = np.take_along_axis(near_grey, rng.permuted(np.tile([0, 1, 2], (n // 4, 1)), axis=1), 1)
    ties = np.repeat(rng.random((n // 4, 2)).astype(np.float32), [2, 1], axis=1)[:, rng.permutation(3)]
    subnormal = (rng.integers(0, 5, (n // 8, 3)) * np.float32(1e-45)).astype(np.float32)
    eight_bit = (rng.integers(0, 256, (n // 4, 3)) / np.float32(255)).astype(np.float32)
    return np.concatenate([np.clip(rgb, 0, 1), near_grey, ties, subnormal, eight_bit]).astype(np.float32)


def exact_counts(pixels: np.ndarray) -> np.ndarray:
    return np.bincount(bins._bins_of_planar(pixels), minlength=H.NUM_BINS)


def prepass(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The float32 pre-pass alone: ``(scaled hsv [3, N], flat bins [N], edge mask [N])``."""
    work = np.empty((12, pixels.shape[0]), np.float32)
    rgb = np.ascontiguousarray(pixels.T)
    scaled = bins._scaled_hsv_f32(rgb, work).copy()
    idx, edge = bins._shifted_bins_f32(rgb, work)
    row, rest = np.divmod(idx, H.S_BINS * H.V_BINS)
    mask = np.zeros(pixels.shape[0], bool)
    mask[edge] = True
    return scaled, ((row - bins._HUE_SHIFT) % H.H_BINS) * H.S_BINS * H.V_BINS + rest, mask


def test_float32_prepass_counts_are_the_exact_counts_on_edge_pixels(monkeypatch):
    px = edge_pixels(20_000, seed=1)
    ref = exact_counts(px)
    np.testing.assert_array_equal(bins.pixel_counts(px), ref)  # numpy
    assert torch.equal(bins.pixel_counts(torch.from_numpy(px)), torch.from_numpy(ref))  # CPU tensor (via numpy)
    assert torch.equal(bins._pixel_counts_f32(torch.from_numpy(px)), torch.from_numpy(ref))  # torch's spelling (GPU)
    hist = H.image_histogram(torch.from_numpy(px).reshape(1, -1, 3))
    assert torch.equal(hist, torch.from_numpy(ref).float() / len(px))
    monkeypatch.setattr(bins, "_EDGE_EPS", 0.0)  # the data is adversarial: without the exact pass, bins go wrong
    assert np.abs(bins.pixel_counts(px) - ref).sum() > 100


def colorsys_planes(px: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(h, s, v)`` planes of the pixels, one colorsys call at a time."""
    return tuple(np.array(c) for c in zip(*(colorsys.rgb_to_hsv(*p) for p in px.astype(np.float64).tolist())))


def test_float32_prepass_error_is_far_below_the_edge_margin():
    px = edge_pixels(20_000, seed=2)
    scaled, fast, edge = prepass(px)
    h, s, v = colorsys_planes(px)
    grey = px.max(1) == px.min(1)
    dh = np.abs((scaled[0] - bins._HUE_SHIFT - H.H_BINS * h + 17) % H.H_BINS - 17)
    assert np.all(np.where(grey, 0, dh) < 3e-5)  # the documented bound, ~40x inside the margin
    assert np.all(np.abs(scaled[1] - np.clip(12 * s, 0.5, 11.5)) < 3e-5)
    assert np.all(np.abs(scaled[2] - np.clip(10 * v, 0.5, 9.5)) < 3e-5)
    assert grey.sum() > 100 and np.allclose(scaled[0][grey], bins._HUE_SHIFT + 0.5)  # greys: mid-way in hue bin 0
    exact = bins._bins_of_planar(px)
    np.testing.assert_array_equal(fast[~edge], exact[~edge])


def test_float32_prepass_sends_few_continuous_pixels_to_the_exact_pass():
    px = np.random.default_rng(3).random((1 << 17, 3), dtype=np.float32)
    _, fast, edge = prepass(px)
    assert 0 < edge.mean() < 0.01  # ~6 per mill: 3 components x 2 x 1e-3 of each unit
    np.testing.assert_array_equal(fast[~edge], bins._bins_of_planar(px[~edge]))


@given(st.lists(st.tuples(*[st.floats(0, 1, width=32)] * 3), min_size=1, max_size=64))
@settings(max_examples=200, deadline=None)
def test_float32_prepass_property_matches_colorsys(colors):
    px = np.array(colors, dtype=np.float32)
    _, fast, edge = prepass(px)
    ref = [reference_bin(*c) for c in px.astype(np.float64).tolist()]
    assert [f for f, e in zip(fast.tolist(), edge) if not e] == [r for r, e in zip(ref, edge) if not e]
    np.testing.assert_array_equal(bins.pixel_counts(px), np.bincount(ref, minlength=H.NUM_BINS))
