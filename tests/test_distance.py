"""palette_core.distance: bin similarity, Quadratic-Chi and the palette EMD protocol."""

from __future__ import annotations

import numpy as np
import ot
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from palette_core import InputShapeError
from palette_core import color as C
from palette_core import distance as D
from palette_core import histogram as H


@pytest.fixture(scope="module")
def dense_a() -> torch.Tensor:
    return D.bin_similarity().to_dense()


def test_similarity_matches_a_brute_force_build(dense_a):
    lab = C.srgb_to_lab(H.bin_centers(torch.float64))
    rows = torch.randperm(H.NUM_BINS, generator=torch.Generator().manual_seed(0))[:400]
    de = C.ciede2000(lab[rows, None, :], lab[None, :, :])
    ref = (1 - de.clamp(max=20.0) / 20.0).clamp_min(0)
    got = dense_a[rows]
    assert (got - ref).abs().max() < 1e-5  # float32 ΔE inside the build; pattern differs only at ΔE ≈ T
    assert torch.equal(torch.diagonal(dense_a), torch.ones(H.NUM_BINS, dtype=dense_a.dtype))
    assert torch.equal(dense_a, dense_a.T)
    density = float((dense_a > 0).double().mean())
    assert 0.13 < density < 0.17  # "about 15% of entries are non-zero at T = 20"


def test_similarity_is_cached_and_gamma_sharpens(dense_a):
    assert D.bin_similarity() is D.bin_similarity()
    sharp = D.bin_similarity(gamma=2.0).to_dense()
    assert torch.allclose(sharp, dense_a**2)
    with pytest.raises(InputShapeError, match="threshold"):
        D.bin_similarity(threshold=0)


def qc_reference(p: np.ndarray, q: np.ndarray, a: np.ndarray, m: float = 0.5) -> float:
    """Pele & Werman's QC written out in numpy from the formula, one pair."""
    p, q = p / max(p.sum(), 1e-300), q / max(q.sum(), 1e-300)
    z = (p + q) @ a
    d = np.zeros_like(p)
    nz = z > 0
    d[nz] = (p[nz] - q[nz]) / z[nz] ** m
    return float(np.sqrt(max(d @ a @ d, 0.0)))


def random_hists(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    imgs = torch.rand(n, 24, 24, 3, generator=g) ** torch.rand(n, 1, 1, 3, generator=g).mul(4)
    return H.image_histogram(imgs).double()


def test_qc_matches_dense_reference_and_dense_matrix(dense_a):
    p = random_hists(4, 1)
    q = torch.cat([random_hists(2, 2), H.palette_histogram(torch.rand(2, 5, 3)).double()])
    got = D.quadratic_chi(p, q)
    a_np = dense_a.numpy()
    ref = [qc_reference(p[i].numpy(), q[i].numpy(), a_np) for i in range(4)]
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-9)
    dense = D.quadratic_chi(p, q, similarity=dense_a)
    np.testing.assert_allclose(dense.numpy(), ref, rtol=1e-9)


def test_qc_identity_symmetry_and_batch_broadcast():
    p = random_hists(3, 3)
    assert torch.allclose(D.quadratic_chi(p, p), torch.zeros(3, dtype=torch.float64), atol=1e-7)
    q = random_hists(3, 4)
    assert torch.allclose(D.quadratic_chi(p, q), D.quadratic_chi(q, p))
    one = D.quadratic_chi(p, q[0])
    assert one.shape == (3,)
    assert torch.isclose(one[1], D.quadratic_chi(p[1], q[0]))
    assert D.quadratic_chi(p[0], q[0]).ndim == 0


def test_qc_of_a_palette_against_nothing_is_one():
    single = H.palette_histogram(torch.tensor([[0.9, 0.2, 0.1]]))
    far_apart = H.palette_histogram(torch.tensor([[1.0, 0, 0], [0, 0, 1.0], [0, 0, 0], [1.0, 1, 1], [0, 1.0, 0]]))
    for pal in (single, far_apart):
        assert float(D.quadratic_chi(pal, torch.zeros(H.NUM_BINS))) == pytest.approx(1.0, abs=1e-6)


