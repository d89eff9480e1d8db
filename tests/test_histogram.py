"""palette_core.histogram: the frozen 34x12x10 bin layout, histograms and entropy."""

from __future__ import annotations

import colorsys
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from palette_core import InputShapeError
from palette_core import histogram as H


def reference_bin(r: float, g: float, b: float) -> int:
    """docs/design.md §4 written out with colorsys, one colour at a time."""
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
