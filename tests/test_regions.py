"""Region masks (docs/regions.md): the mask rule, and masked alignment, guidance and adapter attention.

Contract tests without ComfyUI; tests/test_regions_comfyui.py samples real (tiny, random-weight) models.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from packimport import pack_module

from bench.synthetic_latents import patch_vae, smooth_image
from palette_core import alignment as AL
from palette_core import sw_guidance as S
from palette_core.errors import InputShapeError
from palette_core.latent_rgb import fast_decode, fast_encode
from palette_core.masks import check_mask, fit_mask, is_empty

patches = pack_module("nodes.training_free_patches")
adapter_patch = pack_module("nodes.adapter_patch")
A = pack_module("palette_core.adapter")

RED = torch.tensor([[0.85, 0.1, 0.1]])
BLUE = torch.tensor([[0.1, 0.2, 0.85]])


def halves(h: int, w: int, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Left and right half masks ``[batch, h, w]`` (disjoint, covering everything)."""
    left = torch.zeros(batch, h, w)
    left[..., : w // 2] = 1.0
    return left, 1.0 - left


# ---------------------------------------------------------------------------------------------- the rule


def test_fit_mask_area_averages_and_broadcasts():
    m = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]]).repeat_interleave(2, 0)  # 4 x 4
    out = fit_mask(m, 2, 2, batch=3)
    assert out.shape == (3, 2, 2)
    assert torch.equal(out[0], torch.tensor([[0.5, 1.0], [0.0, 1.0]]))  # block means, not a sample
    assert torch.equal(out[2], out[0])
    assert torch.equal(fit_mask(m, 4, 4, 1)[0], m)  # same size: untouched


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.integers(1, 4), st.integers(0, 2**31 - 1))
def test_fit_mask_keeps_the_covered_area(h, w, f, seed):
    m = torch.rand(2, h * f, w * f, generator=torch.Generator().manual_seed(seed))
    out = fit_mask(m, h, w, 2)
    assert torch.allclose(out.mean(dim=(1, 2)), m.mean(dim=(1, 2)), atol=1e-5)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_bad_masks_are_clear_errors():
    with pytest.raises(InputShapeError, match="NaN"):
        check_mask(torch.tensor([[0.5, float("nan")]]))
    with pytest.raises(InputShapeError, match="empty"):
        check_mask(torch.zeros(1, 0, 4))
    with pytest.raises(InputShapeError, match=r"expected \[H, W\] or \[B, H, W\]"):
        check_mask(torch.zeros(4))
    with pytest.raises(InputShapeError, match="a batch of 2 masks for 3"):
        fit_mask(torch.ones(2, 8, 8), 4, 4, 3)
    with pytest.raises(InputShapeError, match="another aspect ratio"):
        fit_mask(torch.ones(1, 64, 32), 8, 8, 1)
    assert fit_mask(torch.ones(1, 1024, 1016), 128, 128, 1).shape == (1, 128, 128)  # rounding: one cell of slack
    assert torch.equal(check_mask(torch.tensor([[1.5, -0.5]])), torch.tensor([[[1.0, 0.0]]]))
    assert is_empty(torch.zeros(2, 4, 4)) and not is_empty(torch.tensor([[0.0, 0.01]]))


# ---------------------------------------------------------------------------------------------- alignment


def condition(h: int, w: int) -> AL.AlignmentCondition:
    colors = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.2, 0.8], [0.95, 0.9, 0.2]])
    vectors = AL.condition_latents(patch_vae(seed=0), colors, torch.tensor([2.0, 1.0, 1.0]), h, w)
    return AL.AlignmentCondition(vectors)


def test_masked_alignment_moves_only_the_region_and_uses_the_condition_there():
    x0 = torch.randn(2, 4, 8, 12, generator=torch.Generator().manual_seed(1))
    left, _ = halves(8, 12, 2)
    left[1] = 0.0  # the second item has no region: untouched
    out = condition(8, 12).align(x0, 1.0, left)
    assert torch.equal(out[..., 6:], x0[..., 6:]) and torch.equal(out[1], x0[1])
    region = condition(8, 12).region(48).vectors
    got = out[0, :, :, :6].flatten(1).T
    assert torch.allclose(AL_rows(got), AL_rows(region), atol=1e-6)  # a permutation of the resampled condition


def AL_rows(x: torch.Tensor) -> torch.Tensor:
    x = x.double()
    for col in reversed(range(x.shape[1])):
        x = x[torch.argsort(x[:, col], stable=True)]
    return x


def test_full_mask_alignment_is_the_unmasked_alignment_and_soft_masks_blend():
    x0 = torch.randn(1, 4, 6, 6, generator=torch.Generator().manual_seed(2))
    plain = condition(6, 6).align(x0, 1.0)
    assert torch.equal(condition(6, 6).align(x0, 1.0, torch.ones(1, 6, 6)), plain)
    half = condition(6, 6).align(x0, 1.0, torch.full((1, 6, 6), 0.5))
    assert torch.allclose(half, torch.lerp(x0, plain, 0.5), atol=1e-6)


# ---------------------------------------------------------------------------------------------- guidance


