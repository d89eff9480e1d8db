"""palette_core.alignment: the condition latents, the matching (vs the exact optimum) and x̂0 replacement."""

from __future__ import annotations

import copy

import numpy as np
import ot
import pytest
import scipy.optimize
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.greedy_match import greedy_match
from bench.synthetic_latents import matching_problem, patch_vae, x0_like
from palette_core import alignment as A
from palette_core.errors import InputShapeError, PaletteError
from palette_core.latent_rgb import fast_encode
from palette_core.render import stripe_widths


def rows_sorted(x: torch.Tensor) -> torch.Tensor:
    """Rows in lexicographic order: two row sets are equal as multisets iff these are equal."""
    x = x.double()
    for col in reversed(range(x.shape[1])):
        x = x[torch.argsort(x[:, col], stable=True)]
    return x


def is_permutation(perm: torch.Tensor, n: int) -> bool:
    return perm.dtype == torch.long and torch.equal(torch.sort(perm).values, torch.arange(n))


def cost(s: torch.Tensor, t: torch.Tensor, perm: torch.Tensor) -> float:
    return float(((s.double() - t.double()[perm]) ** 2).sum())


# ---------------------------------------------------------------------------------------------- condition


def test_condition_image_areas_follow_the_weights_in_shuffled_blocks():
    colors = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    weights = torch.tensor([3.0, 1.0, 0.0])  # a zero weight: that colour must not appear
    img = A.condition_image(colors, weights, 64, 128, block=16, seed=3)
    assert img.shape == (64, 128, 3)
    blocks = img[::16, ::16].reshape(-1, 3)  # one pixel per block: every block is one flat colour
    assert torch.equal(img.reshape(4, 16, 8, 16, 3)[:, 0, :, 0], img[::16, ::16])
    counts = [int((blocks == c).all(1).sum()) for c in colors]
    assert counts == [24, 8, 0] == stripe_widths(torch.tensor([0.75, 0.25]), 32).tolist() + [0]
    first_row_block = img[0, :16]
    assert not torch.equal(img[:, :64], img[:, 64:]) or not torch.equal(first_row_block, img[0, 16:32])
    assert torch.equal(img, A.condition_image(colors, weights, 64, 128, block=16, seed=3))
    assert not torch.equal(img, A.condition_image(colors, weights, 64, 128, block=16, seed=4))


def test_condition_image_rejects_palettes_without_weight():
    with pytest.raises(PaletteError, match="weights sum to 0"):
        A.condition_image(torch.rand(3, 3), torch.zeros(3), 16, 16)
    with pytest.raises(PaletteError, match="finite and >= 0"):
        A.condition_image(torch.rand(2, 3), torch.tensor([1.0, -1.0]), 16, 16)


def test_blur_keeps_flat_colour_and_softens_edges():
    flat = torch.full((1, 30, 30, 3), 0.25)
    assert torch.allclose(A.blur(flat), flat, atol=1e-6)
    edge = torch.zeros(1, 30, 30, 3)
    edge[:, :, 15:] = 1.0
    out = A.blur(edge)
    assert 0.05 < float(out[0, 10, 14, 0]) < 0.95  # the edge is now a ramp
    assert float(out[0, 10, 2, 0]) == pytest.approx(0.0, abs=1e-6)


def test_condition_latents_of_flat_areas_decode_to_the_palette():
    enc = patch_vae(seed=0)
    colors = torch.tensor([[0.9, 0.2, 0.1], [0.1, 0.3, 0.8]])
    vec = A.condition_latents(enc, colors, None, 12, 20, block=32, seed=1)
    assert vec.shape == (240, 4)
    expected = fast_encode(colors.view(1, 1, 2, 3))[0].flatten(1).T  # flat 8x8 patches encode exactly to these
    hits = [int(((vec - e).abs().max(1).values < 1e-4).sum()) for e in expected]
    assert all(h > 40 for h in hits)  # the blocks' interiors; the rest are blends at block borders


def test_resize_condition_keeps_proportions():
    cond = torch.arange(10.0).repeat_interleave(3).reshape(-1, 1)  # 30 vectors, values 0..9 three times each
    up = A.resize_condition(cond, 60)
    assert up.shape == (60, 1)
    assert torch.bincount(up[:, 0].long()).tolist() == [6] * 10
    assert torch.equal(A.resize_condition(cond, 30), cond)


# ---------------------------------------------------------------------------------------------- matching