def test_qc_grows_with_colour_difference():
    red = H.palette_histogram(torch.tensor([[0.9, 0.1, 0.1]]))
    orange = H.palette_histogram(torch.tensor([[0.9, 0.35, 0.1]]))
    blue = H.palette_histogram(torch.tensor([[0.1, 0.1, 0.9]]))
    assert D.quadratic_chi(red, orange) < D.quadratic_chi(red, blue)


@given(st.integers(0, 2**31 - 1))
@settings(max_examples=25, deadline=None)
def test_qc_property_symmetric_bounded_and_zero_on_self(seed):
    g = torch.Generator().manual_seed(seed)
    p = H.palette_histogram(torch.rand(int(torch.randint(1, 9, (1,), generator=g)), 3, generator=g))
    q = H.palette_histogram(torch.rand(int(torch.randint(1, 9, (1,), generator=g)), 3, generator=g))
    d = float(D.quadratic_chi(p, q))
    assert d == pytest.approx(float(D.quadratic_chi(q, p)), abs=1e-6)
    assert 0.0 <= d <= 1.5
    assert float(D.quadratic_chi(p, p)) == pytest.approx(0.0, abs=1e-6)


def test_qc_rejects_bad_histograms():
    with pytest.raises(InputShapeError, match="4080"):
        D.quadratic_chi(torch.zeros(10), torch.zeros(10))
    with pytest.raises(InputShapeError, match=">= 0"):
        D.quadratic_chi(-torch.ones(H.NUM_BINS), torch.ones(H.NUM_BINS))


def pot_protocol(image: torch.Tensor, colors: torch.Tensor, weights, samples=1024, seed=0) -> float:
    """The Table 1 protocol done directly with POT (no merging of duplicate samples)."""
    pixels = image.reshape(-1, 3).double()
    idx = torch.randint(0, pixels.shape[0], (samples,), generator=torch.Generator().manual_seed(seed))
    x = pixels[idx].numpy()
    w = np.full(len(colors), 1 / len(colors)) if weights is None else weights.double().numpy() / float(weights.sum())
    return float(ot.emd2(np.full(samples, 1 / samples), w, ot.dist(x, colors.double().numpy(), metric="euclidean")))


@pytest.mark.parametrize("seed", range(6))
def test_palette_emd_equals_pot(seed):
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(1, 9, (1,), generator=g))
    image = torch.rand(40, 30, 3, generator=g)
    if seed % 2:  # flat-coloured image: many duplicate samples
        image = (image * 3).round() / 3
    colors = torch.rand(n, 3, generator=g)
    weights = None if seed % 3 == 0 else torch.rand(n, generator=g) + 0.05
    got = float(D.palette_emd(image, colors, weights, seed=seed))
    assert got == pytest.approx(pot_protocol(image, colors, weights, seed=seed), abs=1e-9)


def test_palette_emd_batches_repeatable_and_sensible():
    g = torch.Generator().manual_seed(11)
    palette = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.1, 0.8]])
    on_palette = palette[torch.randint(0, 2, (32, 32), generator=g)]
    noise = torch.rand(32, 32, 3, generator=g)
    scores = D.palette_emd(torch.stack([on_palette, noise]), palette)
    assert scores.shape == (2,)
    assert scores[0] < 0.05  # pixels drawn from the palette itself
    assert scores[1] > 0.25
    assert float(D.palette_emd(noise, palette)) == float(scores[1])  # independent of the batch position
    per_image = D.palette_emd(torch.stack([on_palette, noise]), torch.stack([palette, palette.flip(0)]))
    assert torch.allclose(per_image, scores)
    with pytest.raises(InputShapeError, match="palettes for"):
        D.palette_emd(torch.stack([noise] * 3), torch.rand(2, 4, 3))
