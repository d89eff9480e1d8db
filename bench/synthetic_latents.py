"""Realistic synthetic latents for the matching tests and benchmarks (no VAE weights needed).

* ``patch_vae``: a fixed random linear "VAE" on 8x8 RGB patches. A flat-colour patch encodes to the
  least-squares inverse of SDXL's latent-RGB preview factors (so the fast decoder reads the colour
  back), while patches with edges leave that 3-D subspace through a zero-mean per-pixel random part,
  as a real VAE's latents of colour boundaries do.
* ``x0_like``: what x̂0 looks like mid-sampling: a smooth random image encoded, plus latent noise.
* ``condition_like``: the condition latents of a random palette through ``patch_vae``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from palette_core.alignment import condition_latents
from palette_core.latent_rgb import SDXL_LATENT_RGB_BIAS, SDXL_LATENT_RGB_FACTORS

PATCH = 8


def patch_vae(seed: int = 0, edge_gain: float = 0.5):
    """A linear patch encoder ``image [B, H, W, 3] -> latent [B, 4, H/8, W/8]`` (sampler space)."""
    g = torch.Generator().manual_seed(seed)
    pinv = torch.linalg.pinv(torch.tensor(SDXL_LATENT_RGB_FACTORS, dtype=torch.float64))  # [3, 4]
    r = torch.randn(4, PATCH * PATCH, 3, generator=g, dtype=torch.float64)
    r = (r - r.mean(1, keepdim=True)) * edge_gain  # zero mean over the patch: flat patches never see it
    w = pinv.T[:, None, :] / (PATCH * PATCH) + r / PATCH  # [4, 64, 3]
    bias = torch.tensor(SDXL_LATENT_RGB_BIAS, dtype=torch.float64)

    def encode(image: torch.Tensor) -> torch.Tensor:
        b, h, wd, _ = image.shape
        x = image.double() * 2 - 1 - bias
        patches = x.reshape(b, h // PATCH, PATCH, wd // PATCH, PATCH, 3).permute(0, 1, 3, 2, 4, 5)
        patches = patches.reshape(b, h // PATCH, wd // PATCH, PATCH * PATCH, 3)
        return torch.einsum("bijpc,kpc->bkij", patches, w).float()

    return encode


def smooth_image(batch: int, height: int, width: int, seed: int = 0, cells: int = 6) -> torch.Tensor:
    """Random smooth colour fields ``[B, H, W, 3]`` (a coarse random grid, bicubic-upsampled, plus detail)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, cells, cells, generator=g)
    fine = torch.rand(batch, 3, cells * 4, cells * 4, generator=g) - 0.5
    img = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    img = img + 0.15 * F.interpolate(fine, size=(height, width), mode="bilinear", align_corners=False)
    return img.clamp(0, 1).permute(0, 2, 3, 1).contiguous()


def x0_like(encode, batch: int, h: int, w: int, seed: int = 0, noise: float = 0.15) -> torch.Tensor:
    """x̂0-like latents ``[B, 4, h, w]``: an encoded smooth image plus Gaussian latent noise."""
    g = torch.Generator().manual_seed(seed + 1)
    z = encode(smooth_image(batch, h * PATCH, w * PATCH, seed))
    return z + noise * torch.randn(z.shape, generator=g)


