"""Sliced-Wasserstein palette guidance (the SW-Guidance comparator of Color Alignment in Diffusion; docs/design.md §9).

The colours of the decoded x̂0 are pulled toward the palette's colour distribution by gradient steps
on the latent that lower the sliced W1 distance: random 3-D rotations give orthonormal directions,
both distributions are projected on each, and the 1-D W1 is the mean gap between the sorted pixel
projections and the palette's quantile function at the same levels (the palette is a weighted discrete
distribution). The original method backpropagates through the UNet and the VAE (8 passes per step);
here the gradient goes through a decoder only: the model family's linear latent-to-RGB preview map
(``fast``, nearly free) or the VAE decoder (``exact``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import torch
from torch import Tensor

from .alignment import check_palette_weights
from .errors import InputShapeError
from .latent_family import SDXL, LatentFamily
from .latent_rgb import fast_decode
from .masks import fit_mask

Decoder = Callable[[Tensor], Tensor]
log = logging.getLogger(__name__)

DEFAULT_ROTATIONS = 16  # 48 directions
DEFAULT_STEP = 0.5  # fraction of the way to the transport target each colour moves per step at strength 1
DEFAULT_REPULSION_RADIUS = 0.2  # RGB distance within which a negative colour pushes pixels away (~ΔE 10-20)


def random_rotations(count: int, generator: torch.Generator | None = None, dtype=torch.float32) -> Tensor:
    """``count`` random 3-D rotations ``[count, 3, 3]``, Haar-distributed (QR of a Gaussian, sign-fixed)."""
    a = torch.randn(count, 3, 3, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    det = torch.linalg.det(q)
    q[:, :, 0] = q[:, :, 0] * det.sign().unsqueeze(-1)  # a proper rotation, det = +1
    return q.to(dtype)


def weighted_quantiles(values: Tensor, weights: Tensor, levels: Tensor) -> Tensor:
    """Quantile function of weighted samples: ``values [P, K]`` with ``weights [K]`` at ``levels [Q]`` -> ``[P, Q]``.

    For each row, the smallest value whose cumulative weight reaches the level (the generalised inverse
    of the weighted empirical CDF).
    """
    order = torch.argsort(values, dim=1)
    sorted_v = torch.gather(values, 1, order)
    cum = torch.cumsum(weights[order], dim=1)
    cum = cum / cum[:, -1:]
    idx = torch.searchsorted(cum.contiguous(), levels.expand(values.shape[0], -1).contiguous())
    return torch.gather(sorted_v, 1, idx.clamp_max(values.shape[1] - 1))


def sliced_wasserstein(
    pixels: Tensor,
    colors: Tensor,
    weights: Tensor | None,
    directions: Tensor,
    power: int = 1,
    pixel_weights: Tensor | None = None,
) -> Tensor:
    """Sliced W_p^p (p = 1 or 2) between pixel colours ``[B, N, 3]`` and a weighted palette -> ``[B]``.

    Differentiable in ``pixels``. Each direction compares the sorted pixel projections with the
    palette quantile function at the mid-point levels ``(i + 0.5) / N``. ``pixel_weights [B, N]``
    (a region mask, docs/regions.md) makes the pixels a weighted distribution: levels at the mid-points
    of their cumulative weights, gaps weighted; an item whose weights are all 0 costs 0.
    """
    if pixels.ndim != 3 or pixels.shape[-1] != 3:
        raise InputShapeError(f"pixels: shape {tuple(pixels.shape)}; expected [B, N, 3]")
    c, w = check_palette_weights(colors.detach(), weights)
    c, w = c.to(pixels.device, pixels.dtype), w.to(pixels.device, pixels.dtype)
    d = directions.to(pixels.device, pixels.dtype)
    if pixel_weights is not None:
        return _weighted_sliced(pixels, c, w, d, power, pixel_weights)
    n = pixels.shape[1]
    levels = (torch.arange(n, device=pixels.device, dtype=pixels.dtype) + 0.5) / n
    target = weighted_quantiles((c @ d.T).T.contiguous(), w, levels)  # [P, N]
    proj = torch.sort(pixels @ d.T, dim=1).values  # [B, N, P]
    gap = proj - target.T.unsqueeze(0)
    return gap.abs().mean(dim=(1, 2)) if power == 1 else gap.pow(2).mean(dim=(1, 2))


def _weighted_sliced(pixels: Tensor, c: Tensor, w: Tensor, d: Tensor, power: int, pixel_weights: Tensor) -> Tensor:
    """:func:`sliced_wasserstein` with weighted pixels (the generalised inverse CDF of both distributions)."""
    if pixel_weights.shape != pixels.shape[:2]:
        raise InputShapeError(f"pixel_weights: shape {tuple(pixel_weights.shape)}; expected {tuple(pixels.shape[:2])}")
    pw = pixel_weights.to(pixels.device, pixels.dtype).detach()
    total = pw.sum(1)  # [B]
    proj, order = torch.sort(pixels @ d.T, dim=1)  # [B, N, P]
    ws = torch.gather(pw.unsqueeze(-1).expand_as(proj), 1, order)
    levels = (torch.cumsum(ws, 1) - 0.5 * ws) / total.clamp_min(1e-12).view(-1, 1, 1)  # [B, N, P]
    values = (c @ d.T).T.contiguous()  # [P, K]
    k_order = torch.argsort(values, dim=1)
    sorted_v = torch.gather(values, 1, k_order)
    cum = torch.cumsum(w[k_order], dim=1)
    cum = (cum / cum[:, -1:]).unsqueeze(0).expand(proj.shape[0], -1, -1).contiguous()  # [B, P, K]
    idx = torch.searchsorted(cum, levels.transpose(1, 2).contiguous()).clamp_max(values.shape[1] - 1)  # [B, P, N]
    target = torch.gather(sorted_v.unsqueeze(0).expand(proj.shape[0], -1, -1), 2, idx).transpose(1, 2)
    gap = (proj - target).abs() if power == 1 else (proj - target).pow(2)
    return (gap * ws).sum(dim=(1, 2)) / (total.clamp_min(1e-12) * d.shape[0])


def sliced_w1(pixels: Tensor, colors: Tensor, weights: Tensor | None, directions: Tensor) -> Tensor:
    """Sliced W1 between pixel colours ``[B, N, 3]`` and a weighted palette over ``directions [P, 3]`` -> ``[B]``."""
    return sliced_wasserstein(pixels, colors, weights, directions, 1)


def repulsion(
    pixels: Tensor,
    negative: Tensor,
    negative_weights: Tensor | None,
    colors: Tensor,
    radius: float = DEFAULT_REPULSION_RADIUS,
    pixel_weights: Tensor | None = None,
) -> Tensor:
    """The negative palette's term ``[B]`` for pixels ``[B, N, 3]``: a push out and a pull to the palette.

    Per pixel ``p`` and negative colour ``m_k`` (weights ``w_k`` scaled so the heaviest counts 1), in RGB:
    ``2/3 sum_k w_k relu(r - |p - m_k|)^2`` pushes a pixel within ``radius`` ``r`` of a negative colour straight
    out, at twice the rate the sliced-Wasserstein term moves pixels; ``g |p - c(p)|^2 / 3`` with the fixed gate
    ``g = max_k w_k relu(1.5 r - |p - m_k|) / (1.5 r)`` draws it toward its nearest palette colour ``c(p)``, so
    that pixels leaving a negative colour land on the palette rather than anywhere (the push alone raised the
    palette EMD by 16 % on photographs; docs/training-free.md). Zero far from every negative colour.
    ``pixel_weights [B, N]`` (a region) weighs the mean.
    """
    if pixels.ndim != 3 or pixels.shape[-1] != 3:
        raise InputShapeError(f"pixels: shape {tuple(pixels.shape)}; expected [B, N, 3]")
    m, w = check_palette_weights(negative.detach(), negative_weights)
    m, w = m.to(pixels.device, pixels.dtype), w.to(pixels.device, pixels.dtype)
    w = w / w.max()
    c = colors.detach().to(pixels.device, pixels.dtype)
    dist = torch.cdist(pixels, m.expand(pixels.shape[0], -1, -1))  # [B, N, K]
    push = (torch.relu(radius - dist).pow(2) * w).sum(-1) * (2.0 / 3.0)
    with torch.no_grad():
        gate = (torch.relu(1.5 * radius - dist) * w).amax(-1) / (1.5 * radius)  # [B, N]
        nearest = c[torch.cdist(pixels, c.expand(pixels.shape[0], -1, -1)).argmin(-1)]  # [B, N, 3]
    term = push + gate * (pixels - nearest).pow(2).sum(-1) / 3.0
    if pixel_weights is None:
        return term.mean(1)
    pw = pixel_weights.to(pixels.device, pixels.dtype).detach()
    return (term * pw).sum(1) / pw.sum(1).clamp_min(1e-12)


def _directions(rotations: int, generator: torch.Generator) -> Tensor:
    return random_rotations(rotations, generator).reshape(-1, 3)


def colour_jacobian(latent: Tensor, rgb: Tensor) -> Tensor:
    """Least-squares linear map ``[C, 3]`` from latent vectors to the mean decoded colour of their pixel blocks.

    For the fast decoder this is its own matrix; for a VAE decoder it is the local linear colour
    response (what ComfyUI's preview factors approximate) used to precondition the steps.
    """
    b, c, h, w = latent.shape
    blocks = torch.nn.functional.adaptive_avg_pool2d(rgb.movedim(-1, 1), (h, w))  # [B, 3, h, w]
    x = latent.detach().movedim(1, -1).reshape(-1, c)
    y = blocks.detach().movedim(1, -1).reshape(-1, 3)
    x1 = torch.cat([x, torch.ones_like(x[:, :1])], dim=1).double()
    # rcond: latents that span fewer than C dimensions must not produce huge coefficients along the rest. The
    # SVD-based driver that honours rcond exists on the CPU only (CUDA offers gels alone), and the system is small.
    sol = torch.linalg.lstsq(x1.cpu(), y.double().cpu(), rcond=1e-6, driver="gelsd").solution  # [C + 1, 3]
    return sol[:c].to(device=latent.device, dtype=latent.dtype)  # the last row is the bias


def _preconditioner(jac: Tensor) -> Tensor:
    """``M = J (J^T J)^-2 J^T`` ``[C, C]``: a latent step ``M J g`` moves colours by about ``g`` (Gauss-Newton)."""
    jtj = jac.double().T @ jac.double()
    inv = torch.linalg.pinv(jtj, hermitian=True, rtol=1e-3)
    return (jac.double() @ inv @ inv @ jac.double().T).to(jac.dtype)


def guide(
    latent: Tensor,
    colors: Tensor,
    weights: Tensor | None = None,
    *,
    steps: int = 4,
    strength: float = 1.0,
    decode: Decoder | None = None,
    rotations: int = DEFAULT_ROTATIONS,
    max_pixels: int | None = 65536,
    seed: int = 0,
    family: LatentFamily = SDXL,
    mask: Tensor | None = None,
    negative_colors: Tensor | None = None,
    negative_weights: Tensor | None = None,
    negative_strength: float = 1.0,
    negative_radius: float = DEFAULT_REPULSION_RADIUS,
) -> Tensor:
    """``steps`` gradient steps on ``latent [B, C, h, w]`` pulling its decoded colours toward the palette.

    The loss is the sliced Wasserstein cost between the decoded pixels and the palette, squared
    (SW2^2: its gradient is each pixel's 1-D transport displacement, so steps shrink as the colours
    arrive, where the W1 gradient's constant magnitude makes them oscillate); :func:`sliced_w1` is the
    reported distance. Steps are Gauss-Newton preconditioned with the decoder's linear colour response
    (:func:`colour_jacobian`, fitted on the first decode) and scaled so that ``strength`` 1 moves every
    colour about ``DEFAULT_STEP`` of the way to its transport target per step. ``decode(latent) ->
    image [B, H, W, 3]`` must be differentiable; ``None`` is ``family``'s fast preview map. At most
    ``max_pixels`` random pixels per image enter the loss. Autograd runs even under
    ``torch.inference_mode`` (ComfyUI samples in it); only the decoder is differentiated.

    ``mask`` (a MASK, docs/regions.md) restricts guidance to a region: the loss weighs each decoded pixel by
    the mask and latent vectors outside the mask's support never move.

    ``negative_colors [K, 3]`` (with weights) adds ``negative_strength`` x :func:`repulsion`: pixels within
    ``negative_radius`` of a negative colour are pushed out of its neighbourhood (the palette paper's
    future work, §5.1: a negative palette for the training-free path; docs/training-free.md).
    """
    if steps < 0:
        raise InputShapeError(f"steps: {steps} must be >= 0")
    if latent.ndim != 4:
        raise InputShapeError(f"latent: shape {tuple(latent.shape)}; expected [B, C, h, w]")
    if decode is None:
        decode = lambda z: fast_decode(z, family)  # noqa: E731
    support = None
    if mask is not None:
        support = (fit_mask(mask, latent.shape[2], latent.shape[3], latent.shape[0]) > 0).unsqueeze(1)
        support = support.to(device=latent.device)
    g = torch.Generator().manual_seed(seed)
    # SW2^2 = mean over pixels and directions; its pixel gradient is ~ 2/(3 N) of the displacement
    scale = strength * DEFAULT_STEP * 1.5 * latent.shape[2] * latent.shape[3]
    pick = None
    weights_px = None  # the mask at the decoded resolution, [B, N] (picked like the pixels)

    def pixels_of(rgb: Tensor) -> Tensor:
        nonlocal pick, weights_px
        pixels = rgb.reshape(rgb.shape[0], -1, 3)
        if mask is not None and weights_px is None:
            weights_px = fit_mask(mask, rgb.shape[1], rgb.shape[2], rgb.shape[0]).reshape(rgb.shape[0], -1)
            weights_px = weights_px.to(device=pixels.device, dtype=pixels.dtype)
        if max_pixels is not None and pixels.shape[1] > max_pixels:
            if pick is None:
                pick = torch.randperm(pixels.shape[1], generator=g)[:max_pixels].to(pixels.device)
                if weights_px is not None:
                    weights_px = weights_px[:, pick]
            pixels = pixels[:, pick]
        return pixels

    if negative_strength < 0 or not math.isfinite(negative_strength):
        raise InputShapeError(f"negative_strength: {negative_strength} must be a finite number >= 0")
    repel = negative_colors is not None and negative_strength > 0

    def cost(px: Tensor, directions: Tensor) -> Tensor:
        out = sliced_wasserstein(px, colors, weights, directions, power=2, pixel_weights=weights_px)
        if repel:
            push = repulsion(px, negative_colors, negative_weights, colors, negative_radius, pixel_weights=weights_px)
            out = out + negative_strength * push
        return out

    with torch.inference_mode(False), torch.enable_grad():
        z = latent.detach().clone()
        best = best_px = best_grad = None
        for _ in range(steps):
            directions = _directions(rotations, g)
            z.requires_grad_(True)
            rgb = decode(z)
            if not bool(torch.isfinite(rgb).all()):
                # a decoder can overflow (fp16 VAEs do): no step from here can be trusted, keep the last good point
                log.warning("palette guidance: the decoder returned NaN or infinite colours; the step is left unguided")
                z = best if best is not None else latent.detach().clone()
                best = None
                break
            precond = _preconditioner(colour_jacobian(z, rgb)).to(z.device)  # refitted: decoders are not linear
            px = pixels_of(rgb)
            loss = cost(px, directions)
            (grad,) = torch.autograd.grad(loss.sum(), z)
            px = px.detach()
            if best is None:
                scale = torch.full((z.shape[0], 1, 1, 1), scale, dtype=z.dtype, device=z.device)
                if weights_px is not None:  # the weighted loss averages over the region: same step per pixel
                    scale = scale * (weights_px.sum(1) / weights_px.shape[1]).view(-1, 1, 1, 1).to(z.dtype)
            else:
                # an item whose loss rose (same directions for both points) overshot where the decoder
                # is not linear: step again from its previous point with half the step size
                with torch.no_grad():
                    worse = loss.detach() > cost(best_px, directions)
                w4 = worse.view(-1, 1, 1, 1)
                scale = torch.where(w4, scale * 0.5, scale)
                z = torch.where(w4, best, z.detach())
                grad = torch.where(w4, best_grad, grad)
                px = torch.where(worse.view(-1, 1, 1), best_px, px)
            best, best_px, best_grad = z.detach(), px, grad
            step = scale * torch.einsum("dc,bchw->bdhw", precond, grad)
            z = (best - (step if support is None else torch.where(support, step, 0.0))).detach()
        if best is not None:
            with torch.no_grad():
                directions = _directions(rotations, g)
                worse = cost(pixels_of(decode(z)), directions) > cost(best_px, directions)
            z = torch.where(worse.view(-1, 1, 1, 1), best, z)
    return z


def palette_distance(
    latent: Tensor, colors: Tensor, weights: Tensor | None = None, seed: int = 0, family: LatentFamily = SDXL
) -> Tensor:
    """Sliced W1 ``[B]`` between the fast-decoded latent (clamped to [0, 1]) and the palette (docs/design.md §9)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        rgb = fast_decode(latent, family).clamp(0, 1)
        return sliced_w1(rgb.reshape(rgb.shape[0], -1, 3), colors, weights, _directions(DEFAULT_ROTATIONS, g))