def test_weighted_sliced_wasserstein_is_the_subset_and_duplicate_distribution():
    g = torch.Generator().manual_seed(0)
    px, colors = torch.rand(2, 300, 3, generator=g), torch.rand(4, 3, generator=g)
    w, d = torch.tensor([1.0, 2.0, 3.0, 4.0]), S.random_rotations(8, g).reshape(-1, 3)
    ones = S.sliced_wasserstein(px, colors, w, d, 2, pixel_weights=torch.ones(2, 300))
    assert torch.allclose(ones, S.sliced_wasserstein(px, colors, w, d, 2), rtol=1e-5)
    sub = torch.zeros(2, 300)
    sub[:, :120] = 1.0
    got = S.sliced_wasserstein(px, colors, w, d, 1, pixel_weights=sub)
    assert torch.allclose(got, S.sliced_wasserstein(px[:, :120], colors, w, d, 1), rtol=1e-5)
    dup = torch.ones(2, 300)
    dup[:, :50] = 2.0
    got = S.sliced_wasserstein(px, colors, w, d, 2, pixel_weights=dup)  # a weight-2 pixel sits at one level, not two
    assert torch.allclose(got, S.sliced_wasserstein(torch.cat([px, px[:, :50]], 1), colors, w, d, 2), rtol=1e-2)
    assert float(S.sliced_wasserstein(px, colors, w, d, 2, pixel_weights=torch.zeros(2, 300))[0]) == 0.0


def varied_latent(size: int = 16) -> torch.Tensor:
    return fast_encode(smooth_image(1, size, size, seed=3))


def test_masked_guidance_pulls_the_region_and_leaves_the_rest_exactly():
    latent = varied_latent()
    left, right = halves(16, 16)
    out = S.guide(latent, RED, None, steps=4, mask=left)
    assert torch.equal(out[..., 8:], latent[..., 8:])
    before = fast_decode(latent)[0, :, :8].reshape(-1, 3)
    after = fast_decode(out)[0, :, :8].reshape(-1, 3)
    assert float((after - RED).norm(dim=-1).mean()) < 0.5 * float((before - RED).norm(dim=-1).mean())


# ---------------------------------------------------------------------------------------------- composition


def guidance(colors: torch.Tensor, mask: torch.Tensor | None):
    return patches.GuidancePatch(colors, None, strength=1.0, steps=3, mask=mask)


def test_regional_patches_compose_independently_of_order():
    latent = varied_latent()
    args = {"denoised": latent, "sigma": torch.tensor([5.0])}
    left, right = halves(16, 16)
    wide_left = torch.zeros(1, 16, 16)
    wide_left[..., :10] = 1.0  # overlaps the right half on columns 8-9
    ab = patches.RegionGroup((guidance(RED, wide_left), guidance(BLUE, right)))(args)
    ba = patches.RegionGroup((guidance(BLUE, right), guidance(RED, wide_left)))(args)
    assert torch.allclose(ab, ba, atol=1e-6)
    rgb = fast_decode(ab)[0]
    assert float((rgb[:, :8] - RED).norm(dim=-1).mean()) < float((rgb[:, :8] - BLUE).norm(dim=-1).mean())
    assert float((rgb[:, 10:] - BLUE).norm(dim=-1).mean()) < float((rgb[:, 10:] - RED).norm(dim=-1).mean())
    # nothing outside every mask moves
    narrow = torch.zeros(1, 16, 16)
    narrow[..., :4] = 1.0
    out = patches.RegionGroup((guidance(RED, narrow), guidance(BLUE, narrow.flip(-1))))(args)
    assert torch.equal(out[..., 4:12], latent[..., 4:12])


def test_regional_patches_join_one_group_per_kind_on_a_model():
    class Model:
        def __init__(self):
            self.model_options = {}

        def set_model_sampler_post_cfg_function(self, fn):
            self.model_options["sampler_post_cfg_function"] = [
                *self.model_options.get("sampler_post_cfg_function", []),
                fn,
            ]

    m = Model()
    left, right = halves(8, 8)
    plain = guidance(RED, None)
    patches.add_post_cfg_patch(m, plain)
    patches.add_post_cfg_patch(m, guidance(RED, left))
    patches.add_post_cfg_patch(m, guidance(BLUE, right))
    fns = m.model_options["sampler_post_cfg_function"]
    assert fns[0] is plain and len(fns) == 2 and len(fns[1].patches) == 2


# ---------------------------------------------------------------------------------------------- adapter

LAYER = "up_blocks.0.attentions.1.transformer_blocks.0.attn2"


def test_adapter_attention_is_scaled_by_the_mask_on_the_token_grid():
    adapter = A.init_adapter({LAYER: 64}, seed=0, context_dim=32)
    g = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(4, 32, 64, generator=g),
        torch.randn(4, 7, 64, generator=g),
        torch.randn(4, 7, 64, generator=g),
    )
    extra = {"cond_or_uncond": [1, 0], "sigmas": torch.tensor([5.0]), "n_heads": 2, "activations_shape": [4, 64, 4, 8]}

    def host(q, k, v, extra_options):
        return A.sdpa_attention(q, k, v, extra_options["n_heads"])

    def run(mask):
        r = adapter_patch.AdapterRun(adapter, A.palette_condition(RED), None, 1.0, attention=host, mask=mask)
        return adapter_patch.PaletteAttn2Patch(r, LAYER)(q, k, v, extra)

    base, full = host(q, k, v, extra), run(None)
    assert torch.equal(run(torch.ones(1, 32, 64)), full)  # a full mask is no mask
    left = torch.zeros(1, 32, 64)
    left[..., :32] = 1.0  # the left half of the image: token columns 0-3 of the 4 x 8 grid
    out = run(left).reshape(4, 4, 8, 64)
    assert torch.equal(out[..., 4:, :], base.reshape(4, 4, 8, 64)[..., 4:, :])  # both CFG chunks
    assert torch.allclose(out[..., :4, :], full.reshape(4, 4, 8, 64)[..., :4, :], atol=1e-6)
    assert adapter_patch.token_grid({"original_shape": [2, 4, 9, 16]}, 5 * 8) == (5, 8)
