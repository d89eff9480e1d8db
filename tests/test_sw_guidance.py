"""palette_core.sw_guidance and latent_rgb: sliced Wasserstein to a palette and the guidance steps."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from packimport import pack_module

from bench.synthetic_latents import smooth_image
from palette_core import sw_guidance as S
from palette_core.distance import palette_emd
from palette_core.errors import InputShapeError
from palette_core.latent_rgb import SDXL_LATENT_RGB_BIAS, SDXL_LATENT_RGB_FACTORS, fast_decode, fast_encode

PALETTE = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.2, 0.8], [0.95, 0.9, 0.2]])
WEIGHTS = torch.tensor([2.0, 1.0, 1.0])


class VaeLikeDecoder(torch.nn.Module):
    """A tiny stand-in for an SDXL VAE decoder: x8 upsampling, colour close to SDXL's linear preview map
    (as the real VAE's is: that map is a fit to it) plus a nonlinear, spatially mixing residual."""

    def __init__(self, seed: int = 0, gain: float = 0.15) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.a = torch.nn.Conv2d(4, 16, 3, padding=1)
        self.b = torch.nn.Conv2d(16, 3, 3, padding=1)
        with torch.no_grad():
            for conv in (self.a, self.b):
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) / conv.weight[0].numel() ** 0.5)
                conv.bias.zero_()
        self.gain = gain

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        up = torch.nn.functional.interpolate(z, scale_factor=8, mode="bilinear", align_corners=False)
        residual = self.b(torch.nn.functional.silu(self.a(up))).movedim(1, -1)
        return fast_decode(up) + self.gain * torch.tanh(residual)


def emd(latent_or_image: torch.Tensor, decode=None) -> torch.Tensor:
    with torch.no_grad():
        img = fast_decode(latent_or_image) if decode is None else decode(latent_or_image)
    return palette_emd(img.clamp(0, 1), PALETTE, WEIGHTS)


def far_latent(batch: int = 2, size: int = 24, seed: int = 3) -> torch.Tensor:
    """A latent whose fast decode is a smooth random image, far from the palette."""
    return fast_encode(smooth_image(batch, size, size, seed=seed))


# ---------------------------------------------------------------------------------------------- latent-RGB


def test_fast_decode_is_comfyuis_preview_map():
    z = torch.tensor([0.3, -1.2, 0.5, 2.0]).view(1, 4, 1, 1)
    f, b = np.array(SDXL_LATENT_RGB_FACTORS), np.array(SDXL_LATENT_RGB_BIAS)
    expected = ((z.view(4).numpy() @ f + b) + 1) / 2  # latent_preview.Latent2RGBPreviewer, then (v + 1) / 2
    assert np.allclose(fast_decode(z).view(3).numpy(), expected, atol=1e-6)
    assert f[0, 0] == 0.3651 and b[0] == 0.1084  # the numbers of comfy/latent_formats.py SDXL
    rgb = torch.rand(2, 5, 7, 3)
    assert torch.allclose(fast_decode(fast_encode(rgb)), rgb, atol=1e-5)
    with pytest.raises(InputShapeError, match="4 channels"):
        fast_decode(torch.zeros(1, 16, 2, 2))


# ---------------------------------------------------------------------------------------------- sliced W


def test_random_rotations_are_proper_rotations():
    r = S.random_rotations(50, torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.allclose(r @ r.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(50, 3, 3), atol=1e-10)
    assert torch.allclose(torch.linalg.det(r), torch.ones(50, dtype=torch.float64), atol=1e-10)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(-5, 5), min_size=1, max_size=12),
    st.lists(st.floats(0.01, 10), min_size=12, max_size=12),
    st.lists(st.floats(0, 1), min_size=1, max_size=20),
)
def test_weighted_quantiles_invert_the_weighted_cdf(values, weights, levels):
    v = torch.tensor(values, dtype=torch.float64)
    w = torch.tensor(weights[: len(values)], dtype=torch.float64)
    q = S.weighted_quantiles(v.view(1, -1), w, torch.tensor(levels, dtype=torch.float64))[0]
    order = np.argsort(values, kind="stable")
    sv, cw = np.array(values)[order], np.cumsum(np.array(weights[: len(values)])[order])
    cw = cw / cw[-1]
    for level, got in zip(levels, q.tolist()):
        i = min(int(np.searchsorted(cw, level, side="left")), len(values) - 1)
        assert got == sv[i]


def test_sliced_w1_on_one_direction_is_the_exact_1d_w1():
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(1, 12, 3, generator=g, dtype=torch.float64)
    colors = torch.rand(3, 3, generator=g, dtype=torch.float64)
    weights = torch.tensor([3.0, 5.0, 4.0], dtype=torch.float64)  # multiples of 1/12: mid-point levels are exact
    d = torch.nn.functional.normalize(torch.tensor([[0.3, -0.5, 0.8]], dtype=torch.float64), dim=1)
    ours = float(S.sliced_w1(pixels, colors, weights, d))
    ref = scipy.stats.wasserstein_distance((pixels[0] @ d[0]).numpy(), (colors @ d[0]).numpy(), None, weights.numpy())
    assert ours == pytest.approx(ref, rel=1e-12)


