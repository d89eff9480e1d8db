"""palette_core.recolor and palette_core.gamut: L* kept, palette adherence against the Reinhard baseline, bad input."""

from __future__ import annotations

import math
import statistics

import numpy as np
import ot
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sample_photos import DESIGNER_PALETTES, RECOLOR_PHOTOS

from palette_core import gamut
from palette_core import recolor as rc
from palette_core.color import LAB_EPSILON, srgb_to_lab, srgb_to_linear
from palette_core.errors import InputShapeError, PaletteError
from palette_core.palette import Palette
from palette_core.render import palette_stripes

# The photos the photos fixture (tests/conftest.py) loads, longer side PHOTO_SIZE; bench/bench_recolor.py
# recolours the same photos with the same palettes.
PALETTES, PHOTOS = DESIGNER_PALETTES, RECOLOR_PHOTOS
PHOTO_SIZE = 256
pytestmark = pytest.mark.usefixtures("one_thread")


def lab(x: torch.Tensor) -> torch.Tensor:
    return srgb_to_lab(x.double())


def random_lab(n: int, seed: int, max_chroma: float = 130.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    lightness = torch.rand(n, generator=g, dtype=torch.float64) * 100
    hue = torch.rand(n, generator=g, dtype=torch.float64) * 2 * math.pi
    chroma = torch.rand(n, generator=g, dtype=torch.float64) * max_chroma
    return torch.stack((lightness, chroma * torch.cos(hue), chroma * torch.sin(hue)), dim=-1)


# --- gamut --------------------------------------------------------------------------------------------


def test_planar_conversion_matches_color_module():
    rgb = torch.rand(5000, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    f, y = gamut.srgb_planes_to_f(rgb.T.contiguous())
    fx, fy, fz = f
    ours = torch.stack((116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)), dim=-1)
    assert torch.allclose(ours, srgb_to_lab(rgb), atol=1e-5)  # the planar matrices and branch-free f agree closely
    back = gamut.f_to_linear(fx, y, fz)
    assert torch.allclose(back.T, srgb_to_linear(rgb), atol=3e-4)  # published matrix pair


def test_branch_free_lab_function_matches_its_definition():
    x = torch.cat((torch.linspace(0, 1, 100001, dtype=torch.float64), torch.tensor([0.04045, 0.0031308, LAB_EPSILON])))
    t = x * 1.1
    f = gamut._f(t)
    reference = torch.where(t > LAB_EPSILON, t.clamp_min(LAB_EPSILON) ** (1 / 3), (24389 / 27 * t + 16) / 116)
    assert torch.allclose(f, reference, rtol=0, atol=1e-12)
    assert torch.allclose(gamut.f_inv(f), t, rtol=0, atol=1e-12)


def test_in_gamut_lab_is_unchanged():
    rgb = torch.rand(4000, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    out = gamut.lab_to_srgb_keep_lightness(srgb_to_lab(rgb))
    assert torch.allclose(out, rgb, atol=5e-4)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_out_of_gamut_loses_chroma_not_lightness_or_hue(dtype):
    want = random_lab(20000, seed=3).to(dtype)
    out = gamut.lab_to_srgb_keep_lightness(want)
    assert out.dtype == dtype and bool(((out >= 0) & (out <= 1)).all())
    got = lab(out)
    assert float((got[:, 0] - want[:, 0].double()).abs().max()) < 0.01
    c_want, c_got = want[:, 1:].double().norm(dim=-1), got[:, 1:].norm(dim=-1)
    assert bool((c_got <= c_want + 0.01).all())
    coloured = c_got > 2
    dh = torch.atan2(got[:, 2], got[:, 1]) - torch.atan2(want[:, 2].double(), want[:, 1].double())
    dh = torch.remainder(dh + math.pi, 2 * math.pi) - math.pi
    assert float(dh[coloured].abs().max()) < math.radians(0.5)


def test_gamut_fit_keeps_nearly_all_the_chroma_it_can():
    """Against a dense scan of each ray (1000 chromas): the chroma lost beyond the exact limit is tiny."""
    want = random_lab(4000, seed=4, max_chroma=120.0)
    fy = (want[:, 0] + 16) / 116
    y, ex, ez = gamut.f_inv(fy), want[:, 1] / 500, -want[:, 2] / 200
    best = torch.zeros_like(fy)
    for t in torch.linspace(0, 1, 1001, dtype=torch.float64)[1:]:
        best = torch.where(gamut._ray_excess(fy, y, ex, ez, t.expand_as(fy)) <= 0, t, best)
    exact = best * want[:, 1:].norm(dim=-1)
    shortfall = exact - lab(gamut.lab_to_srgb_keep_lightness(want))[:, 1:].norm(dim=-1)
    assert float(shortfall.mean()) < 0.1
    assert float(shortfall.quantile(0.99)) < 0.5


def test_gamut_rejects_wrong_shape():
    with pytest.raises(InputShapeError, match=r"expected \[\.\.\., 3\]"):
        gamut.lab_to_srgb_keep_lightness(torch.zeros(4, 2))


# --- matching and the offset field -------------------------------------------------------------------


def test_match_palettes_is_the_exact_ot_plan():
    g = torch.Generator().manual_seed(5)
    src, tgt = torch.rand(7, 3, generator=g, dtype=torch.float64), torch.rand(4, 3, generator=g, dtype=torch.float64)
    ws, wt = torch.rand(7, generator=g, dtype=torch.float64) + 0.1, torch.rand(4, generator=g, dtype=torch.float64)
    plan = rc.match_palettes(lab(src), ws, lab(tgt), wt, lightness_weight=1.0)
    assert torch.allclose(plan.sum(1), ws / ws.sum()) and torch.allclose(plan.sum(0), wt / wt.sum())
    cost = (torch.cdist(lab(src), lab(tgt)) ** 2).numpy()
    expected = ot.emd2((ws / ws.sum()).numpy(), (wt / wt.sum()).numpy(), cost)
    assert float((plan.numpy() * cost).sum()) == pytest.approx(expected)


def test_identical_palettes_match_to_themselves_with_zero_offsets():
    colours = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.8, 0.2], [0.2, 0.2, 0.9]], dtype=torch.float64)
    w = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    plan = rc.match_palettes(lab(colours), w, lab(colours), w)
    assert torch.allclose(plan, torch.diag(w))
    assert torch.allclose(rc.matched_offsets(lab(colours), lab(colours), plan), torch.zeros(3, 2, dtype=torch.float64))