vectors = st.integers(1, 80).flatmap(
    lambda n: st.tuples(
        st.just(n),
        st.integers(1, 6),
        st.integers(0, 2**16),
        st.sampled_from(["gauss", "clustered", "duplicates", "constant"]),
    )
)


def _problem(n: int, d: int, seed: int, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, d, generator=g)
    if kind == "gauss":
        t = torch.randn(n, d, generator=g) * 2
    elif kind == "clustered":
        centres = torch.randn(3, d, generator=g) * 5
        t = centres[torch.randint(3, (n,), generator=g)] + 0.01 * torch.randn(n, d, generator=g)
    elif kind == "duplicates":
        t = torch.randn(2, d, generator=g)[torch.randint(2, (n,), generator=g)]
    else:
        t = torch.ones(n, d)
    return s, t


@settings(max_examples=60, deadline=None)
@given(vectors)
def test_match_is_always_a_permutation(problem):
    n, d, seed, kind = problem
    s, t = _problem(n, d, seed, kind)
    perm = A.match(s, t, k=8)
    assert is_permutation(perm, n)
    assert torch.equal(rows_sorted(t[perm]), rows_sorted(t))  # the multiset of targets is used exactly once


def test_match_is_optimal_when_an_exact_solution_is_obvious():
    s = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    shuffle = torch.randperm(50, generator=torch.Generator().manual_seed(1))
    t = s[shuffle] + 1e-4  # every source has its own target right next to it
    perm = A.match(s, t)
    assert torch.equal(shuffle[perm], torch.arange(50))


def exact_optimum(s: torch.Tensor, t: torch.Tensor) -> float:
    """Minimum total squared distance of a one-to-one assignment, by POT's network simplex.

    Identical targets (flat colour blocks encode to identical latents) are merged into one of summed
    mass, which leaves the optimum unchanged and makes n = 2048 take a second instead of ten.
    """
    uniq, counts = torch.unique(t.double(), dim=0, return_counts=True)
    c = (torch.cdist(s.double(), uniq) ** 2).numpy()
    return float(ot.emd2(np.ones(s.shape[0]), counts.double().numpy(), c, numItermax=10**7))


@pytest.mark.parametrize("shape", [(32, 32), (32, 64)])
def test_match_is_within_ten_percent_of_the_exact_optimum(shape):
    """n = 1024 and 2048, x̂0-like sources against clustered condition latents of a 5-colour palette."""
    h, w = shape
    enc = patch_vae(seed=2)
    s = x0_like(enc, 1, h, w, seed=2)[0].flatten(1).T.contiguous()
    colors, weights = torch.rand(5, 3, generator=torch.Generator().manual_seed(5)), torch.tensor([3.0, 1, 1, 2, 0.5])
    t = A.condition_latents(enc, colors, weights, h, w, seed=2)
    optimum = exact_optimum(s, t)
    ours = cost(s, t, A.match(s, t))
    assert ours <= 1.10 * optimum
    if h * w == 1024:
        c = (torch.cdist(s.double(), t.double()) ** 2).numpy()
        rows, cols = scipy.optimize.linear_sum_assignment(c)
        assert float(c[rows, cols].sum()) == pytest.approx(optimum, rel=1e-9)  # the two exact solvers agree
        assert ours < cost(s, t, greedy_match(s, t)[0])  # the reference: ~2-3x the optimum (bench/)