def test_sliced_w1_is_zero_on_the_palette_itself():
    pixels = PALETTE[torch.tensor([0, 0, 1, 2] * 25)].unsqueeze(0)
    d = S.random_rotations(8, torch.Generator().manual_seed(1)).reshape(-1, 3)
    assert float(S.sliced_w1(pixels, PALETTE, WEIGHTS, d)) == pytest.approx(0.0, abs=1e-6)
    assert float(S.sliced_w1(pixels, PALETTE, torch.tensor([1.0, 1.0, 1.0]), d)) > 0.01


# ---------------------------------------------------------------------------------------------- guidance


def test_fast_guidance_halves_the_palette_emd():
    z = far_latent()
    before = emd(z)
    after = emd(S.guide(z, PALETTE, WEIGHTS, steps=8, strength=1.0))
    assert bool((after <= 0.5 * before).all()), (before, after)
    assert bool((emd(S.guide(z, PALETTE, WEIGHTS, steps=2)) > after).all())  # more steps, closer


def test_exact_guidance_halves_the_palette_emd_through_a_nonlinear_decoder():
    dec = VaeLikeDecoder()
    z = far_latent(size=16)
    before = emd(z, dec)
    after = emd(S.guide(z, PALETTE, WEIGHTS, steps=8, strength=1.0, decode=dec), dec)
    assert bool((after <= 0.5 * before).all()), (before, after)
    assert all(p.grad is None for p in dec.parameters())  # the gradient went to the latent only


def test_guidance_never_raises_the_loss_on_a_strongly_nonlinear_decoder():
    dec = VaeLikeDecoder(seed=1, gain=3.0)  # far from linear: Gauss-Newton steps overshoot and are halved
    z = far_latent(size=16, seed=5)
    d = S.random_rotations(32, torch.Generator().manual_seed(9)).reshape(-1, 3)

    def loss(latent):
        with torch.no_grad():
            return S.sliced_wasserstein(dec(latent).reshape(2, -1, 3), PALETTE, WEIGHTS, d, power=2)

    assert bool((loss(S.guide(z, PALETTE, WEIGHTS, steps=4, decode=dec)) <= loss(z) * 1.02).all())


def test_guidance_works_under_inference_mode_and_leaves_zero_strength_alone():
    z = far_latent(batch=1)
    with torch.inference_mode():
        zi = z.clone()
        out = S.guide(zi, PALETTE, WEIGHTS, steps=2)
        assert torch.equal(S.guide(zi, PALETTE, WEIGHTS, steps=2, strength=0.0), zi)
        assert torch.equal(S.guide(zi, PALETTE, WEIGHTS, steps=0), zi)
    assert out.shape == z.shape and not torch.equal(out, z)
    assert torch.equal(out, S.guide(z, PALETTE, WEIGHTS, steps=2))  # seeded: reproducible


# ---------------------------------------------------------------------------------------------- the post-CFG patch


def test_guidance_patch_acts_only_inside_its_sigma_window():
    patches = pack_module("nodes.training_free_patches")
    patch = patches.GuidancePatch(PALETTE, WEIGHTS, strength=1.0, steps=2, sigma_start=10.0, sigma_end=1.0)
    assert copy.deepcopy([patch])[0] is patch
    den = far_latent(batch=2, size=8)
    for sigma, active in ((14.0, False), (10.0, True), (3.0, True), (1.0, False), (0.1, False)):
        out = patch({"denoised": den, "sigma": torch.full((2,), sigma), "model": None})
        assert (out is not den) == active
    assert patch.calls == 2
    assert bool((emd(out) <= emd(den)).all())


def test_guidance_patch_decodes_with_the_model_it_is_given():
    patches = pack_module("nodes.training_free_patches")
    seen = []

    def decode(z, model):
        seen.append(model)
        return fast_decode(z)

    patch = patches.GuidancePatch(PALETTE, WEIGHTS, strength=1.0, steps=3, decode=decode)
    den = far_latent(batch=1, size=8)
    patch({"denoised": den, "sigma": torch.tensor([5.0]), "model": "the model"})
    assert seen and set(seen) == {"the model"}


def test_guidance_patch_is_reproducible_across_runs():
    patches = pack_module("nodes.training_free_patches")
    patch = patches.GuidancePatch(PALETTE, WEIGHTS, strength=1.0, steps=2)
    den = far_latent(batch=1, size=8)
    first = patch({"denoised": den, "sigma": torch.tensor([4.0]), "model": None})
    patch({"denoised": den, "sigma": torch.tensor([2.0]), "model": None})
    assert torch.equal(patch({"denoised": den, "sigma": torch.tensor([4.0]), "model": None}), first)


def test_a_decoder_that_overflows_leaves_the_latent_unguided_instead_of_failing(caplog):
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    colors = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.1, 0.9]])
    calls = []

    def nan_from_call(n):
        def decode(z):
            calls.append(1)
            rgb = fast_decode(z)
            return rgb if len(calls) < n else rgb * float("nan")

        return decode

    always_nan = S.guide(latent, colors, steps=3, decode=lambda z: fast_decode(z) * float("inf"))
    assert torch.equal(always_nan, latent)
    assert "NaN or infinite" in caplog.text
    # the first step's point could not be checked (its decode failed): the input comes back
    assert torch.equal(S.guide(latent, colors, steps=3, decode=nan_from_call(2)), latent)
    calls.clear()
    # the first step's point decoded fine before the failure: it is kept, and it is closer to the palette
    kept = S.guide(latent, colors, steps=3, decode=nan_from_call(3))
    assert torch.isfinite(kept).all() and not torch.equal(kept, latent)
    assert float(S.palette_distance(kept, colors)) < float(S.palette_distance(latent, colors))