def test_order_matching_pairs_by_index_and_checks_sizes():
    s = lab(torch.tensor([[0.8, 0.2, 0.2], [0.2, 0.2, 0.8]]))
    t = lab(torch.tensor([[0.2, 0.2, 0.8], [0.8, 0.2, 0.2]]))
    w = torch.tensor([0.5, 0.5])
    assert torch.allclose(rc.match_palettes(s, w, t, w, "order"), torch.diag(w.double()))
    crossed = torch.tensor([[0.0, 0.5], [0.5, 0.0]], dtype=torch.float64)
    assert torch.allclose(rc.match_palettes(s, w, t, w, "ot"), crossed)
    with pytest.raises(PaletteError, match="at most as many source colours as target colours"):
        rc.match_palettes(s, w, t[:1], w[:1], "order")
    fewer = rc.match_palettes(s[:1], w[:1], t, w, "order")
    assert torch.allclose(fewer, torch.tensor([[1.0, 0.0]], dtype=torch.float64))
    with pytest.raises(PaletteError, match="not one of"):
        rc.match_palettes(s, w, t, w, "nearest")


def test_split_plan_row_moves_to_the_barycentre():
    s = torch.tensor([[50.0, 0.0, 0.0]], dtype=torch.float64)
    t = torch.tensor([[50.0, 40.0, 0.0], [50.0, 0.0, 20.0]], dtype=torch.float64)
    plan = torch.tensor([[0.25, 0.75]], dtype=torch.float64)
    assert torch.allclose(rc.matched_offsets(s, t, plan), torch.tensor([[10.0, 15.0]], dtype=torch.float64))


def test_offset_table_reads_back_the_rbf_field():
    g = torch.Generator().manual_seed(6)
    src = lab(torch.rand(12, 3, generator=g, dtype=torch.float64))
    offsets = torch.randn(12, 2, generator=g, dtype=torch.float64) * 30
    sigma = 12.0
    tex = rc.offset_texture(src, offsets, sigma, torch.float64)[None]
    pts = lab(torch.rand(20000, 3, generator=g, dtype=torch.float64))
    fy = (pts[:, 0] + 16) / 116
    dfx, dfz = rc._read_texture(tex, (fy + pts[:, 1] / 500)[None], fy[None], (fy - pts[:, 2] / 200)[None])
    read = torch.stack((500 * dfx[0], -200 * dfz[0]), -1)
    err = (read - rc.rbf_offsets(pts, src, offsets, sigma)).norm(dim=-1)
    # Random neighbouring offsets are the worst case (photo clusters sent to one target share offsets).
    scale = float(offsets.norm(dim=-1).mean())
    assert float(err.mean()) < 0.02 * scale and float(err.max()) < 0.25 * scale
    # At a source colour far from the others the field is that colour's own offset.
    assert torch.allclose(rc.rbf_offsets(src[:1], src[:1], offsets[:1], sigma), offsets[:1])


