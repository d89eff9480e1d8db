"""palette_core.quantize: exact nearest colours, error diffusion against a pixel-by-pixel loop, threshold maps,
properties (palette colours only, shapes, batches, masks, alpha), bad input, and quality against Pillow."""

from __future__ import annotations

import colour
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from sample_photos import sample_photo

from palette_core import quantize as qz
from palette_core.color import ciede2000, srgb_to_lab
from palette_core.errors import InputShapeError, PaletteError

D65 = np.array([0.3127, 0.3290])
BLACK_WHITE = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], dtype=np.float32)


def rng_image(seed: int, shape: tuple[int, ...], levels: bool = False) -> np.ndarray:
    x = np.random.default_rng(seed).random(shape).astype(np.float32)
    return np.round(x * 255) / np.float32(255) if levels else x


def rng_palette(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed + 1000).random((n, 3)).astype(np.float32)


def colours_of(img: np.ndarray) -> set[tuple[float, ...]]:
    return {tuple(c) for c in img.reshape(-1, img.shape[-1])[:, :3].tolist()}


# --- exact nearest colour -----------------------------------------------------------------------------------


def reference_nearest(pixels: np.ndarray, palette: np.ndarray, distance: str) -> tuple[np.ndarray, np.ndarray]:
    """Squared distances [N, K] and argmin, brute force; CIELAB from colour-science (an independent library)."""
    if distance == "perceptual":
        lab = lambda rgb: colour.XYZ_to_Lab(colour.sRGB_to_XYZ(rgb.astype(np.float64)), illuminant=D65)  # noqa: E731
        x, p = lab(pixels.reshape(-1, 3)), lab(palette)
    else:
        x, p = pixels.reshape(-1, 3).astype(np.float64), palette.astype(np.float64)
    d = ((x[:, None, :] - p[None, :, :]) ** 2).sum(-1)
    return d, d.argmin(1)


@pytest.mark.parametrize("distance", ["perceptual", "rgb"])
def test_no_dither_picks_the_nearest_colour_exactly(distance):
    img = rng_image(1, (2, 24, 20, 3))
    img[0, 0, :8] = np.linspace(0, 1, 8)[:, None]  # greys, black and white
    palette = rng_palette(1, 12)
    out = qz.quantize(img, palette, dither="none", distance=distance)
    d, ref = reference_nearest(img, palette, distance)
    got = qz.nearest_indices(img, palette, distance).reshape(-1)
    # Equal wherever the nearest colour is unique to 1e-9 (colour-science's Lab differs from ours in the 1e-12s).
    rows = np.arange(len(ref))
    assert np.all((got == ref) | (d[rows, got] - d[rows, ref] < 1e-9))
    assert (got == ref).mean() > 0.999
    np.testing.assert_array_equal(out.reshape(-1, 3), palette[ref])


def test_perceptual_and_rgb_nearest_differ_where_lab_says_so():
    # sRGB 0.49 grey: by sRGB values nearer to black, but its L* is 52, so by ΔE*ab nearer to white.
    px = np.full((1, 1, 3), 0.49, dtype=np.float32)
    assert int(qz.nearest_indices(px, BLACK_WHITE, "rgb")[0, 0]) == 0
    assert int(qz.nearest_indices(px, BLACK_WHITE, "perceptual")[0, 0]) == 1
    d, _ = reference_nearest(px, BLACK_WHITE, "perceptual")
    assert d[0, 1] < d[0, 0]


@pytest.mark.usefixtures("both_paths")
def test_fast_lab_matches_colour_module():
    x = rng_image(3, (50_000, 3))
    x[:256] = np.arange(256, dtype=np.float32)[:, None] / 255  # every grey level, across the linear segment
    ref = srgb_to_lab(x.astype(np.float64)) / 100
    assert np.abs(qz.lab100_float32(x) - ref).max() < 5e-6  # 5e-4 ΔE


# --- error diffusion -----------------------------------------------------------------------------------------


