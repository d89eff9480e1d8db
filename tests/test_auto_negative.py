"""The automatic negative palette (palette_core.negative) and the guidance's repulsion from negative colours."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from palette_core.adherence import nearest_delta_e
from palette_core.errors import InputShapeError
from palette_core.latent_rgb import fast_decode, fast_encode
from palette_core.negative import auto_negative, off_palette_weights
from palette_core.palette import Palette
from palette_core.sw_guidance import DEFAULT_REPULSION_RADIUS, guide, repulsion

RED, GREEN, BLUE = (0.9, 0.1, 0.1), (0.1, 0.75, 0.1), (0.1, 0.1, 0.9)


def stripes(*parts: tuple[tuple[float, float, float], int], height: int = 32) -> torch.Tensor:
    """An image of vertical stripes: (colour, width) pairs, left to right."""
    return torch.cat([torch.tensor(c).expand(height, w, 3) for c, w in parts], dim=1).contiguous()


def test_the_negative_is_the_off_palette_colours_weighted_by_area():
    image = stripes((RED, 32), (GREEN, 24), (BLUE, 8))
    negative, share = auto_negative(image, Palette.from_colors([RED]), count=2)
    assert share == pytest.approx(0.5)  # green and blue cover half the image
    order = negative.weights.argsort(descending=True)
    colors, weights = negative.colors[order], negative.weights[order]
    assert torch.allclose(colors[0], torch.tensor(GREEN), atol=0.02)
    assert torch.allclose(colors[1], torch.tensor(BLUE), atol=0.02)
    assert float(weights[0] / weights[1]) == pytest.approx(3.0, rel=0.15)  # 24 columns against 8


def test_nothing_far_gives_no_negative():
    image = stripes((RED, 16), ((0.85, 0.12, 0.1), 16))  # within ΔE00 10 of the palette's red
    assert auto_negative(image, Palette.from_colors([RED])) == (None, 0.0)


def test_the_mask_restricts_the_search():
    image = stripes((GREEN, 16), (BLUE, 16))
    mask = torch.zeros(32, 32)
    mask[:, 16:] = 1.0
    negative, share = auto_negative(image, Palette.from_colors([RED]), count=1, mask=mask)
    assert share == pytest.approx(0.5)
    assert torch.allclose(negative.colors[0], torch.tensor(BLUE), atol=0.02)


def test_off_palette_weights_are_the_threshold_on_delta_e():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(16, 16, 3, generator=g)
    palette = Palette.from_colors([RED, BLUE])
    de = nearest_delta_e(image.unsqueeze(0), palette.colors, palette.weights)[0]
    for threshold in (5.0, 20.0, 40.0):
        assert torch.equal(off_palette_weights(image, palette, threshold), (de > threshold).float())


@pytest.mark.parametrize("count", [0, 17, True, 2.5])
def test_bad_counts_are_refused(count):
    with pytest.raises(InputShapeError, match="count"):
        auto_negative(stripes((GREEN, 8)), Palette.from_colors([RED]), count=count)


def test_a_batch_of_images_is_refused():
    with pytest.raises(InputShapeError, match="one image"):
        auto_negative(torch.rand(2, 8, 8, 3), Palette.from_colors([RED]))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), radius=st.floats(0.05, 0.4))
def test_repulsion_is_zero_far_from_every_negative_colour(seed, radius):
    g = torch.Generator().manual_seed(seed)
    negative = torch.rand(3, 3, generator=g)
    pixels = torch.rand(1, 64, 3, generator=g)
    far = torch.cdist(pixels[0], negative).min(1).values > 1.5 * radius
    per_pixel = torch.stack([repulsion(pixels[:, i : i + 1], negative, None, negative, radius) for i in range(64)])
    assert torch.all(per_pixel[far] == 0)
    assert torch.all(per_pixel[~far] >= 0)


def test_repulsion_pushes_out_and_pulls_toward_the_nearest_palette_colour():
    negative = torch.tensor([[0.5, 0.5, 0.5]])
    palette = torch.tensor([[0.9, 0.5, 0.5], [0.0, 0.0, 1.0]])
    pixel = torch.tensor([[[0.55, 0.5, 0.5]]], requires_grad=True)
    (grad,) = torch.autograd.grad(repulsion(pixel, negative, None, palette).sum(), pixel)
    step = -grad[0, 0]
    assert step[0] > 0 and abs(step[1]) < 1e-7 and abs(step[2]) < 1e-7  # away from grey, toward the red


def _latent_with_a_green_stripe() -> torch.Tensor:
    return fast_encode(stripes((RED, 20), (GREEN, 12)).unsqueeze(0))


def test_guidance_with_the_automatic_negative_shows_fewer_negative_pixels_on_a_photo():
    from bench.bench_recolor import PALETTES, load_photo
    from palette_core.distance import palette_emd

    photo = load_photo("rocket", 64)
    palette = Palette.parse(PALETTES["americana"])
    z = fast_encode(photo.unsqueeze(0))
    plain = fast_decode(guide(z, palette.colors, palette.weights, steps=8))[0].clamp(0, 1)
    negative, share = auto_negative(plain, palette)  # the first pass's off-palette colours
    assert negative is not None and 0.05 < share < 0.5
    repelled = guide(
        z, palette.colors, palette.weights, steps=8, negative_colors=negative.colors, negative_weights=negative.weights
    )
    repelled = fast_decode(repelled)[0].clamp(0, 1)

    def near(image: torch.Tensor) -> float:
        return float((nearest_delta_e(image.unsqueeze(0), negative.colors)[0] < 10).double().mean())

    assert near(plain) > 0.05
    assert near(repelled) <= 0.5 * near(plain)  # the target, here about 18x
    emd = lambda image: float(palette_emd(image, palette.colors, palette.weights))  # noqa: E731
    assert emd(repelled) <= 1.05 * emd(plain)  # no further from the palette


def test_a_negative_far_from_every_pixel_or_at_strength_zero_changes_nothing():
    z = _latent_with_a_green_stripe()
    palette = Palette.from_colors([RED, BLUE])
    plain = guide(z, palette.colors, palette.weights, steps=3)
    far = torch.tensor([[0.0, 0.0, 0.0]])  # black: no decoded pixel comes near it here
    assert torch.equal(guide(z, palette.colors, palette.weights, steps=3, negative_colors=far), plain)
    green = torch.tensor([GREEN])
    assert torch.equal(
        guide(z, palette.colors, palette.weights, steps=3, negative_colors=green, negative_strength=0.0), plain
    )


@pytest.mark.parametrize("strength", [-1.0, math.nan, math.inf])
def test_bad_negative_strengths_are_refused(strength):
    z = _latent_with_a_green_stripe()
    with pytest.raises(InputShapeError, match="negative_strength"):
        guide(z, torch.tensor([RED]), negative_colors=torch.tensor([GREEN]), negative_strength=strength)


def test_default_radius_is_about_delta_e_ten_to_twenty():
    # the push radius in RGB must cover the ΔE00 10 neighbourhood the target is measured in
    grey = torch.tensor([[0.5, 0.5, 0.5]])
    shifted = grey + torch.tensor([[DEFAULT_REPULSION_RADIUS / math.sqrt(3)] * 3])
    de = float(nearest_delta_e(shifted.view(1, 1, 1, 3), grey)[0, 0, 0])
    assert 10.0 <= de <= 25.0