def random_palette(k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``k`` random colours and random relative weights (uneven, as users give them)."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(k, 3, generator=g), torch.rand(k, generator=g) * 3 + 0.5


def condition_like(encode, h: int, w: int, k: int = 5, seed: int = 0) -> torch.Tensor:
    """Condition latent vectors ``[h * w, 4]`` of a random ``k``-colour palette."""
    colors, weights = random_palette(k, seed)
    return condition_latents(encode, colors, weights, h, w, seed=seed)


def matching_problem(n_side: int, k: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(source, target)``, both ``[n_side**2, 4]``: x̂0-like vectors and a palette's condition vectors."""
    enc = patch_vae(seed)
    src = x0_like(enc, 1, n_side, n_side, seed=seed)[0].flatten(1).T.contiguous()
    tgt = condition_like(enc, n_side, n_side, k=k, seed=seed)
    return src, tgt


# ---------------------------------------------------------------------------------------------- harder problems
#
# Clustered targets against unstructured sources: x̂0 early in sampling, or a prompt far from the palette,
# carries no trace of the condition's clusters. The sources are a Gaussian with the targets' own mean and
# covariance (the same overall spread, no clusters); the targets are condition latents or synthetic
# clusters of other shapes (uneven sizes, as palette weights make them).

HARD_KINDS = ("condition", "clustered", "heavy-tailed", "anisotropic")


def latent_shape(n: int) -> tuple[int, int]:
    """``(h, w)`` with ``h * w = n``, ``h`` the largest power of two with ``h * h <= n`` (n = 1024 -> 32 x 32)."""
    h = 1 << ((n.bit_length() - 1) // 2)
    if n % h:
        raise ValueError(f"n = {n} is not h * w with h a power of two")
    return h, n // h


def unstructured_like(target: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Gaussian vectors ``[n, d]`` with the mean and covariance of ``target`` and none of its clusters."""
    g = torch.Generator().manual_seed(seed + 7)
    x = target.double()
    cov = torch.cov(x.T) + 1e-9 * torch.eye(x.shape[1], dtype=torch.float64)
    z = torch.randn(x.shape, generator=g, dtype=torch.float64)
    return (x.mean(0) + z @ torch.linalg.cholesky(cov).T).float()


def synthetic_clusters(n: int, kind: str, d: int = 4, k: int = 6, seed: int = 0) -> torch.Tensor:
    """``[n, d]`` targets in ``k`` clusters of uneven sizes around centres ~ N(0, 4 I).

    ``clustered``: isotropic Gaussian spread 0.3; ``heavy-tailed``: Student-t with 3 degrees of freedom,
    scale 0.15 (tight cores, far outliers); ``anisotropic``: spread 0.8 along one random direction per
    cluster and 0.08 across it.
    """
    g = torch.Generator().manual_seed(seed + 11)
    centres = torch.randn(k, d, generator=g) * 2.0
    weights = torch.rand(k, generator=g) * 3 + 0.5
    labels = torch.multinomial(weights, n, replacement=True, generator=g)
    z = torch.randn(n, d, generator=g)
    if kind == "clustered":
        spread = 0.3 * z
    elif kind == "heavy-tailed":
        chi2 = (torch.randn(n, 3, generator=g) ** 2).sum(1, keepdim=True)
        spread = 0.15 * z / torch.sqrt(chi2 / 3)
    elif kind == "anisotropic":
        rot = torch.linalg.qr(torch.randn(k, d, d, generator=g))[0]
        scale = torch.full((d,), 0.08)
        scale[0] = 0.8
        spread = torch.einsum("nij,nj->ni", rot[labels], z * scale)
    else:
        raise ValueError(f"unknown cluster kind {kind!r}; expected one of {HARD_KINDS[1:]}")
    return (centres[labels] + spread).contiguous()


def hard_problem(kind: str, n: int, seed: int = 0, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """``(source, target)``, both ``[n, 4]``: unstructured sources against clustered targets of ``kind``.

    ``condition``: a random ``k``-colour palette's condition latents (``n = h * w``, see :func:`latent_shape`).
    """
    if kind == "condition":
        h, w = latent_shape(n)
        target = condition_like(patch_vae(seed), h, w, k=k, seed=seed)
    else:
        target = synthetic_clusters(n, kind, k=k + 1, seed=seed)
    return unstructured_like(target, seed), target


def project_problem(n: int, seed: int = 0, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """``(source, target)``, both ``[n, 4]``: x̂0-like vectors and a palette's condition latents, ``n = h * w``."""
    h, w = latent_shape(n)
    enc = patch_vae(seed)
    return x0_like(enc, 1, h, w, seed=seed)[0].flatten(1).T.contiguous(), condition_like(enc, h, w, k=k, seed=seed)
