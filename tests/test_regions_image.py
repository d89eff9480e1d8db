"""Region masks on the image operations (docs/regions.md): recolour, lightness lock and palette extraction.

The rule: the transfer or the palette comes from the pixels inside the mask, weighted by it; each pixel's
a*b* moves ``mask`` of the way (L* kept across soft edges), so pixels where the mask is 0 are returned bit
for bit. Without a mask
(and with a mask of ones) the results are those of the unmasked functions, bit for bit. The ComfyUI
nodes are tested in tests/test_regions_image_comfyui.py.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from palette_core import extract as ex
from palette_core import recolor as rc
from palette_core.color import srgb_to_lab
from palette_core.distance import palette_emd
from palette_core.errors import InputShapeError, PaletteError
from palette_core.palette import Palette

# Two contrasting palettes: warm reds and yellows, cool blues and teals.
WARM = Palette.parse("#e63946, #f4a261, #e9c46a, #9d0208")
COOL = Palette.parse("#1d3557, #457b9d, #a8dadc, #2a9d8f")
# The photos the photos fixture (tests/conftest.py) loads, longer side PHOTO_SIZE.
PHOTOS = ("astronaut", "coffee", "chelsea")
PHOTO_SIZE = 160
pytestmark = pytest.mark.usefixtures("one_thread")


def smooth_image(h: int, w: int, seed: int, batch: int | None = None) -> torch.Tensor:
    """A smooth random colour image ``[H, W, 3]`` (or ``[batch, H, W, 3]``) with photo-like gradients."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(batch or 1, 3, 4, 4, generator=g)
    img = torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)
    img = img.permute(0, 2, 3, 1).contiguous()
    return img if batch else img[0]