def loop_diffusion(work: np.ndarray, palette: np.ndarray, lo, hi, kernel: dict) -> np.ndarray:
    """The textbook loop: raster order, clip, nearest, push the error to the kernel's neighbours."""
    h, w, _ = work.shape
    buf = work.astype(np.float64).copy()
    out = np.zeros((h, w), dtype=np.int64)
    for y in range(h):
        for x in range(w):
            v = np.clip(buf[y, x], lo, hi)
            k = int(((palette - v) ** 2).sum(1).argmin())
            out[y, x] = k
            for (dy, dx), weight in kernel.items():
                if 0 <= y + dy < h and 0 <= x + dx < w:
                    buf[y + dy, x + dx] += weight * (v - palette[k])
    return out


@pytest.mark.parametrize("kernel", ["floyd-steinberg", "atkinson"])
@pytest.mark.parametrize("distance", ["perceptual", "rgb"])
@pytest.mark.usefixtures("both_paths")
def test_error_diffusion_equals_the_pixel_loop(kernel, distance):
    img = rng_image(4, (2, 11, 17, 3))
    palette = rng_palette(4, 6)
    work = img if distance == "rgb" else qz.lab100_float32(img)
    work_palette = qz._work_space(palette.astype(np.float64), distance)
    lo, hi = qz._diffusion_bounds(work_palette)
    got = qz.quantize_indices(img, palette, kernel, distance)
    for b in range(2):
        np.testing.assert_array_equal(got[b], loop_diffusion(work[b], work_palette, lo, hi, qz.ERROR_KERNELS[kernel]))


def test_error_diffusion_in_bands_of_rows_is_the_same(monkeypatch):
    img = rng_image(5, (1, 40, 23, 3))
    palette = rng_palette(5, 5)
    whole = qz.quantize(img, palette, dither="atkinson")
    monkeypatch.setattr(qz, "DIFFUSION_BUFFER_BYTES", 12_000)  # bands of a few rows, each handing errors down
    np.testing.assert_array_equal(qz.quantize(img, palette, dither="atkinson"), whole)
    monkeypatch.setattr(qz, "_SCORE_PAIRS", 8)  # large palettes score a diagonal in slices of rows
    np.testing.assert_array_equal(qz.quantize(img, palette, dither="atkinson"), whole)


@pytest.mark.parametrize("level", [0.1, 0.3, 0.5, 0.8])
@pytest.mark.usefixtures("both_paths")
def test_error_diffusion_keeps_the_tone_in_its_space(level):
    grey = np.full((48, 48, 3), level, dtype=np.float32)
    for distance, expected in [("rgb", level), ("perceptual", float(srgb_to_lab(np.float64([level] * 3))[0]) / 100)]:
        share = qz.quantize(grey, BLACK_WHITE, dither="floyd-steinberg", distance=distance)[..., 0].mean()
        assert abs(share - expected) < 0.01, (distance, share, expected)  # rgb: sRGB mean; perceptual: L* mean


# --- ordered dithering ---------------------------------------------------------------------------------------


def test_bayer_matrices_are_bayers():
    np.testing.assert_array_equal(qz.bayer_matrix(2), (np.array([[0, 2], [3, 1]]) + 0.5) / 4)
    m4 = [[0, 8, 2, 10], [12, 4, 14, 6], [3, 11, 1, 9], [15, 7, 13, 5]]
    np.testing.assert_array_equal(qz.bayer_matrix(4), (np.array(m4) + 0.5) / 16)
    assert sorted((qz.bayer_matrix(8) * 64 - 0.5).round().astype(int).ravel().tolist()) == list(range(64))
    with pytest.raises(PaletteError, match="power of 2"):
        qz.bayer_matrix(6)


