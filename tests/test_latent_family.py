"""palette_core.latent_family: the model-family seam of the training-free code, without ComfyUI."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from packimport import pack_module

from palette_core import sw_guidance as S
from palette_core.alignment import condition_latents
from palette_core.errors import IncompatibleModelError, InputShapeError
from palette_core.latent_family import FAMILIES, FLUX, SD3, SD15, SDXL
from palette_core.latent_rgb import SDXL_LATENT_RGB_BIAS, SDXL_LATENT_RGB_FACTORS, fast_decode, fast_encode

PALETTE = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.2, 0.8], [0.95, 0.9, 0.2]])


def test_sdxl_default_is_todays_numbers():
    assert SDXL.channels == 4 and SDXL.scale_factor == 0.13025 and SDXL.shift_factor == 0.0 and SDXL.downscale == 8
    assert SDXL.rgb_factors[0] == (0.3651, 0.4232, 0.4341) and SDXL.rgb_factors[3] == (-0.3165, -0.2492, -0.2188)
    assert SDXL.rgb_bias == (0.1084, -0.0175, -0.0011)
    assert SDXL_LATENT_RGB_FACTORS == SDXL.rgb_factors and SDXL_LATENT_RGB_BIAS == SDXL.rgb_bias
    z = torch.randn(2, 4, 3, 5)
    assert torch.equal(fast_decode(z), fast_decode(z, SDXL))  # the default is SDXL
    assert torch.equal(S.palette_distance(z, PALETTE), S.palette_distance(z, PALETTE, family=SDXL))


def test_constants_cover_the_four_families():
    assert set(FAMILIES) == {"SD15", "SDXL", "SD3", "Flux"}
    assert (SD15.channels, SD3.channels, FLUX.channels) == (4, 16, 16)
    assert SD15.rgb_bias is None and SD15.scale_factor == 0.18215
    assert (SD3.scale_factor, SD3.shift_factor) == (1.5305, 0.0609)
    assert (FLUX.scale_factor, FLUX.shift_factor) == (0.3611, 0.1159)
    z = torch.randn(1, 16, 2, 2)
    assert torch.allclose(FLUX.process_out(FLUX.process_in(z)), z, atol=1e-6)
    assert torch.allclose(FLUX.process_in(z), (z - 0.1159) * 0.3611)


@pytest.mark.parametrize("family", [SD15, SD3, FLUX], ids=lambda f: f.name)
def test_a_family_decodes_with_its_own_factors(family):
    z = torch.randn(2, family.channels, 3, 4, generator=torch.Generator().manual_seed(0))
    f = torch.tensor(family.rgb_factors)
    b = torch.tensor(family.rgb_bias) if family.rgb_bias is not None else torch.zeros(3)
    expected = (z.movedim(1, -1) @ f + b + 1) / 2  # latent_preview.Latent2RGBPreviewer, then (v + 1) / 2
    assert torch.allclose(fast_decode(z, family), expected, atol=1e-6)
    rgb = torch.rand(1, 3, 4, 3)
    assert torch.allclose(fast_decode(fast_encode(rgb, family), family), rgb, atol=1e-5)
    with pytest.raises(InputShapeError, match=f"{family.channels} channels"):
        fast_decode(torch.zeros(1, 8, 2, 2), family)


def test_guidance_and_distance_use_the_family():
    z = fast_encode(torch.rand(2, 12, 12, 3) * 0.3 + 0.35, FLUX)
    before = S.palette_distance(z, PALETTE, family=FLUX)
    after = S.palette_distance(S.guide(z, PALETTE, steps=4, family=FLUX), PALETTE, family=FLUX)
    assert bool((after < before * 0.7).all()), (before, after)
    with pytest.raises(InputShapeError, match="SDXL"):
        S.guide(z, PALETTE, steps=1)  # 16-channel latents with the SDXL default


def test_condition_latents_follow_the_family():
    def encode(image):  # a stand-in VAE: one 16-channel vector per 8x8 pixels
        mean = torch.nn.functional.avg_pool2d(image.movedim(-1, 1), 8)
        return fast_encode(mean.movedim(1, -1), FLUX)

    vec = condition_latents(encode, PALETTE, None, 4, 6, family=FLUX)
    assert vec.shape == (24, 16)
    with pytest.raises(InputShapeError, match="16, h, w"):
        condition_latents(lambda img: torch.zeros(1, 4, 4, 6), PALETTE, None, 4, 6, family=FLUX)
    coarse = dataclasses.replace(FLUX, downscale=16)
    seen = []
    condition_latents(
        lambda img: seen.append(img.shape) or encode(img)[:, :, :2, :3], PALETTE, None, 2, 3, family=coarse
    )
    assert seen == [(1, 32, 48, 3)]  # the rendered condition follows the family's downscale


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"channels": 0}, "channels 0 must be a positive integer"),
        ({"rgb_factors": SDXL.rgb_factors[:3]}, "expected 4 rows"),
        ({"rgb_factors": ((1.0, 2.0),) * 4}, "of 3 values"),
        ({"rgb_factors": ((float("nan"), 0.0, 0.0),) * 4}, "NaN"),
        ({"rgb_bias": (0.1, 0.2)}, "rgb_bias"),
        ({"scale_factor": 0.0}, "scale_factor is 0"),
        ({"shift_factor": float("inf")}, "shift_factor"),
        ({"downscale": 0}, "downscale 0"),
    ],
)
def test_bad_descriptions_raise_clear_errors(change, message):
    with pytest.raises(IncompatibleModelError, match=message):
        dataclasses.replace(SDXL, **change)


def test_patches_carry_the_family():
    patches = pack_module("nodes.training_free_patches")
    z = fast_encode(torch.rand(1, 8, 8, 3) * 0.3 + 0.35, SD3)
    patch = patches.GuidancePatch(PALETTE, None, strength=1.0, steps=2, family=SD3)
    out = patch({"denoised": z, "sigma": torch.tensor([0.5]), "model": None})
    assert out.shape == z.shape and patch.calls == 1
    assert bool(S.palette_distance(out, PALETTE, family=SD3) < S.palette_distance(z, PALETTE, family=SD3))