def halves(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left and right regions with soft seams (5 % ramps) and a 10 % untouched margin between them."""
    x = (torch.arange(w) + 0.5) / w
    left = ((0.45 - x) / 0.05).clamp(0, 1).expand(h, w).contiguous()
    right = ((x - 0.55) / 0.05).clamp(0, 1).expand(h, w).contiguous()
    return left, right


def disc(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A soft disc and its complement minus a margin ring (both ramps 10 % of the radius wide)."""
    yy, xx = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
    r = ((yy - 0.5) ** 2 + (xx - 0.5) ** 2).sqrt() / 0.5
    return ((0.6 - r) / 0.1).clamp(0, 1), ((r - 0.75) / 0.1).clamp(0, 1)


def emd(pixels: torch.Tensor, palette: Palette) -> float:
    """The paper's palette EMD between a region's pixels ``[N, 3]`` and a palette."""
    return float(palette_emd(pixels[None], palette.colors, palette.weights))


def lab(x: torch.Tensor) -> torch.Tensor:
    return srgb_to_lab(x.double())


def chroma(pixels: torch.Tensor, palette: Palette) -> float:
    return float(rc.chroma_emd(pixels[None], palette.colors, palette.weights))


# ------------------------------------------------------------------------------------- no mask, mask of ones


def test_a_mask_of_ones_changes_nothing(photos):
    """A mask of ones takes the unmasked path's pixels and palette bit for bit (and so does mask=None)."""
    img = photos["astronaut"]
    ones = torch.ones(img.shape[:2])
    grey = img.mean(-1, keepdim=True).expand(-1, -1, 3)
    plain = rc.recolor(img, WARM.colors, WARM.weights)
    assert torch.equal(rc.recolor(img, WARM.colors, WARM.weights, mask=ones), plain)
    assert torch.equal(rc.recolor(img, WARM.colors, WARM.weights, mask=None), plain)
    assert torch.equal(rc.lightness_lock(img, grey, mask=ones), rc.lightness_lock(img, grey))
    for method in ex.METHODS:
        a, b = ex.extract_palette(img, 6, method), ex.extract_palette(img, 6, method, mask=ones)
        assert torch.equal(a.colors, b.colors) and torch.equal(a.weights, b.weights)


# ------------------------------------------------------------------------------------- recolour, photos


@pytest.mark.parametrize("layout", [halves, disc])
def test_two_regions_take_their_own_palettes(photos, layout):
    """Region 1 -> warm, region 2 -> cool (two chained calls): each ends closer to its own palette."""
    for name, img in photos.items():
        m1, m2 = layout(*img.shape[:2])
        out = rc.recolor(img, WARM.colors, WARM.weights, mask=m1)
        out = rc.recolor(out, COOL.colors, COOL.weights, mask=m2)
        r1, r2 = m1 == 1, m2 == 1
        assert emd(out[r1], WARM) < emd(out[r1], COOL), name
        assert emd(out[r2], COOL) < emd(out[r2], WARM), name
        # The chroma EMD (what recolouring changes; L* is kept) to the region's palette dropped.
        assert chroma(out[r1], WARM) < 0.8 * chroma(img[r1], WARM), name
        assert chroma(out[r2], COOL) < 0.8 * chroma(img[r2], COOL), name
        outside = (m1 == 0) & (m2 == 0)
        assert outside.sum() > 0 and torch.equal(out[outside], img[outside]), name
        # L* is kept everywhere, soft seams included (the mask scales the a*b* move, not an sRGB blend).
        d_l = (lab(out)[..., 0] - lab(img)[..., 0]).abs()
        assert float(d_l.max()) < 0.01, name


def test_soft_edges_blend_between_original_and_recolour(photos):
    img = photos["coffee"]
    m1, _ = halves(*img.shape[:2])
    out = rc.recolor(img, WARM.colors, WARM.weights, mask=m1)
    # The same source palette without a mask: the recolour that the mask blends in.
    src = rc.source_palette(img, rc.default_source_size(len(WARM.colors)), m1)
    full = rc.recolor(img, WARM.colors, WARM.weights, source_colors=src[0], source_weights=src[1])
    seam = (m1 > 0) & (m1 < 1)
    assert seam.sum() > 0
    assert torch.equal(out[m1 == 0], img[m1 == 0]) and torch.equal(out[m1 == 1], full[m1 == 1])
    # across the seam a*b* moves part of the way toward the full recolour's, and L* stays
    lo, lf, li = lab(out[seam]), lab(full[seam]), lab(img[seam])
    part, whole = (lo[:, 1:] - li[:, 1:]).norm(dim=-1), (lf[:, 1:] - li[:, 1:]).norm(dim=-1)
    assert 0 < float(part.mean()) < float(whole.mean())  # per pixel the gamut fit can differ a little
    assert float((lo[:, 0] - li[:, 0]).abs().max()) < 0.01
    moved = (out[seam] - img[seam]).norm(dim=-1)
    assert float(moved.max()) > 0.02  # the seam moves, partly


def test_the_source_palette_comes_from_the_region_only():
    """Left half red, right half blue: the left region's source colours are all red (none blue)."""
    g = torch.Generator().manual_seed(3)
    img = torch.empty(64, 96, 3)
    img[:, :48] = torch.tensor([0.8, 0.15, 0.1]) + 0.08 * torch.rand(64, 48, 3, generator=g)
    img[:, 48:] = torch.tensor([0.1, 0.2, 0.8]) + 0.08 * torch.rand(64, 48, 3, generator=g)
    left = torch.zeros(64, 96)
    left[:, :48] = 1.0
    colours, _ = rc.source_palette(img, 12, left)
    assert bool((colours[:, 0] > 0.75).all()) and bool((colours[:, 2] < 0.2).all())
    colours, _ = rc.source_palette(img, 12)
    assert bool((colours[:, 2] > 0.75).any())  # unmasked: both halves


def test_soft_mask_weights_the_source_shares():
    """An image of 3 flat colours: the region's source shares are the mask sums per colour."""
    img = torch.zeros(30, 40, 3)
    img[:10] = torch.tensor([1.0, 0.0, 0.0])
    img[10:20] = torch.tensor([0.0, 1.0, 0.0])
    img[20:] = torch.tensor([0.0, 0.0, 1.0])
    mask = torch.rand(30, 40, generator=torch.Generator().manual_seed(0))
    mask[20:] = 0.0  # the blue band is outside
    colours, shares = rc.source_palette(img, 12, mask)
    sums = torch.stack([mask[:10].sum(), mask[10:20].sum()]).double()
    assert colours.shape == (2, 3)
    assert torch.allclose(
        colours, torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=colours.dtype)[torch.argsort(-sums)]
    )
    assert torch.allclose(shares.double(), (sums / sums.sum()).sort(descending=True).values, atol=1e-9)