def test_blue_noise_is_a_deterministic_blue_noise_permutation():
    bn = qz.blue_noise()
    n = bn.size
    assert bn.shape == (64, 64)
    assert sorted((bn * n - 0.5).round().astype(int).ravel().tolist()) == list(range(n))
    np.testing.assert_array_equal(qz.blue_noise.__wrapped__(64), bn)  # recomputed from scratch: same map
    white = np.random.default_rng(0).random((64, 64))
    f = np.fft.fftfreq(64)
    low = np.hypot(f[:, None], f[None, :]) < 0.125  # the lowest frequencies (period > 8 pixels), DC aside
    low[0, 0] = False
    for level in (0.1, 0.5, 0.9):
        power = [np.abs(np.fft.fft2((m < level) - level)) ** 2 for m in (bn, white)]
        blue, ref = (p[low].mean() / p[~low].mean() for p in power)
        assert blue < 0.1 * ref, (level, blue, ref)  # blue noise has (almost) no low-frequency energy


@pytest.mark.parametrize("dither", ["bayer-2", "bayer-4", "bayer-8", "blue-noise"])
@pytest.mark.usefixtures("both_paths")
def test_ordered_dithering_reproduces_grey_levels(dither):
    n = qz.threshold_map(dither).shape[0]
    for level in (0.1, 0.3, 0.5, 0.77):
        grey = np.full((n * 2, n * 2, 3), level, dtype=np.float32)
        share = qz.quantize(grey, BLACK_WHITE, dither=dither, distance="rgb")[..., 0].mean()
        assert abs(share - level) <= 1 / n**2 + 1e-6, (level, share)


def test_ordered_spread_follows_the_palette():
    assert qz.dither_spread(BLACK_WHITE) == pytest.approx(1.0)
    greys = np.linspace(0, 1, 5, dtype=np.float32)[:, None].repeat(3, 1)
    assert qz.dither_spread(greys) == pytest.approx(0.25, abs=1e-6)
    assert qz.dither_spread(greys[:1]) == 0.0


# --- pixel grid ----------------------------------------------------------------------------------------------


def test_pixel_size_averages_cells_in_linear_light():
    checker = np.zeros((6, 5, 3), dtype=np.float32)
    checker[::2, ::2] = checker[1::2, 1::2] = 1.0
    palette = np.array([[0.5, 0.5, 0.5], [0.735, 0.735, 0.735], [0, 0, 0]], dtype=np.float32)
    out = qz.quantize(checker, palette, dither="none", distance="rgb", pixel_size=2)
    # A 2x2 black-and-white cell is half the light, sRGB 0.735 (averaging sRGB values would say 0.5).
    np.testing.assert_array_equal(out[:4, :4], np.broadcast_to(palette[1], (4, 4, 3)))
    np.testing.assert_array_equal(out[:, 4:], np.broadcast_to(palette[1], (6, 1, 3)))  # partial cells: 1x2
    cells = qz.area_downsample(checker[None], 4)
    assert cells.shape == (1, 2, 2, 3)
    assert cells[0, 1, 1, 0] == pytest.approx(float(qz.linear_to_srgb(np.float64(0.5))), abs=1e-6)  # 2x1 cell


# --- properties ----------------------------------------------------------------------------------------------

image_cases = st.tuples(
    st.integers(0, 10_000),  # seed
    st.integers(1, 3),  # batch
    st.integers(1, 9),  # height
    st.integers(1, 9),  # width
    st.integers(1, 6),  # palette size
    st.sampled_from(qz.DITHERS),
    st.sampled_from(qz.DISTANCES),
    st.integers(1, 3),  # pixel size
)


@settings(max_examples=40, deadline=None)
@given(image_cases, st.booleans())
def test_outputs_are_palette_colours_of_the_input_shape(case, alpha):
    seed, b, h, w, n, dither, distance, size = case
    img = rng_image(seed, (b, h, w, 4 if alpha else 3), levels=seed % 2 == 0)
    palette = rng_palette(seed, n)
    out = qz.quantize(img, palette, dither=dither, distance=distance, pixel_size=size)
    assert out.shape == img.shape and out.dtype == np.float32
    assert colours_of(out) <= {tuple(c) for c in palette.tolist()}
    if alpha:
        np.testing.assert_array_equal(out[..., 3], img[..., 3])
    single = qz.quantize(img[0], palette, dither=dither, distance=distance, pixel_size=size)
    np.testing.assert_array_equal(single, out[0])


