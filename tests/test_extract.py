"""palette_core.extract: median cut and k-means against Pylette on real photographs, exact synthetic cases."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from sample_photos import photo_or_skip as photo
from scipy.optimize import linear_sum_assignment

from palette_core import InputShapeError, PaletteError
from palette_core.extract import extract_palette, extract_palettes, quantization_error, resized_pixels
from palette_core.palette import Palette

pytest.importorskip("skimage.data")  # the photographs below

# Photographs shipped inside scikit-image (no download). Astronaut is kept apart for k-means: its 5-colour
# k-means landscape has several optima within 0.2% of each other, so colours there are not comparable.
PHOTOS = ["coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina", "motorcycle"]


@functools.cache
def pylette_palette(name: str, size: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Pylette's colours (8-bit ints) and frequencies, in its order, on the same photo and resize."""
    pylette = pytest.importorskip("pylette")
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(1):  # scikit-learn's OpenMP threads crawl on a shared, busy CPU
        pal = pylette.extract_colors(photo(name), palette_size=size, resize=256, mode=mode)
    return np.array([c.rgb for c in pal.colors], dtype=np.float64), np.array([c.frequency for c in pal.colors])


def matched_max_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Largest channel difference after matching the colours of ``a`` and ``b`` one-to-one (Hungarian)."""
    cost = np.abs(a[:, None, :] - b[None, :, :]).max(-1)
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].max())


# ---- Pylette agreement on real photographs ------------------------------------------------------------


@pytest.mark.parametrize("name", [*PHOTOS, "astronaut"])
@pytest.mark.parametrize("size", [2, 5, 8, 16])
def test_median_cut_matches_pylette_boxes_exactly(name, size):
    ref_rgb, ref_freq = pylette_palette(name, size, "MC")
    pal = extract_palette(photo(name), size=size, method="median_cut")
    # Same boxes in the same order (identical shares) and the same 8-bit colours: bit-identical palettes.
    assert len(pal) == len(ref_freq)
    np.testing.assert_allclose(pal.weights.double().numpy(), ref_freq, rtol=0, atol=1e-7)
    assert np.array_equal(np.round(pal.colors.double().numpy() * 255), ref_rgb)
    assert torch.equal(pal.colors, torch.from_numpy(ref_rgb).float() / 255)


@pytest.mark.parametrize("name", PHOTOS)
def test_kmeans_matches_pylette_colours_and_error(name):
    ref_rgb, _ = pylette_palette(name, 5, "KM")
    px = resized_pixels(photo(name))
    pal = extract_palette(photo(name), size=5, method="kmeans")
    assert len(pal) == 5
    assert quantization_error(px, pal.colors) <= 1.01 * quantization_error(px, ref_rgb / 255)
    # Pylette truncates its centroids to 8-bit levels, hence compare at 4/255.
    assert matched_max_diff(pal.colors.double().numpy() * 255, ref_rgb) <= 4.0


@pytest.mark.parametrize(
    ("name", "size"), [*((n, 8) for n in [*PHOTOS, "astronaut"]), *((n, 3) for n in ["astronaut", *PHOTOS[:3]])]
)
def test_kmeans_error_is_no_worse_than_pylette(name, size):
    ref_rgb, _ = pylette_palette(name, size, "KM")
    px = resized_pixels(photo(name))
    pal = extract_palette(photo(name), size=size)
    assert quantization_error(px, pal.colors) <= 1.01 * quantization_error(px, ref_rgb / 255)


def test_kmeans_astronaut_error_no_worse_than_pylette():
    ref_rgb, _ = pylette_palette("astronaut", 5, "KM")
    px = resized_pixels(photo("astronaut"))
    for seed in range(3):
        pal = extract_palette(photo("astronaut"), size=5, seed=seed)
        assert quantization_error(px, pal.colors) <= 1.01 * quantization_error(px, ref_rgb / 255)


def test_resize_is_pylettes_square_bicubic_resample():
    img = photo("coffee")  # 400 x 600: the aspect ratio is not kept
    px = resized_pixels(img, 128)
    ref = np.asarray(Image.fromarray(img).convert("RGBA").resize((128, 128)))[..., :3].reshape(-1, 3)
    assert px.shape == (128 * 128, 3) and px.dtype == torch.uint8
    assert np.array_equal(px.numpy(), ref)
    assert np.array_equal(resized_pixels(img, None).numpy(), img.reshape(-1, 3))


# ---- exact synthetic cases ------------------------------------------------------------------------------


def flat_colours(colours: list[tuple[int, int, int]], rows: list[int], width: int = 10) -> np.ndarray:
    """An 8-bit image of horizontal bands: ``rows[i]`` rows of ``colours[i]``."""
    return np.concatenate([np.tile(np.array(c, np.uint8), (r, width, 1)) for c, r in zip(colours, rows)])


THREE = [(230, 57, 70), (29, 53, 87), (241, 250, 238)]


@pytest.mark.parametrize("method", ["kmeans", "median_cut"])
@pytest.mark.parametrize("size", [3, 5, 12, 40])
def test_three_flat_colours_give_exactly_those_colours_and_shares(method, size):
    img = flat_colours(THREE, [20, 50, 30])
    pal = extract_palette(img, size=size, method=method, resize=None)
    assert pal.hex == ["#1d3557", "#f1faee", "#e63946"]  # sorted by share 50%, 30%, 20%
    assert torch.equal(pal.colors, torch.tensor([THREE[1], THREE[2], THREE[0]], dtype=torch.float32) / 255)
    assert torch.allclose(pal.weights, torch.tensor([0.5, 0.3, 0.2]), rtol=0, atol=1e-7)


def noisy_clusters(means, counts, noise: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels ``[1, N, 3]`` of clusters around ``means`` (uniform +-noise), shuffled, and the exact cluster means."""
    g = np.random.default_rng(seed)
    parts = [np.clip(np.array(m) + g.integers(-noise, noise + 1, (n, 3)), 0, 255) for m, n in zip(means, counts)]
    px = np.concatenate(parts).astype(np.uint8)
    order = g.permutation(len(px))
    return px[order][None], np.array([p.mean(0) for p in parts]) / 255


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kmeans_recovers_separated_clusters_exactly(seed):
    img, means = noisy_clusters([(40, 60, 200), (200, 40, 40), (90, 220, 90)], [3000, 2000, 1000], 12, seed)
    pal = extract_palette(img, size=3, method="kmeans", resize=None, seed=seed)
    assert torch.allclose(pal.colors.double(), torch.from_numpy(means), rtol=0, atol=1e-6)
    assert torch.allclose(pal.weights.double(), torch.tensor([0.5, 1 / 3, 1 / 6], dtype=torch.float64), atol=1e-7)