def test_kernel_width_rule():
    src = torch.tensor([[50.0, 0, 0], [50.0, 30, 0], [50.0, 30, 60]], dtype=torch.float64)
    # nearest-neighbour distances 30, 30, 60: mean 40, / 3
    assert float(rc.kernel_width(src)) == pytest.approx(40 / 3)
    assert float(rc.kernel_width(src[:2] * 0.1)) == rc.SIGMA_MIN
    assert float(rc.kernel_width(src[:1])) == rc.SIGMA_MIN


# --- recolor on photographs ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def adherence(photos):
    """Chroma EMD, palette EMD and |dL*| of ours and Reinhard for every photo x palette (6 x 5)."""
    rows = []
    for photo, img in photos.items():
        for name, text in PALETTES.items():
            pal = Palette.parse(text)
            ours, base = rc.recolor(img, pal.colors, pal.weights), rc.reinhard_ab(img, pal.colors, pal.weights)
            rows.append(
                {
                    "pair": (photo, name),
                    "ours": float(rc.chroma_emd(ours, pal.colors, pal.weights)),
                    "base": float(rc.chroma_emd(base, pal.colors, pal.weights)),
                    "input": float(rc.chroma_emd(img, pal.colors, pal.weights)),
                    "dl_ours": float(rc.lightness_error(img, ours)),
                    "dl_base": float(rc.lightness_error(img, base)),
                }
            )
    return rows


def test_recolor_keeps_lightness_on_photos(adherence):
    assert max(r["dl_ours"] for r in adherence) <= 0.5
    assert max(r["dl_ours"] for r in adherence) < 0.01  # in fact only rounding: Y is kept per pixel
    assert max(r["dl_base"] for r in adherence) < 0.01


def test_recolor_beats_reinhard_on_chroma_emd(adherence):
    ours, base = [r["ours"] for r in adherence], [r["base"] for r in adherence]
    wins = sum(o < b for o, b in zip(ours, base))
    assert statistics.mean(ours) < 0.9 * statistics.mean(base)
    assert wins >= 0.8 * len(adherence), [r["pair"] for r in adherence if r["ours"] >= r["base"]]
    assert all(r["ours"] < r["input"] for r in adherence)


def test_recolor_per_pixel_lightness_and_range(photos):
    img = photos["coffee"]
    pal = Palette.parse(PALETTES["neon"])
    out = rc.recolor(img, pal.colors, pal.weights)
    assert out.shape == img.shape and out.dtype == img.dtype
    assert bool(torch.isfinite(out).all()) and float(out.min()) >= 0 and float(out.max()) <= 1
    assert float((lab(out)[..., 0] - lab(img)[..., 0]).abs().max()) < 0.01


def test_strength_zero_is_identity_and_strength_is_monotone(photos):
    img = photos["chelsea"][:96, :96]
    pal = Palette.parse(PALETTES["ocean-sunset"])
    assert float((rc.recolor(img, pal.colors, strength=0.0) - img).abs().max()) < 2e-3
    emds = [float(rc.chroma_emd(rc.recolor(img, pal.colors, strength=s), pal.colors)) for s in (0.0, 0.5, 1.0)]
    assert emds[0] > emds[1] > emds[2]


def test_batch_equals_single_images_and_takes_one_palette_per_image(photos):
    a, b = photos["astronaut"][:80, :80], photos["coffee"][:80, :80]
    p1, p2 = Palette.parse(PALETTES["pastel"]), Palette.parse(PALETTES["americana"])
    both = rc.recolor(torch.stack((a, b)), torch.stack((p1.colors, p2.colors)))
    assert both.shape == (2, 80, 80, 3)
    assert torch.allclose(both[0], rc.recolor(a, p1.colors), atol=1e-6)
    assert torch.allclose(both[1], rc.recolor(b, p2.colors), atol=1e-6)
    shared = rc.recolor(torch.stack((a, b)), p1.colors)
    assert torch.allclose(shared[1], rc.recolor(b, p1.colors), atol=1e-6)
    with pytest.raises(InputShapeError, match="3 palettes for 2 images"):
        rc.recolor(torch.stack((a, b)), torch.stack((p1.colors,) * 3))


