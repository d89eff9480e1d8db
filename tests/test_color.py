"""palette_core.color against published CIEDE2000 data, colour-science and colorsys."""

from __future__ import annotations

import colorsys

import colour
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from palette_core import color as C

D65 = np.array([0.3127, 0.3290])


@pytest.fixture(scope="module")
def sharma(data_dir):
    data = np.loadtxt(data_dir / "ciede2000_sharma2005.csv", delimiter=",", skiprows=1)
    assert data.shape == (34, 7)
    return torch.from_numpy(data)


def test_ciede2000_reproduces_all_34_sharma_pairs_both_orders(sharma):
    lab1, lab2, expected = sharma[:, :3], sharma[:, 3:6], sharma[:, 6]
    forward = C.ciede2000(lab1, lab2)
    backward = C.ciede2000(lab2, lab1)
    assert torch.allclose(forward, expected, atol=1e-4, rtol=0)
    assert torch.allclose(backward, expected, atol=1e-4, rtol=0)


def test_ciede2000_float32_close_to_reference(sharma):
    out = C.ciede2000(sharma[:, :3].float(), sharma[:, 3:6].float())
    assert out.dtype == torch.float32
    # Pairs 9-15 sit on on the 180 degree hue discontinuity that Sharma et al. test on purpose:
    # float32 rounding can take the other branch of the mean hue there, so only float64 is exact.
    h1 = torch.atan2(sharma[:, 2], sharma[:, 1])
    h2 = torch.atan2(sharma[:, 5], sharma[:, 4])
    on_edge = ((h1 - h2).abs() - torch.pi).abs() < 1e-3
    assert int(on_edge.sum()) == 7
    err = (out.double() - sharma[:, 6]).abs()
    assert err[~on_edge].max() < 2e-3
    assert err[on_edge].max() < 0.1


def test_ciede2000_matches_colour_science_on_random_pairs():
    g = torch.Generator().manual_seed(1)
    scale = torch.tensor([100.0, 256.0, 256.0], dtype=torch.float64)
    a = torch.rand(200_000, 3, generator=g, dtype=torch.float64) * scale - torch.tensor([0, 128.0, 128.0])
    b = torch.rand(200_000, 3, generator=g, dtype=torch.float64) * scale - torch.tensor([0, 128.0, 128.0])
    ref = colour.delta_E(a.numpy(), b.numpy(), method="CIE 2000")
    np.testing.assert_allclose(C.ciede2000(a, b).numpy(), ref, atol=1e-9)


def test_ciede2000_broadcasts_and_handles_achromatic():
    grey = torch.tensor([[50.0, 0.0, 0.0]], dtype=torch.float64)
    others = torch.tensor([[50.0, 0.0, 0.0], [60.0, 0.0, 0.0], [50.0, 10.0, 0.0]], dtype=torch.float64)
    d = C.ciede2000(grey, others)
    assert d.shape == (3,)
    assert d[0] == 0
    ref = colour.delta_E(np.broadcast_to(grey.numpy(), (3, 3)), others.numpy(), method="CIE 2000")
    np.testing.assert_allclose(d.numpy(), ref, atol=1e-10)


lab_values = st.tuples(st.floats(0, 100), st.floats(-128, 128), st.floats(-128, 128)).map(
    lambda t: torch.tensor(t, dtype=torch.float64)
)


@given(lab_values, lab_values)
@settings(max_examples=300, deadline=None)
def test_ciede2000_is_a_symmetric_nonnegative_difference(x, y):
    d_xy, d_yx = C.ciede2000(x, y), C.ciede2000(y, x)
    assert d_xy >= 0
    assert torch.isclose(d_xy, d_yx, atol=1e-9)
    assert C.ciede2000(x, x) == 0


@pytest.fixture(scope="module")
def random_rgb():
    rgb = torch.rand(12_000, 3, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    rgb[:200] = rgb[:200, :1]  # greys
    rgb[200:300, 0] = rgb[200:300, 1]  # ties between channels
    rgb[300] = 0.0
    rgb[301] = 1.0
    return rgb


def test_srgb_to_lab_matches_colour_science(random_rgb):
    ref = colour.XYZ_to_Lab(colour.sRGB_to_XYZ(random_rgb.numpy()), illuminant=D65)
    np.testing.assert_allclose(C.srgb_to_lab(random_rgb).numpy(), ref, atol=1e-5)


def test_each_conversion_step_matches_colour_science(random_rgb):
    rgb = random_rgb.numpy()
    lin = colour.cctf_decoding(rgb, function="sRGB")
    np.testing.assert_allclose(C.srgb_to_linear(random_rgb).numpy(), lin, atol=1e-10)
    np.testing.assert_allclose(C.linear_to_srgb(torch.from_numpy(lin)).numpy(), rgb, atol=1e-10)
    xyz = colour.sRGB_to_XYZ(rgb)
    np.testing.assert_allclose(C.linear_to_xyz(torch.from_numpy(lin)).numpy(), xyz, atol=1e-10)
    np.testing.assert_allclose(
        C.xyz_to_linear(torch.from_numpy(xyz)).numpy(),
        colour.XYZ_to_RGB(xyz, "sRGB", illuminant=D65, apply_cctf_encoding=False),
        atol=1e-10,
    )
    lab = colour.XYZ_to_Lab(xyz, illuminant=D65)
    np.testing.assert_allclose(
        C.lab_to_xyz(torch.from_numpy(lab)).numpy(), colour.Lab_to_XYZ(lab, illuminant=D65), atol=1e-10
    )
    back = colour.XYZ_to_sRGB(colour.Lab_to_XYZ(lab, illuminant=D65), illuminant=D65)
    np.testing.assert_allclose(C.lab_to_srgb(torch.from_numpy(lab)).numpy(), back, atol=1e-5)


def test_lab_round_trip_and_float32(random_rgb):
    lab = C.srgb_to_lab(random_rgb)
    assert (C.lab_to_srgb(lab) - random_rgb).abs().max() < 3e-4  # IEC's 4-digit matrices are not exact inverses
    lab32 = C.srgb_to_lab(random_rgb.float())
    assert lab32.dtype == torch.float32
    assert (lab32.double() - lab).abs().max() < 1e-3


def test_hsv_is_bitwise_colorsys(random_rgb):
    ref = np.array([colorsys.rgb_to_hsv(*c) for c in random_rgb.tolist()])
    assert np.array_equal(C.srgb_to_hsv(random_rgb).numpy(), ref)
    hsv = torch.from_numpy(ref)
    back = np.array([colorsys.hsv_to_rgb(*c) for c in ref.tolist()])
    np.testing.assert_allclose(C.hsv_to_srgb(hsv).numpy(), back, atol=1e-12)


def test_hsv_agrees_with_colour_science(random_rgb):
    ref = colour.RGB_to_HSV(random_rgb.numpy())
    ours = C.srgb_to_hsv(random_rgb).numpy()
    hue_gap = np.abs(ours[:, 0] - ref[:, 0])
    assert np.all(np.minimum(hue_gap, 1 - hue_gap) < 1e-5)
    np.testing.assert_allclose(ours[:, 1:], ref[:, 1:], atol=1e-5)


def test_conversions_keep_batch_shape():
    x = torch.rand(2, 5, 7, 3)
    for f in (C.srgb_to_lab, C.srgb_to_hsv, C.lab_to_srgb, C.hsv_to_srgb):
        assert f(x).shape == x.shape
