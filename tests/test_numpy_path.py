"""The numpy path of palette_core (what ``palette distance`` runs, without torch) against its torch path.

The colour kernels, the bins, the checks and Quadratic-Chi are one implementation for both array
libraries (palette_core._backend): these tests hold the numpy results to the torch ones — bins
exactly, QC over the occupied bins to the QC over the full 4080 x 4080 matrix.
"""

from __future__ import annotations

import colorsys
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from palette_core import InputShapeError, bins
from palette_core import color as C
from palette_core import distance as D
from palette_core import histogram as H
from palette_core._checks import check_colors, check_image, check_weights
from palette_core.palette import Palette
from palette_core.similarity import clipped_pairs, occupied_quadratic_chi

REPO = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------------------------------
# Colours: floats, exact 8-bit levels as images carry them (float32 k / 255), greys, and the hue wrap
# (r max, b a hair above g: h/6 is a tiny negative and (h/6) % 1 rounds to 1.0).

unit = st.floats(0, 1, allow_nan=False)
level = st.integers(0, 255).map(lambda k: float(np.float32(k) / np.float32(255)))
grey = st.one_of(unit, level).map(lambda v: (v, v, v))
hue_wrap = st.floats(0.2, 1).map(lambda r: (r, 0.1, float(np.nextafter(0.1, 1.0))))
colour = st.one_of(st.tuples(unit, unit, unit), st.tuples(level, level, level), grey, hue_wrap)
colours = st.lists(colour, min_size=1, max_size=64)


def reference_bin(r: float, g: float, b: float) -> int:
    h, s, v = colorsys.rgb_to_hsv(r, g, b)
    return (math.floor(34 * h) % 34 * 12 + min(math.floor(12 * s), 11)) * 10 + min(math.floor(10 * v), 9)


@given(colours)
@settings(max_examples=300, deadline=None)
def test_numpy_bins_are_the_torch_bins_and_colorsys(rgb):
    for dtype in (np.float64, np.float32):
        x = np.array(rgb, dtype=dtype)
        got = bins.bins_of(x)
        assert isinstance(got, np.ndarray) and got.dtype == np.int64
        np.testing.assert_array_equal(got, H.bin_index(torch.from_numpy(x)).numpy())
    assert bins.bins_of(np.array(rgb)).tolist() == [reference_bin(*c) for c in rgb]


@given(colours)
@settings(max_examples=200, deadline=None)
def test_numpy_hsv_is_bitwise_the_torch_hsv_both_ways(rgb):
    for dtype in (np.float64, np.float32):
        x = np.array(rgb, dtype=dtype)
        hsv = C.srgb_to_hsv(x)
        assert hsv.dtype == dtype
        np.testing.assert_array_equal(hsv, C.srgb_to_hsv(torch.from_numpy(x)).numpy())
        np.testing.assert_array_equal(C.hsv_to_srgb(hsv), C.hsv_to_srgb(torch.from_numpy(hsv)).numpy())