def test_given_source_palette_in_order_moves_each_cluster_to_its_target():
    """Two flat colour regions, a user-given source palette and order: each lands on its own target."""
    red, blue = torch.tensor([0.7, 0.25, 0.2]), torch.tensor([0.25, 0.3, 0.6])
    img = torch.cat((red.expand(16, 8, 3), blue.expand(16, 8, 3)), dim=1)
    # Targets chosen with the sources' L* so they are in gamut at the pixels' own lightness.
    t_for_red = gamut.lab_to_srgb_keep_lightness(lab(red) * torch.tensor([1.0, -0.5, 1.2], dtype=torch.float64))
    t_for_blue = gamut.lab_to_srgb_keep_lightness(lab(blue) * torch.tensor([1.0, 0.2, -0.8], dtype=torch.float64))
    targets = torch.stack((t_for_red, t_for_blue)).float()
    sources = torch.stack((red, blue))
    out = rc.recolor(img, targets, source_colors=sources, match="order")
    got = lab(out)
    # Within ~1.5 units: the other centre keeps exp(-d^2 / 2 sigma^2) ~ 1 % of the weight at sigma = d / 3.
    assert torch.allclose(got[0, 0, 1:], lab(t_for_red)[1:], atol=1.5)
    assert torch.allclose(got[0, -1, 1:], lab(t_for_blue)[1:], atol=1.5)
    # The same targets in the other order swap the colours.
    swapped = lab(rc.recolor(img, targets.flip(0), source_colors=sources, match="order"))
    red_region = swapped[0, 0, 1:]
    assert float((red_region - lab(t_for_blue)[1:]).norm()) < float((red_region - lab(t_for_red)[1:]).norm())


def test_keep_neutrals_leaves_greys_alone(photos):
    ramp = torch.linspace(0.05, 0.95, 64).view(1, 64, 1).expand(8, 64, 3)
    colour = photos["rocket"][:8, :64]
    img = torch.cat((ramp, colour), dim=0)
    pal = Palette.parse(PALETTES["neon"])
    kept = rc.recolor(img, pal.colors, keep_neutrals=True)
    moved = rc.recolor(img, pal.colors)
    assert float((kept[:8] - img[:8]).abs().max()) < 2e-3
    assert float(lab(moved[:8])[..., 1:].norm(dim=-1).mean()) > 10  # without it the greys take colour
    assert float((kept[8:] - img[8:]).abs().mean()) > 0.02  # colourful pixels still move


def test_single_colour_palette_pulls_everything_toward_it(photos):
    img = photos["astronaut"][:128, :128]
    target = torch.tensor([[0.30, 0.50, 0.60]])
    out = rc.recolor(img, target)
    t_ab = lab(target)[0, 1:]
    before = (lab(img)[..., 1:] - t_ab).norm(dim=-1)
    after = (lab(out)[..., 1:] - t_ab).norm(dim=-1)
    assert float(after.mean()) < 0.25 * float(before.mean())
    # Not to zero: the suit's blacks and whites cannot carry the target's chroma at their own L*.
    assert float(rc.chroma_emd(out, target)) < 0.3 * float(rc.chroma_emd(img, target))


def test_order_matching_on_an_image_with_fewer_colours_than_the_palette():
    img = torch.tensor([0.6, 0.5, 0.5]).expand(8, 8, 3)
    pal = Palette.parse("#2a9d8f, #e76f51, #264653")
    out = rc.recolor(img, pal.colors, match="order")
    assert float((lab(out[0, 0])[1:] - lab(pal.colors[0])[1:]).norm()) < 1.0  # the one colour -> the first


def test_constant_image_takes_the_palette_mean_a_b():
    img = torch.full((16, 16, 3), 0.5)
    img[..., 0] = 0.6
    pal = Palette.parse("#2a9d8f, #457b9d:3")
    out = rc.recolor(img, pal.colors, pal.weights)
    assert bool(torch.isfinite(out).all())
    assert float((out - out[0, 0]).abs().max()) == 0.0
    mean_ab = (lab(pal.colors)[:, 1:] * pal.weights.double()[:, None]).sum(0)
    got = lab(out[0, 0])
    assert float((got[1:] - mean_ab).norm()) < 1.0
    assert float(got[0] - lab(img[0, 0])[0]) == pytest.approx(0.0, abs=0.01)


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_black_and_white_stay_black_and_white(value):
    img = torch.full((8, 8, 3), value)
    out = rc.recolor(img, torch.tensor([[1.0, 0.0, 0.5], [0.0, 0.4, 1.0]]))
    assert float((out - value).abs().max()) < 1e-3