def test_thin_strokes_the_stride_steps_over_are_still_sampled():
    """Stripes at odd columns every 4 px (a quarter of the pixels): the even-stride sample misses them all."""
    img = smooth_image(256, 256, seed=4)
    mask = torch.zeros(256, 256)
    mask[:, 1::4] = 1.0
    out = rc.recolor(img, COOL.colors, COOL.weights, mask=mask)
    assert torch.equal(out[:, 0::2], img[:, 0::2])
    assert float((out[:, 1::4] - img[:, 1::4]).abs().mean()) > 0.02


@settings(max_examples=25, deadline=None)
@given(
    st.integers(4, 24),
    st.integers(4, 24),
    st.integers(1, 2),
    st.integers(0, 2**31 - 1),
    st.floats(0.0, 1.0),
    st.booleans(),
)
def test_masked_recolour_keeps_the_outside_the_full_recolour_and_lightness(h, w, batch, seed, strength, neutrals):
    """Property: with the source palette fixed, 0 gives the image exactly and 1 the unmasked recolour, and a
    soft weight keeps L* and moves a*b* part of the way."""
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(batch, h, w, 3, generator=g)
    mask = torch.rand(batch, h, w, generator=g)
    mask = torch.where(mask < 0.3, 0.0, torch.where(mask > 0.7, 1.0, mask))  # hard zeros, ones, soft between
    src = torch.rand(5, 3, generator=g)
    kw = {"strength": strength, "keep_neutrals": neutrals, "source_colors": src}
    full = rc.recolor(img, COOL.colors, COOL.weights, **kw)
    out = rc.recolor(img, COOL.colors, COOL.weights, mask=mask, **kw)
    assert torch.equal(out[mask == 0], img[mask == 0])
    # the gamut fit iterates per slice of pixels until all converge: its neighbours' weights move the last bit
    assert torch.allclose(out[mask == 1], full[mask == 1], atol=2e-5)
    soft = (mask > 0) & (mask < 1)
    if bool(soft.any()):
        assert float((lab(out[soft])[:, 0] - lab(img[soft])[:, 0]).abs().max()) < 0.01


def test_one_mask_per_image_and_an_empty_one_in_the_batch(caplog):
    img = smooth_image(32, 48, seed=5, batch=2)
    mask = torch.zeros(2, 32, 48)
    mask[0, :, :20] = 1.0
    with caplog.at_level(logging.WARNING, logger="palette_core.recolor"):
        out = rc.recolor(img, WARM.colors, WARM.weights, mask=mask)
    assert "image(s) 1" in caplog.text and "selects no pixels" in caplog.text
    assert torch.equal(out[1], img[1]) and torch.equal(out[0, :, 20:], img[0, :, 20:])
    assert float((out[0, :, :20] - img[0, :, :20]).abs().mean()) > 0.02
    # One mask for the batch; a mask drawn at another resolution is area-averaged to the image's.
    shared = torch.zeros(64, 96)
    shared[:, :40] = 1.0
    out = rc.recolor(img, WARM.colors, WARM.weights, mask=shared)
    assert torch.equal(out[:, :, 20:], img[:, :, 20:]) and not torch.equal(out[:, :, :20], img[:, :, :20])


def test_float64_and_uint8_images_keep_the_outside(photos):
    img = photos["chelsea"][:64, :64]
    mask = torch.zeros(64, 64)
    mask[16:48, 16:48] = 1.0
    out = rc.recolor(img.double(), WARM.colors, WARM.weights, mask=mask)
    assert out.dtype == torch.float64 and torch.equal(out[mask == 0], img.double()[mask == 0])
    u8 = (img * 255).round().to(torch.uint8)
    out = rc.recolor(u8, WARM.colors, WARM.weights, mask=mask.numpy())  # numpy masks are accepted
    assert torch.equal(out[mask == 0], u8[mask == 0].float() / 255.0)


# ------------------------------------------------------------------------------------- lightness lock


def test_lightness_lock_in_a_region_keeps_the_source_outside():
    colour = smooth_image(24, 32, seed=6, batch=1)
    source = smooth_image(48, 64, seed=7, batch=2).mean(-1, keepdim=True).expand(-1, -1, -1, 3)
    mask = torch.zeros(2, 48, 64)
    mask[0, 10:30, 10:50] = 1.0
    mask[1, :, 30:] = torch.linspace(0.0, 1.0, 34)
    out = rc.lightness_lock(colour, source, mask=mask)
    locked = rc.lightness_lock(colour, source)
    assert out.shape == (2, 48, 64, 3)
    assert torch.equal(out[mask == 0], source[mask == 0])
    assert torch.equal(out[mask == 1], locked[mask == 1])
    soft = (mask > 0) & (mask < 1)
    assert float((lab(out[soft])[:, 0] - lab(source[soft])[:, 0]).abs().max()) < 0.01  # the source's L*
    with pytest.raises(InputShapeError, match="another aspect ratio"):
        rc.lightness_lock(colour, source, mask=torch.ones(24, 24))  # drawn on the colour image, not the source