def test_cluster_transport_is_exact():
    """The capacity repair reaches the exact optimum of the source-to-cluster transport (POT's network simplex)."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        n, k = int(rng.integers(5, 200)), int(rng.integers(1, 10))
        if n < k:
            continue
        c = torch.tensor(rng.random((n, k)) * 10)
        sizes = torch.tensor(rng.multinomial(n - k, np.ones(k) / k) + 1)
        w = torch.tensor(rng.normal(size=k))  # any start: the repair does all the work
        assign, duals = A._exact_capacities(c, w, sizes)
        assert torch.equal(torch.bincount(assign, minlength=k), sizes)
        exact = ot.emd2(np.ones(n), sizes.double().numpy(), c.numpy())
        assert float(c[torch.arange(n), assign].sum()) == pytest.approx(exact, rel=1e-9, abs=1e-9)
        reduced = c - duals[None, :]  # the returned potentials are exact duals: each source sits at a minimum
        assert bool((reduced[torch.arange(n), assign] <= reduced.min(1).values + 1e-9).all())


def test_cluster_potentials_leave_little_to_repair():
    s, t = matching_problem(24, k=5, seed=3)
    cl = A.cluster_targets(t)
    c = A._sq_dist(s, cl.centroids)
    excess = A._excess(c, A.cluster_potentials(c, cl.sizes), cl.sizes)
    assert excess < 0.1 * s.shape[0]
    assert A._excess(c, torch.zeros(len(cl.sizes)), cl.sizes) > excess


def test_match_rejects_bad_input():
    with pytest.raises(InputShapeError, match="same shape"):
        A.match(torch.zeros(3, 4), torch.zeros(4, 4))
    with pytest.raises(InputShapeError, match="NaN"):
        A.match(torch.tensor([[float("nan")]]), torch.zeros(1, 1))
    with pytest.raises(InputShapeError, match=r"\[n, d\]"):
        A.match(torch.zeros(0, 4), torch.zeros(0, 4))


# ---------------------------------------------------------------------------------------------- x̂0 replacement


def test_align_replaces_each_batch_item_by_a_permutation_of_the_condition():
    enc = patch_vae(seed=1)
    cond = A.condition_latents(enc, torch.rand(4, 3), None, 10, 14, seed=0)
    x0 = x0_like(enc, 3, 10, 14, seed=4)
    ac = A.AlignmentCondition(cond)
    out = ac.align(x0)
    for b in range(3):
        assert torch.equal(rows_sorted(out[b].flatten(1).T), rows_sorted(cond))
    half = A.AlignmentCondition(cond).align(x0, 0.5)  # a fresh condition matches exactly as the first call did
    assert torch.allclose(half, 0.5 * (x0 + out), atol=1e-5)
    assert torch.equal(ac.align(x0, 0.0), x0)
    with pytest.raises(InputShapeError, match="h\\*w"):
        ac.align(torch.zeros(1, 4, 10, 10))


# ---------------------------------------------------------------------------------------------- the post-CFG patch


def euler_sample(post_cfg, x: torch.Tensor, sigmas: torch.Tensor, denoiser) -> torch.Tensor:
    """ComfyUI's euler sampler loop with a post-CFG function, as comfy/samplers.py calls it."""
    for i in range(len(sigmas) - 1):
        sigma = sigmas[i].expand(x.shape[0])
        denoised = post_cfg({"denoised": denoiser(x, sigma), "sigma": sigma, "model": None, "input": x})
        d = (x - denoised) / sigmas[i]
        x = x + d * (sigmas[i + 1] - sigmas[i])
    return x


def test_align_patch_with_stop_zero_ends_on_a_permutation_of_the_condition():
    from packimport import pack_module

    patches = pack_module("nodes.training_free_patches")
    enc = patch_vae(seed=0)
    calls = []

    def encode(image, model):
        calls.append(image.shape)
        return enc(image)

    colors, weights = torch.rand(3, 3, generator=torch.Generator().manual_seed(2)), torch.tensor([2.0, 1.0, 1.0])
    patch = patches.AlignPatch(encode, colors, weights, stop_sigma=0.0, strength=1.0)
    assert copy.deepcopy({"fn": patch})["fn"] is patch  # ModelPatcher.clone() must not copy the cache
    sigmas = torch.tensor([14.6, 6.0, 2.5, 0.9, 0.03, 0.0])
    x = torch.randn(2, 4, 6, 10, generator=torch.Generator().manual_seed(0)) * sigmas[0]
    out = euler_sample(patch, x, sigmas, lambda x, s: x / (1 + s.view(-1, 1, 1, 1) ** 2) ** 0.5)
    cond = patch.conditions[(6, 10)].vectors
    assert calls == [(1, 48, 80, 3)]  # encoded once for the latent size, reused at every step
    assert patch.calls == 5
    for b in range(2):
        got = out[b].flatten(1).T
        # the last euler step lands exactly on the aligned x̂0 (up to float rounding)
        assert torch.allclose(rows_sorted(got), rows_sorted(cond), atol=1e-5)


def test_align_patch_pauses_at_the_stop_sigma():
    from packimport import pack_module

    patches = pack_module("nodes.training_free_patches")
    patch = patches.AlignPatch(lambda img, m: patch_vae(0)(img), torch.rand(2, 3), None, stop_sigma=1.0)
    den = torch.randn(1, 4, 4, 4)
    assert patch({"denoised": den, "sigma": torch.tensor([0.5])}) is den
    assert patch.calls == 0 and not patch.conditions
    out = patch({"denoised": den, "sigma": torch.tensor([1.5])})
    assert patch.calls == 1 and not torch.equal(out, den)
