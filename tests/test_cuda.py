"""The maths on a CUDA device gives what it gives on the CPU (skipped without a GPU; docs/performance.md).

ComfyUI samples on the GPU, so every path a node takes there must run on CUDA tensors: some torch
operations exist on the CPU only (``torch.linalg.lstsq`` with an rcond-honouring driver, for one). Each
test runs a palette_core entry point on the same inputs on both devices and compares the results.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.synthetic_latents import patch_vae, x0_like
from palette_core import alignment as A
from palette_core import sw_guidance as S
from palette_core.adapter import (
    decoupled_attention,
    init_adapter,
    palette_condition,
)
from palette_core.histogram import bin_index, image_histogram
from palette_core.latent_rgb import fast_decode
from palette_core.recolor import lightness_lock, recolor

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

PALETTE = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.2, 0.8], [0.95, 0.9, 0.2]])
WEIGHTS = torch.tensor([2.0, 1.0, 1.0])
CUDA = torch.device("cuda")


def smooth_latent(seed: int, shape=(2, 4, 16, 16)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.avg_pool2d(torch.randn(shape, generator=g), 3, 1, 1) * 2.0


def test_colour_jacobian_on_cuda():
    z = smooth_latent(0)
    rgb = fast_decode(z)
    cpu = S.colour_jacobian(z, rgb)
    gpu = S.colour_jacobian(z.to(CUDA), rgb.to(CUDA))
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-5, rtol=1e-4)


def test_guidance_with_the_fast_decoder_on_cuda():
    z = smooth_latent(1)
    cpu = S.guide(z, PALETTE, WEIGHTS, steps=4, seed=3)
    gpu = S.guide(z.to(CUDA), PALETTE.to(CUDA), WEIGHTS.to(CUDA), steps=4, seed=3)
    assert gpu.device.type == "cuda"
    assert not torch.equal(cpu, z)  # the steps moved the latent
    torch.testing.assert_close(gpu.cpu(), cpu, atol=2e-3, rtol=1e-3)


def test_guidance_with_a_region_mask_on_cuda():
    z = smooth_latent(2)
    mask = torch.zeros(2, 16, 16)
    mask[:, :, :8] = 1.0
    gpu = S.guide(z.to(CUDA), PALETTE.to(CUDA), WEIGHTS.to(CUDA), steps=3, mask=mask.to(CUDA)).cpu()
    assert torch.equal(gpu[..., 9:], z[..., 9:])  # outside the mask's support nothing moves
    assert not torch.equal(gpu[..., :8], z[..., :8])


def test_alignment_on_cuda():
    enc = patch_vae(seed=1)
    cond = A.condition_latents(enc, torch.rand(4, 3, generator=torch.Generator().manual_seed(0)), None, 10, 14)
    x0 = x0_like(enc, 2, 10, 14, seed=4)
    cpu = A.AlignmentCondition(cond).align(x0)
    gpu = A.AlignmentCondition(cond.to(CUDA)).align(x0.to(CUDA))
    assert gpu.device.type == "cuda"
    for b in range(2):  # each item is a permutation of the condition vectors, on either device
        rows = gpu[b].flatten(1).T.cpu()
        assert torch.allclose(rows.sort(0).values, cond.sort(0).values)
    cost = lambda out: float(((out.cpu() - x0) ** 2).sum())  # noqa: E731
    assert cost(gpu) <= cost(cpu) * 1.02  # as good a matching


def test_histogram_on_cuda():
    g = torch.Generator().manual_seed(5)
    image = torch.rand(2, 64, 48, 3, generator=g)
    assert torch.equal(bin_index(image.to(CUDA)).cpu(), bin_index(image))  # every pixel in the same bin
    # CUDA divides by a scalar through its reciprocal: the normalised counts may differ in the last bit
    torch.testing.assert_close(image_histogram(image.to(CUDA)).cpu(), image_histogram(image), atol=0, rtol=2e-7)


@pytest.mark.parametrize("match", ["order", "ot"])
def test_recolour_and_lightness_lock_on_cuda(match):
    if match == "ot":
        pytest.importorskip("ot")  # a GPU machine may lack POT; the plan is computed on the CPU either way
    g = torch.Generator().manual_seed(6)
    image = torch.nn.functional.avg_pool2d(torch.rand(1, 3, 64, 64, generator=g), 5, 1, 2).movedim(1, -1)
    cpu = recolor(image, PALETTE, WEIGHTS, match=match)
    gpu = recolor(image.to(CUDA), PALETTE.to(CUDA), WEIGHTS.to(CUDA), match=match)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=2e-3, rtol=0)
    locked = lightness_lock(gpu, image.to(CUDA))
    torch.testing.assert_close(locked.cpu(), lightness_lock(cpu, image), atol=2e-3, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@torch.no_grad()
def test_adapter_attention_on_cuda(dtype):
    adapter = init_adapter({"layer": 640}, seed=1)
    cond = palette_condition(PALETTE, WEIGHTS)
    tokens = adapter.tokens(cond)
    w_k, w_v = adapter.kv_weights("layer")
    q = torch.randn(2, 256, 640, generator=torch.Generator().manual_seed(7))
    cpu = decoupled_attention(q, tokens, w_k, w_v, heads=10)
    ad = adapter.to(CUDA)
    gpu = decoupled_attention(q.to(CUDA, dtype), ad.tokens(cond.to(CUDA)), *ad.kv_weights("layer"), heads=10)
    assert gpu.dtype == dtype
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    np.testing.assert_allclose(gpu.float().cpu().numpy(), cpu.numpy(), atol=tol, rtol=tol)