@settings(max_examples=25, deadline=None)
@given(image_cases)
@pytest.mark.usefixtures("both_paths")
def test_batch_images_are_independent(case):
    seed, b, h, w, n, dither, distance, size = case
    img = rng_image(seed, (3, h, w, 3))
    palette = rng_palette(seed, n)
    out = qz.quantize(img, palette, dither=dither, distance=distance, pixel_size=size)
    for i in range(3):
        np.testing.assert_array_equal(
            out[i], qz.quantize(img[i : i + 1], palette, dither=dither, distance=distance, pixel_size=size)[0]
        )


@settings(max_examples=25, deadline=None)
@given(image_cases)
def test_mask_zero_keeps_pixels_exactly_and_one_quantises(case):
    seed, b, h, w, n, dither, distance, size = case
    img = rng_image(seed, (b, h, w, 3))
    palette = rng_palette(seed, n)
    mask = (np.random.default_rng(seed + 7).random((b, h, w)) < 0.5).astype(np.float32)
    full = qz.quantize(img, palette, dither=dither, distance=distance, pixel_size=size)
    out = qz.quantize(img, palette, dither=dither, distance=distance, pixel_size=size, mask=mask)
    keep = mask == 0
    np.testing.assert_array_equal(out[keep], img[keep])
    np.testing.assert_array_equal(out[~keep], full[~keep])


def test_soft_mask_blends_and_a_single_mask_serves_the_batch():
    img = rng_image(8, (2, 4, 4, 3))
    palette = rng_palette(8, 3)
    q = qz.quantize(img, palette, dither="none")
    half = qz.quantize(img, palette, dither="none", mask=np.full((4, 4), 0.5, np.float32))
    np.testing.assert_allclose(half, 0.5 * (q + img), atol=1e-7)
    shared = qz.quantize(img, palette, dither="none", mask=torch.ones(1, 4, 4))
    np.testing.assert_array_equal(shared, q)


def test_zero_weight_colours_are_never_used_and_one_colour_fills_everything():
    img = rng_image(9, (6, 6, 3))
    palette = np.array([[0.2, 0.4, 0.6], [1.0, 0.0, 0.0]], dtype=np.float32)
    img[:3] = palette[0]  # exactly the weight-0 colour
    for dither in qz.DITHERS:
        out = qz.quantize(img, palette, np.array([0.0, 1.0]), dither=dither)
        assert colours_of(out) == {(1.0, 0.0, 0.0)}


def test_kinds_dtypes_and_devices_follow_the_input():
    img = rng_image(10, (5, 7, 3))
    palette = rng_palette(10, 4)
    as_numpy = qz.quantize(img, palette)
    as_tensor = qz.quantize(torch.from_numpy(img), torch.from_numpy(palette))
    assert isinstance(as_numpy, np.ndarray) and isinstance(as_tensor, torch.Tensor)
    assert as_tensor.dtype == torch.float32 and as_tensor.device.type == "cpu"
    np.testing.assert_array_equal(as_tensor.numpy(), as_numpy)
    u8 = (img * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(qz.quantize(u8, palette), qz.quantize(u8 / np.float32(255), palette))
    rgba = np.concatenate([u8, np.full((5, 7, 1), 128, np.uint8)], -1)  # RGBA numpy, as Pillow gives it
    out = qz.quantize(rgba, palette, dither="bayer-4")
    assert out.shape == (5, 7, 4) and np.all(out[..., 3] == np.float32(128 / 255))


# --- bad input ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"colors": np.zeros((0, 3))}, InputShapeError, "no colours"),
        ({"colors": np.random.default_rng(0).random((257, 3))}, InputShapeError, "1 to 256"),
        ({"weights": np.zeros(4)}, InputShapeError, "sum to 0"),
        ({"colors": np.zeros((2, 4, 3))}, InputShapeError, "one palette"),
        ({"image": np.zeros((4, 4, 2))}, InputShapeError, r"3 \(RGB\) or 4 \(RGBA"),
        ({"image": np.full((4, 4, 4), 2.0)}, InputShapeError, "image alpha"),
        ({"image": np.full((4, 4, 3), np.nan)}, InputShapeError, "NaN"),
        ({"image": np.zeros((0, 4, 3))}, InputShapeError, "empty"),
        ({"mask": np.ones((5, 4))}, InputShapeError, "does not fit the image 4x4"),
        ({"mask": np.ones((3, 4, 4))}, InputShapeError, "3 masks for 1 images"),
        ({"mask": np.full((4, 4), 3.0)}, InputShapeError, "mask: values"),
        ({"dither": "zigzag"}, PaletteError, "dither: 'zigzag' is unknown"),
        ({"distance": "hsv"}, PaletteError, "distance: 'hsv' is unknown"),
        ({"pixel_size": 0}, PaletteError, "pixel_size"),
        ({"pixel_size": 2.5}, PaletteError, "pixel_size"),
    ],
)
def test_bad_input_is_refused_clearly(kwargs, error, message):
    args = {"image": np.zeros((1, 4, 4, 3), np.float32), "colors": rng_palette(0, 4), "weights": None}
    args.update(kwargs)
    with pytest.raises(error, match=message):
        qz.quantize(args.pop("image"), args.pop("colors"), args.pop("weights"), **args)