def test_fully_transparent_rgba_is_recoloured_by_its_rgb():
    rgba = torch.zeros(8, 8, 4)
    rgba[..., :3] = torch.tensor([0.4, 0.5, 0.3])
    pal = torch.tensor([[0.8, 0.3, 0.3]])
    out = rc.recolor(rgba, pal)
    assert out.shape == (8, 8, 3)
    assert torch.allclose(out, rc.recolor(rgba[..., :3], pal))


def test_recolor_bad_parameters():
    img = torch.rand(8, 8, 3)
    pal = torch.tensor([[1.0, 0.0, 0.0]])
    with pytest.raises(PaletteError, match=r"strength: 1.5 must be in \[0, 1\]"):
        rc.recolor(img, pal, strength=1.5)
    with pytest.raises(PaletteError, match="strength"):
        rc.recolor(img, pal, strength=float("nan"))
    with pytest.raises(PaletteError, match="sigma"):
        rc.recolor(img, pal, sigma=0)
    with pytest.raises(PaletteError, match="not one of"):
        rc.recolor(img, pal, match="closest")
    with pytest.raises(InputShapeError, match="colors"):
        rc.recolor(img, torch.zeros(3))
    with pytest.raises(InputShapeError, match="image"):
        rc.recolor(torch.rand(8, 8), pal)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 6),
    strength=st.floats(0, 1),
    neutral=st.booleans(),
    h=st.integers(1, 12),
    w=st.integers(1, 12),
)
def test_recolor_properties(seed, n, strength, neutral, h, w):
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(h, w, 3, generator=g)
    colours, weights = torch.rand(n, 3, generator=g), torch.rand(n, generator=g) + 0.01
    out = rc.recolor(img, colours, weights, strength, keep_neutrals=neutral)
    assert out.shape == img.shape
    assert bool(torch.isfinite(out).all()) and float(out.min()) >= 0 and float(out.max()) <= 1
    assert float((lab(out)[..., 0] - lab(img)[..., 0]).abs().max()) < 0.01


# --- Reinhard baseline -----------------------------------------------------------------------------------


def test_reinhard_matches_the_palette_a_b_statistics_when_in_gamut():
    want = random_lab(4096, seed=11, max_chroma=25.0)
    want[:, 0] = want[:, 0] * 0.4 + 40  # mid-tones: the palette's chroma fits at every pixel's L*
    img = gamut.lab_to_srgb_keep_lightness(want).view(64, 64, 3)
    pal = Palette.parse("#8a8f7a, #9c8f86:2, #7d8a92")
    out = rc.reinhard_ab(img, pal.colors, pal.weights)
    got = lab(out)[..., 1:].reshape(-1, 2)
    goal = lab(palette_stripes(pal.colors, pal.weights, 1, 1024))[0, :, 1:]
    assert torch.allclose(got.mean(0), goal.mean(0), atol=0.01)
    assert torch.allclose(got.std(0, correction=0), goal.std(0, correction=0), atol=0.01)
    assert float((lab(out)[..., 0] - lab(img)[..., 0]).abs().max()) < 0.01


# --- lightness lock --------------------------------------------------------------------------------------


def test_lightness_lock_takes_source_lightness_and_colour_chroma(photos):
    colour = photos["coffee"]  # 171 x 256
    grey = colour.mean(-1, keepdim=True).expand_as(colour).contiguous()
    out = rc.lightness_lock(colour, grey)
    assert out.shape == grey.shape
    assert float((lab(out)[..., 0] - lab(grey)[..., 0]).abs().max()) < 0.01
    # Chroma comes from the colour image (where the gamut allows it at the new L*): hue is kept.
    src, got = lab(colour), lab(out)
    coloured = (got[..., 1:].norm(dim=-1) > 10) & (src[..., 1:].norm(dim=-1) > 10)
    dh = torch.atan2(got[..., 2], got[..., 1]) - torch.atan2(src[..., 2], src[..., 1])
    dh = torch.remainder(dh + math.pi, 2 * math.pi) - math.pi
    assert float(dh[coloured].abs().max()) < math.radians(1.0)
    assert float(got[..., 1:].norm(dim=-1).mean()) > 0.8 * float(src[..., 1:].norm(dim=-1).mean())