def test_median_cut_splits_separated_clusters_at_their_boundaries():
    # Red orders the clusters; shares 1/2, 1/4, 1/4 put both medians exactly on cluster boundaries.
    img, means = noisy_clusters([(20, 100, 100), (120, 110, 90), (230, 90, 110)], [2048, 1024, 1024], 6, 3)
    pal = extract_palette(img, size=3, method="median_cut", resize=None)
    assert torch.equal(pal.colors.double(), torch.from_numpy(np.round(means * 255) / 255).float().double())
    assert pal.weights.tolist() == [0.5, 0.25, 0.25]


@pytest.mark.parametrize("method", ["kmeans", "median_cut"])
def test_constant_and_tiny_images_give_one_colour(method):
    for img in (np.full((7, 5, 3), 77, np.uint8), np.array([[[12, 34, 56]]], np.uint8)):
        for resize in (256, None):
            pal = extract_palette(img, size=5, method=method, resize=resize)
            assert pal.hex == ["#{:02x}{:02x}{:02x}".format(*img[0, 0])] and pal.weights.tolist() == [1.0]


@pytest.mark.parametrize("method", ["kmeans", "median_cut"])
def test_fewer_distinct_colours_than_size_are_returned_as_they_are(method):
    img = flat_colours([(0, 0, 0), (255, 255, 255)], [3, 1])
    pal = extract_palette(img, size=8, method=method, resize=None)
    assert pal.hex == ["#000000", "#ffffff"] and pal.weights.tolist() == [0.75, 0.25]


def test_one_colour_is_the_mean():
    img = photo("chelsea")
    mean = resized_pixels(img).double().mean(0) / 255
    pal = extract_palette(img, size=1, method="kmeans")
    assert torch.allclose(pal.colors[0].double(), mean, atol=1e-6) and pal.weights.tolist() == [1.0]
    pal = extract_palette(img, size=1, method="median_cut")  # Pylette's 8-bit rounding of the box mean
    assert pal.hex == Palette.from_colors(mean[None]).hex and pal.weights.tolist() == [1.0]