# ------------------------------------------------------------------------------------- bad masks


def test_bad_masks_are_clear_errors(caplog):
    img = smooth_image(16, 16, seed=8)
    with pytest.raises(InputShapeError, match="NaN"):
        rc.recolor(img, WARM.colors, mask=torch.full((16, 16), float("nan")))
    with pytest.raises(InputShapeError, match="empty"):
        rc.recolor(img, WARM.colors, mask=torch.zeros(0, 16))
    with pytest.raises(InputShapeError, match="a batch of 3 masks for 2"):
        rc.recolor(torch.stack([img, img]), WARM.colors, mask=torch.ones(3, 16, 16))
    with pytest.raises(InputShapeError, match="another aspect ratio"):
        rc.recolor(img, WARM.colors, mask=torch.ones(16, 32))
    with pytest.raises(InputShapeError, match="NaN"):
        ex.extract_palette(img, 4, mask=torch.tensor([[float("nan")]]).expand(16, 16))
    with caplog.at_level(logging.WARNING, logger="palette_core.recolor"):
        same = rc.recolor(img, WARM.colors, mask=torch.zeros(16, 16))
        locked = rc.lightness_lock(img, img.flip(0), mask=torch.zeros(16, 16))
    assert torch.equal(same, img) and torch.equal(locked, img.flip(0))
    assert caplog.text.count("selects no pixels") == 2
    for method in ex.METHODS:
        with pytest.raises(PaletteError, match="selects no pixels"):
            ex.extract_palette(img, 4, method, mask=torch.zeros(16, 16))


# ------------------------------------------------------------------------------------- palette from image


@pytest.mark.parametrize("method", ex.METHODS)
@pytest.mark.parametrize("layout", [halves, disc])
def test_a_regions_palette_fits_its_pixels_better_than_the_whole_images(photos, method, layout):
    for name, img in photos.items():
        whole = ex.extract_palette(img, 5, method)
        for m in layout(*img.shape[:2]):
            region = ex.extract_palette(img, 5, method, mask=m)
            pixels = img[m == 1]
            assert emd(pixels, region) < emd(pixels, whole), (name, method)


@pytest.mark.parametrize("method", ex.METHODS)
@pytest.mark.parametrize("shape", [(64, 96), (600, 400)])  # upsampled and downsampled to 256 x 256
def test_the_resamples_blends_across_the_region_edge_do_not_count(method, shape):
    """Red left half, blue right half: the left region's palette has no purple blends of the two."""
    h, w = shape
    img = torch.empty(h, w, 3)
    img[:, : w // 2] = torch.tensor([0.85, 0.1, 0.1])
    img[:, w // 2 :] = torch.tensor([0.1, 0.2, 0.85])
    img[: h // 2] *= 0.8  # two shades in each half, so that there is something to cluster
    left = torch.zeros(h, w)
    left[:, : w // 2] = 1.0
    pal = ex.extract_palette(img, 6, method, mask=left)
    assert bool((pal.colors[:, 2] < 26.5 / 255).all()), pal  # the reds' own blue levels: 26 and 20 of 255
    assert bool((ex.extract_palette(img, 6, method).colors[:, 2] > 0.5).any())


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 9), st.integers(1, 9), st.integers(0, 12), st.booleans(), st.integers(0, 2**16))
def test_least_within_is_a_minimum_filter(h, w, r, rows, seed):
    """Property: the edge rule's erosion equals scipy's minimum filter (window 2r + 1, edges cut)."""
    from scipy.ndimage import minimum_filter1d

    a = np.random.default_rng(seed).random((2, h, w))
    want = minimum_filter1d(a, size=2 * r + 1, axis=1 if rows else 2, mode="nearest")
    assert np.array_equal(ex._least_within(a, r, rows=rows), want)


def test_a_region_thinner_than_the_resample_filter_still_has_a_palette():
    img = smooth_image(512, 512, seed=9)
    column = torch.zeros(512, 512)
    column[:, 300] = 1.0  # a quarter of a resampled pixel wide
    pal = ex.extract_palette(img, 4, "kmeans", mask=column)
    whole = ex.extract_palette(img, 4, "kmeans")
    assert emd(img[:, 300], pal) < 0.5 * emd(img[:, 300], whole)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 20), st.integers(2, 20), st.integers(1, 8), st.sampled_from(ex.METHODS), st.integers(0, 2**16))