@pytest.mark.usefixtures("both_paths")
def test_edge_sizes_and_palettes_work():
    full = rng_palette(11, 256)
    out = qz.quantize(rng_image(11, (3, 5, 3)), full, dither="atkinson")
    assert colours_of(out) <= {tuple(c) for c in full.tolist()}
    assert qz.quantize(rng_image(11, (1, 1, 3)), full[:1], dither="floyd-steinberg").shape == (1, 1, 3)
    transparent = np.zeros((4, 4, 4), np.float32)  # fully transparent black: quantised like any colour
    assert np.all(qz.quantize(transparent, BLACK_WHITE)[..., 3] == 0)


# --- quality on photographs against Pillow ---------------------------------------------------------------------

PHOTOS = [
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "motorcycle",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
]


def blurred_delta_e(a: np.ndarray, b: np.ndarray) -> float:
    """Mean CIEDE2000 between the images blurred with a 1.5-pixel Gaussian (what a viewer sees from afar)."""
    from scipy.ndimage import gaussian_filter

    blur = [gaussian_filter(x.astype(np.float64), sigma=(1.5, 1.5, 0)) for x in (a, b)]
    return float(ciede2000(srgb_to_lab(blur[0]), srgb_to_lab(blur[1])).mean())


def pillow_floyd_steinberg(u8: np.ndarray, palette: np.ndarray) -> np.ndarray:
    levels = np.round(palette * 255).astype(int)
    flat = levels.ravel().tolist() + levels[0].tolist() * (256 - len(levels))  # pad with a repeat, not black
    pal = Image.new("P", (1, 1))
    pal.putpalette(flat)
    q = Image.fromarray(u8).quantize(palette=pal, dither=Image.Dither.FLOYDSTEINBERG)
    return np.asarray(q.convert("RGB")).astype(np.float32) / 255


def test_floyd_steinberg_beats_pillow_on_photographs():
    from palette_core.extract import extract_palette

    rows = []
    for name in PHOTOS:
        u8 = sample_photo(name, 256)
        if u8 is None:
            continue
        palette = extract_palette(u8, 16, method="median_cut").colors_array
        x = u8.astype(np.float32) / 255
        ours = blurred_delta_e(x, qz.quantize(x, palette, dither="floyd-steinberg"))
        rows.append((name, ours, blurred_delta_e(x, pillow_floyd_steinberg(u8, palette))))
    if len(rows) < 4:
        pytest.skip("fewer than four scikit-image sample photos are available offline")
    wins = sum(ours < pil for _, ours, pil in rows)
    table = ", ".join(f"{n}: {o:.2f} vs {p:.2f}" for n, o, p in rows)
    assert wins >= 0.8 * len(rows), f"lower blurred ΔE2000 than Pillow on {wins}/{len(rows)}: {table}"
    assert np.mean([o / p for _, o, p in rows]) < 0.97, table