def test_numpy_lab_and_ciede2000_match_torch_and_colour_science():
    import colour

    rng = np.random.default_rng(0)
    rgb = rng.random((50_000, 3))
    lab = C.srgb_to_lab(rgb)
    assert isinstance(lab, np.ndarray)
    np.testing.assert_allclose(lab, C.srgb_to_lab(torch.from_numpy(rgb)).numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(C.lab_to_srgb(lab), rgb, atol=2e-3)  # the published matrices are 4-decimal
    other = C.srgb_to_lab(rng.random((50_000, 3)))
    de = C.ciede2000(lab, other)
    np.testing.assert_allclose(de, C.ciede2000(torch.from_numpy(lab), torch.from_numpy(other)).numpy(), atol=1e-10)
    np.testing.assert_allclose(de, colour.delta_E(lab, other, method="CIE 2000"), atol=1e-9)
    # broadcasting and float32 keep their shape and dtype
    assert C.ciede2000(lab[:3, None].astype(np.float32), other[None, :5].astype(np.float32)).shape == (3, 5)
    assert C.ciede2000(lab[:3].astype(np.float32), other[:3].astype(np.float32)).dtype == np.float32


def test_numpy_bin_centres_are_the_torch_bin_centres():
    centres = bins.bin_centers_f64()
    np.testing.assert_array_equal(centres, H.bin_centers(torch.float64).numpy())
    np.testing.assert_array_equal(bins.bins_of(centres), np.arange(bins.NUM_BINS))


def photo_like(h: int, w: int, seed: int) -> np.ndarray:
    """8-bit smooth gradients plus noise, as float32 k / 255 (what an image file decodes to)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    phase = rng.random(3) * 2 * np.pi
    base = 0.5 + 0.4 * np.sin(np.stack([3 * x + 2 * y, 4 * y - x, 2 * x * y * 5], -1) + phase)
    levels = np.clip(np.round((base + rng.normal(0, 0.05, base.shape)) * 255), 0, 255).astype(np.uint8)
    return levels.astype(np.float32) / np.float32(255)


def test_numpy_pixel_counts_equal_the_torch_histogram_both_paths():
    image = photo_like(512, 640, 1)  # > 2^18 pixels of 8-bit levels: torch takes its lookup table
    counts = bins.pixel_counts(image.reshape(-1, 3))
    torch_hist = H.image_histogram(torch.from_numpy(image)).numpy()  # float32 counts / pixels
    np.testing.assert_array_equal(counts.astype(np.float32) / np.float32(counts.sum()), torch_hist)
    odd = np.random.default_rng(2).random((300, 200, 3))  # not 8-bit: torch's exact path (float64 in, out)
    counts = bins.pixel_counts(odd.reshape(-1, 3))
    np.testing.assert_array_equal(counts / counts.sum(), H.image_histogram(torch.from_numpy(odd)).numpy())


@pytest.mark.parametrize("text", ["#e63946:2, #f1faee, #a8dadc:0.5, #457b9d, #1d3557", "#fff", "#f00, #f00:3, #00f"])
def test_palette_histogram_array_equals_the_torch_palette_histogram(text):
    palette = Palette.parse(text)
    array = palette.histogram_array()
    tensor = palette.histogram().numpy()
    np.testing.assert_array_equal(np.flatnonzero(array), np.flatnonzero(tensor))
    np.testing.assert_allclose(array, tensor, rtol=1e-6, atol=0)


# --------------------------------------------------------------------------------------------------
# Quadratic-Chi over the occupied bins


@pytest.fixture(scope="module")
def full_a64() -> torch.Tensor:
    """The full A with float64 ΔE00 from the same Lab as the numpy path: only the restriction differs."""
    i, j, val = clipped_pairs(torch.from_numpy(bins.bin_lab_f64()), 20.0)
    a = torch.zeros(bins.NUM_BINS, bins.NUM_BINS, dtype=torch.float64)
    a[i, j] = val
    return a


def image_hist(image: np.ndarray) -> np.ndarray:
    counts = bins.pixel_counts(image.reshape(-1, 3))
    return counts / counts.sum()


PALETTES = ["#264653, #2a9d8f, #e9c46a, #f4a261, #e76f51", "#00ff00", "#e63946:2, #f1faee, #1d3557", "#808080, #fff"]


@pytest.mark.parametrize("seed", [0, 1])
def test_occupied_qc_equals_qc_with_the_full_matrix(full_a64, seed):
    image = image_hist(photo_like(96, 128, seed))
    other = image_hist(photo_like(80, 80, seed + 10))
    pairs = [(image, Palette.parse(t).histogram_array()) for t in PALETTES] + [(image, other)]
    for p, q in pairs:
        got = occupied_quadratic_chi(p, q)
        full = float(D.quadratic_chi(torch.from_numpy(p), torch.from_numpy(q).double(), similarity=full_a64))
        assert got == pytest.approx(full, rel=1e-9, abs=1e-12)
        # the cached torch matrix computes ΔE00 in float32: within 1e-6 of the float64 value
        cached = float(D.quadratic_chi(torch.from_numpy(p), torch.from_numpy(q).double()))
        assert got == pytest.approx(cached, abs=1e-6)


def test_occupied_qc_batches_broadcasts_and_keeps_the_qc_properties(full_a64):
    p = np.stack([image_hist(photo_like(64, 64, s)) for s in range(3)])
    q = Palette.parse(PALETTES[0]).histogram_array()
    got = occupied_quadratic_chi(p, q)
    assert got.shape == (3,)
    full = D.quadratic_chi(torch.from_numpy(p), torch.from_numpy(q).double(), similarity=full_a64).numpy()
    np.testing.assert_allclose(got, full, rtol=1e-9)
    assert got[1] == pytest.approx(occupied_quadratic_chi(p[1], q), rel=1e-12)
    assert occupied_quadratic_chi(p[0], p[0]) == pytest.approx(0.0, abs=1e-12)
    assert occupied_quadratic_chi(p[0], q) == pytest.approx(occupied_quadratic_chi(q, p[0]), rel=1e-12)
    assert occupied_quadratic_chi(q, np.zeros(bins.NUM_BINS)) == pytest.approx(1.0)  # docs/design.md §4: QC(P, 0) = 1
    assert occupied_quadratic_chi(np.zeros(bins.NUM_BINS), np.zeros(bins.NUM_BINS)) == 0.0
    assert occupied_quadratic_chi(p[0] * 7.0, q) == pytest.approx(got[0], rel=1e-12)  # L1-normalised first


@pytest.mark.parametrize(
    ("p", "m", "message"),
    [
        (np.zeros(10), 0.5, "p: shape (10,); expected [4080] or [B, 4080] histograms"),
        (-np.ones(4080), 0.5, "p: histogram entries must be finite and >= 0"),
        (np.full(4080, np.nan), 0.5, "p: histogram entries must be finite and >= 0"),
        (np.ones(4080), 1.0, "m: 1.0 must be in [0, 1) (0.5 in the paper)"),
    ],
)
def test_occupied_qc_rejects_what_quadratic_chi_rejects(p, m, message):
    for qc in (occupied_quadratic_chi, D.quadratic_chi):
        with pytest.raises(InputShapeError, match=re.escape(message)):
            qc(p, np.ones(4080), m)
    with pytest.raises(InputShapeError, match="threshold: 0 must be > 0"):
        occupied_quadratic_chi(np.ones(4080), np.ones(4080), threshold=0)


# --------------------------------------------------------------------------------------------------
# Checks and the Palette value without torch


@pytest.mark.parametrize(
    "bad",
    [
        np.full((2, 2, 3), np.nan),
        np.full((2, 2, 3), 2.0),
        np.zeros((2, 2, 5)),
        np.zeros((2, 2), dtype=np.int32),
        np.zeros((0, 2, 3)),
    ],
)
def test_checks_say_the_same_for_numpy_and_torch(bad):
    messages = []
    for numpy in (False, True):
        with pytest.raises(InputShapeError) as info:
            check_image(bad, numpy=numpy)
        messages.append(str(info.value).replace("torch.", ""))
    assert messages[0] == messages[1]


def test_checks_return_numpy_when_asked_and_convert_alike():
    u8 = np.random.default_rng(3).integers(0, 256, (4, 5, 4), dtype=np.uint8)
    x, batched = check_image(u8, numpy=True)
    assert isinstance(x, np.ndarray) and x.shape == (1, 4, 5, 3) and not batched
    np.testing.assert_array_equal(x, check_image(u8)[0].numpy())
    c, _ = check_colors(torch.tensor([[0.2, 0.4, 1.0005]], dtype=torch.bfloat16), numpy=True)
    assert c.dtype == np.float32 and c.max() == 1.0  # widened, then the tolerated overshoot clamped
    w = check_weights([3, 1], c[:, [0, 0]])
    np.testing.assert_allclose(w, [[0.75, 0.25]])


def test_palette_holds_numpy_and_gives_tensors_sharing_them():
    p = Palette.parse("#e63946:2, #f1faee")
    assert isinstance(p.colors_array, np.ndarray) and p.colors_array.dtype == np.float32
    assert isinstance(p.colors, torch.Tensor) and p.colors is p.colors
    assert p.colors.data_ptr() == p.colors_array.ctypes.data
    np.testing.assert_array_equal(p.weights.numpy(), np.array([2 / 3, 1 / 3], np.float32))
    np.testing.assert_array_equal(p.colors.numpy(), np.array([[230, 57, 70], [241, 250, 238]], np.float32) / 255)
    direct = Palette(torch.rand(2, 3), torch.zeros(2))  # direct construction is unchecked but converts
    assert direct.weights_array.dtype == np.float32 and len(direct) == 2
    with pytest.raises(InputShapeError, match="weights sum to 0"):
        direct.histogram_array()
    from_tensors = Palette.from_colors(torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64), torch.tensor([5.0]))
    assert from_tensors.to_text() == "#ff0000" and from_tensors.weights_array.tolist() == [1.0]


def test_parsing_reading_and_the_numpy_kernels_never_import_torch():
    code = (
        "import sys\n"
        "sys.modules['torch'] = None  # any import of torch now raises\n"
        "import struct\n"
        "from palette_core import NUM_BINS, bins, color, formats, similarity\n"
        "import palette_cli.main, palette_cli.common\n"
        "from palette_core.palette import Palette\n"
        "p = formats.decode(b'GIMP Palette\\n255 0 0\\n0 0 255\\n', 'gpl')\n"
        "q = Palette.parse('https://coolors.co/264653-2a9d8f')\n"
        "lab = formats.decode(struct.pack('>7H', 1, 1, 7, 5000, 0, 0, 0), 'aco')  # one Lab record, L* = 50\n"
        "assert lab.hex == ['#777777'], lab.hex\n"
        "print(round(float(similarity.occupied_quadratic_chi(p.histogram_array(), q.histogram_array())), 6))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    expected = occupied_quadratic_chi(
        Palette.parse("#f00, #00f").histogram_array(), Palette.parse("#264653, #2a9d8f").histogram_array()
    )
    assert float(proc.stdout) == round(float(expected), 6)