def test_a_hard_mask_of_rows_extracts_those_rows(h, w, size, method, seed):
    """Property: a 0/1 mask selecting the top rows gives exactly the palette of those rows (both methods)."""
    g = torch.Generator().manual_seed(seed)
    img = (torch.rand(2 * h, w, 3, generator=g) * 255).round() / 255
    mask = torch.zeros(2 * h, w)
    mask[:h] = 1.0
    a = ex.extract_palette(img[:h], size, method, resize=None)
    b = ex.extract_palette(img, size, method, resize=None, mask=mask)
    assert torch.equal(a.colors, b.colors) and torch.allclose(a.weights, b.weights, atol=1e-12)
    # A uniform soft mask weighs every pixel alike: the same palette.
    c = ex.extract_palette(img, size, method, resize=None, mask=mask * 0.25)
    assert torch.equal(a.colors, c.colors) and torch.allclose(a.weights, c.weights, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 400), st.integers(1, 12), st.integers(2, 256), st.floats(0.01, 1.0), st.integers(0, 2**16))
def test_weighted_median_cut_with_equal_weights_is_pylettes(n, size, levels, weight, seed):
    """Property: the weighted median cut with equal weights makes the very boxes of the unweighted one."""
    px = np.random.default_rng(seed).integers(0, levels, size=(n, 3)).astype(np.uint8)  # ties at the medians
    colours, counts = ex._median_cut(px, size)
    wcolours, wsums = ex._median_cut(px, size, np.full(n, weight))
    assert torch.equal(colours, wcolours)
    assert torch.allclose(wsums / wsums.sum(), counts.double() / counts.sum(), atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.integers(0, 2**16), st.sampled_from(ex.METHODS))
def test_soft_weights_of_few_colours_are_the_mask_sums(n, seed, method):
    """Property: an image of n <= size flat colours gives those colours weighted by their summed mask."""
    rng = np.random.default_rng(seed)
    levels = rng.choice(256, size=(n, 3), replace=False) / 255.0
    labels = rng.integers(0, n, size=(12, 10))
    img = torch.from_numpy(levels[labels]).float()
    mask = torch.from_numpy(rng.random((12, 10))).float()
    pal = ex.extract_palette(img, 6, method, resize=None, mask=mask)
    sums = np.array([mask.numpy()[labels == i].astype(np.float64).sum() for i in range(n)])
    present = sums > 0
    got = {tuple(np.round(c * 255).astype(int)): float(wt) for c, wt in zip(pal.colors.numpy(), pal.weights.numpy())}
    want = {tuple(np.round(levels[i] * 255).astype(int)): sums[i] / sums.sum() for i in np.flatnonzero(present)}
    assert got.keys() == want.keys()
    assert all(abs(got[k] - want[k]) < 1e-6 for k in want)


def test_median_cut_splits_at_the_weighted_median():
    """Six dark pixels weighing 1/9 each and two light ones weighing 1: the boxes weigh 3/4 (light) and 1/4."""
    dark, light = [0.1, 0.1, 0.1], [0.9, 0.9, 0.9]
    img = torch.tensor([[dark] * 6 + [light] * 2, [[0.5, 0.5, 0.5]] * 8]).float()  # second row masked out
    mask = torch.tensor([[1 / 9] * 6 + [1.0] * 2, [0.0] * 8])
    # Three colours in the first row would need a split; give 2 of the dark ones another shade.
    img[0, :2] = torch.tensor([0.2, 0.2, 0.2])
    pal = ex.extract_palette(img, 2, "median_cut", resize=None, mask=mask)
    # Weighted median: the light pair (weight 2) against the six dark ones (weight 6/9): the cut falls
    # between dark and light, so the boxes are {all dark} and {light}, not the unweighted half split.
    assert torch.allclose(pal.colors[0], torch.tensor(light, dtype=pal.colors.dtype), atol=1 / 255)
    assert torch.allclose(pal.weights, torch.tensor([0.75, 0.25], dtype=pal.weights.dtype), atol=1e-6)