def test_lightness_lock_of_an_image_with_itself_is_identity(photos):
    img = photos["rocket"][:64, :64]
    assert float((rc.lightness_lock(img, img) - img).abs().max()) < 2e-3


def test_lightness_lock_resizes_the_colour_image_to_the_source():
    colour = torch.zeros(1, 32, 24, 3)
    colour[..., 0], colour[..., 2] = 0.8, 0.3
    source = torch.rand(1, 64, 48, 3, generator=torch.Generator().manual_seed(7))
    out = rc.lightness_lock(colour, source)
    assert out.shape == (1, 64, 48, 3)
    assert float((lab(out)[..., 0] - lab(source)[..., 0]).abs().max()) < 0.01
    # And downsampling (antialiased) works the other way round.
    assert rc.lightness_lock(source, colour).shape == (1, 32, 24, 3)


def test_lightness_lock_batches_broadcast_one_to_many_else_error():
    g = torch.Generator().manual_seed(8)
    colours, sources = torch.rand(3, 16, 16, 3, generator=g), torch.rand(3, 16, 16, 3, generator=g)
    assert rc.lightness_lock(colours[:1], sources).shape == (3, 16, 16, 3)
    many_to_one = rc.lightness_lock(colours, sources[0])
    assert many_to_one.shape == (3, 16, 16, 3)
    assert torch.allclose(many_to_one[2], rc.lightness_lock(colours[2], sources[0]), atol=1e-6)
    assert rc.lightness_lock(colours[0], sources[0]).shape == (16, 16, 3)
    with pytest.raises(InputShapeError, match="image has 2 images and lightness_source has 3"):
        rc.lightness_lock(colours[:2], sources)


def test_lightness_lock_on_constant_and_black_sources():
    colour = torch.rand(8, 8, 3, generator=torch.Generator().manual_seed(9))
    black = rc.lightness_lock(colour, torch.zeros(8, 8, 3))
    assert float(black.abs().max()) < 1e-3
    flat = rc.lightness_lock(colour, torch.full((8, 8, 3), 0.5))
    assert bool(torch.isfinite(flat).all())
    assert float((lab(flat)[..., 0] - lab(torch.tensor([0.5, 0.5, 0.5]))[0]).abs().max()) < 0.01


# --- metrics --------------------------------------------------------------------------------------------


def test_chroma_emd_against_direct_pot():
    g = torch.Generator().manual_seed(10)
    img = torch.rand(32, 32, 3, generator=g)
    colours, w = torch.rand(4, 3, generator=g), torch.tensor([0.1, 0.2, 0.3, 0.4])
    idx = torch.randint(0, 32 * 32, (1024,), generator=torch.Generator().manual_seed(0))
    ab = lab(img.reshape(-1, 3)[idx])[:, 1:].numpy()
    cost = np.sqrt(((ab[:, None] - lab(colours)[None, :, 1:].numpy()) ** 2).sum(-1))
    expected = ot.emd2(np.full(1024, 1 / 1024), w.double().numpy(), cost)
    assert float(rc.chroma_emd(img, colours, w)) == pytest.approx(expected, rel=1e-6)
    stripes = palette_stripes(colours, w, 8, 1000)
    assert float(rc.chroma_emd(stripes, colours, w, samples=20000)) < 0.3  # only sampling noise


def test_lightness_error_is_mean_absolute_difference():
    a = torch.full((4, 4, 3), 0.5)
    b = torch.full((4, 4, 3), 0.6)
    expected = float(lab(torch.tensor([0.6] * 3))[0] - lab(torch.tensor([0.5] * 3))[0])
    assert float(rc.lightness_error(a, b)) == pytest.approx(expected)
    with pytest.raises(InputShapeError, match="shapes must match"):
        rc.lightness_error(a, b[:2])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_recolor_and_lock_on_cuda_match_cpu(photos):
    img = photos["astronaut"][:64, :64]
    pal = Palette.parse(PALETTES["olive-earth"])
    cpu = rc.recolor(img, pal.colors, pal.weights)
    gpu = rc.recolor(img.cuda(), pal.colors.cuda(), pal.weights.cuda())
    assert gpu.device.type == "cuda" and float((gpu.cpu() - cpu).abs().max()) < 1e-3
    lock = rc.lightness_lock(img.cuda(), img.mean(-1, keepdim=True).expand_as(img).cuda())
    assert lock.device.type == "cuda"