# ---- properties: sorting, determinism, input forms ---------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    st.integers(0, 2**31 - 1),
    st.integers(1, 12),
    st.sampled_from(["kmeans", "median_cut"]),
    st.integers(1, 24),
    st.integers(1, 24),
)
def test_random_images_give_valid_sorted_palettes(seed, size, method, h, w):
    g = torch.Generator().manual_seed(seed)
    levels = int(torch.randint(1, 5, (1,), generator=g))  # few levels: duplicates and ties are common
    img = torch.randint(0, levels, (h, w, 3), generator=g).float() / max(levels - 1, 1)
    pal = extract_palette(img, size=size, method=method, resize=None)
    distinct = len(torch.unique((img * 255).round().reshape(-1, 3), dim=0))
    assert len(pal) == min(size, distinct)
    assert torch.all(pal.weights[:-1] >= pal.weights[1:])
    assert abs(float(pal.weights.sum()) - 1) < 1e-6
    assert float(pal.weights.min()) > 0
    counts = pal.weights.double() * h * w  # shares are whole pixel counts
    assert torch.allclose(counts, counts.round(), atol=1e-4)


@pytest.mark.parametrize("method", ["kmeans", "median_cut"])
def test_palettes_are_sorted_by_share(method):
    pal = extract_palette(photo("rocket"), size=8, method=method)
    assert torch.all(pal.weights[:-1] >= pal.weights[1:])


def test_same_seed_same_palette_and_seed_is_used():
    img = photo("astronaut")
    a, b = extract_palette(img, seed=7), extract_palette(img, seed=7)
    assert torch.equal(a.colors, b.colors) and torch.equal(a.weights, b.weights)
    palettes = {tuple(extract_palette(img, seed=s).hex) for s in range(4)}
    assert len(palettes) > 1  # astronaut's flat landscape: the seed picks between near-equal optima


def test_float_uint8_numpy_and_torch_inputs_agree():
    u8 = photo("chelsea")
    ref = extract_palette(u8, size=5)
    for img in (torch.from_numpy(u8), torch.from_numpy(u8).float() / 255, u8.astype(np.float32) / 255, u8[None]):
        assert extract_palette(img, size=5).equals(ref)
    rgba = np.concatenate([u8, np.full(u8.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    assert extract_palette(rgba, size=5).equals(ref)


def test_batch_helper_gives_one_palette_per_image():
    batch = torch.stack([torch.from_numpy(photo("coffee")[:300, :400]), torch.from_numpy(photo("chelsea")[:, :400])])
    pals = extract_palettes(batch.float() / 255, size=4, method="median_cut")
    assert len(pals) == 2 and all(isinstance(p, Palette) for p in pals)
    for p, img in zip(pals, batch):
        assert p.equals(extract_palette(img, size=4, method="median_cut"))


def test_quantization_error_definition():
    px = torch.tensor([[0, 0, 0], [255, 255, 255]], dtype=torch.uint8)
    assert quantization_error(px, torch.tensor([[0.0, 0.0, 0.0]])) == pytest.approx(1.5)
    assert quantization_error(px, torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])) == 0.0


# ---- bad input -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": 0}, "size 0"),
        ({"size": 257}, "from 1 to 256"),
        ({"size": 2.5}, "size 2.5"),
        ({"size": True}, "size True"),
        ({"method": "octree"}, 'method "octree" is unknown'),
        ({"resize": 0}, "resize 0"),
        ({"resize": -4}, "resize -4"),
        ({"resize": True}, "resize True"),
    ],
)
def test_bad_parameters_raise_palette_errors(kwargs, match):
    with pytest.raises(PaletteError, match=match):
        extract_palette(np.zeros((4, 4, 3), np.uint8), **kwargs)


def test_method_spelling_with_hyphen_is_accepted():
    img = photo("chelsea")
    assert extract_palette(img, method="median-cut").equals(extract_palette(img, method="median_cut"))


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.zeros((2, 4, 4, 3), np.float32), "batch of 2 images"),
        (np.zeros((4, 4), np.float32), "expected \\[H, W, 3\\]"),
        (np.zeros((4, 4, 2), np.float32), "last dim is 2"),
        (np.full((4, 4, 3), np.nan, np.float32), "NaN"),
        (np.full((4, 4, 3), 2.0, np.float32), "divide 8-bit data by 255"),
        (np.zeros((0, 4, 3), np.float32), "empty"),
        ("image.png", "expected a torch.Tensor or numpy array"),
    ],
)
def test_bad_images_raise_input_shape_errors(image, match):
    with pytest.raises(InputShapeError, match=match):
        extract_palette(image)
