"""sRGB gamut fitting that keeps L*: out-of-gamut colours lose chroma along their a*b* ray (docs/design.md §10).

Colours here are channel planes ``[3, M]`` of ``f = (f(X/Xn), f(Y/Yn), f(Z/Zn))`` (the CIELAB cube-root
function of CIE 15), where ``L* = 116 fy - 16``, ``a* = 500 (fx - fy)``, ``b* = 200 (fy - fz)``: changing
a*b* with L* kept is changing ``fx`` and ``fz`` with ``fy`` (and so Y) fixed, and scaling a*b* by ``t``
is scaling ``fx - fy`` and ``fz - fy``. ``t = 0`` is the grey of the same Y, always in gamut.

The largest in-gamut ``t`` is read from a cached table of the chroma limit per (L*, hue) and made exact
per pixel, where the interpolated limit is still outside, by the Illinois variant of regula falsi.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .color import D65_XYZ, LAB_EPSILON, LAB_KAPPA, M_RGB_TO_XYZ, M_XYZ_TO_RGB, linear_to_srgb, srgb_to_linear
from .errors import InputShapeError

# Gamut limit table: C*ab limit per (L*, hue) in 1 L* x 2 degree cells, scanned at 61 chromas (about
# 0.3 s once per process).
LIMIT_L, LIMIT_H, LIMIT_CHROMA, LIMIT_SCAN = 101, 180, 200.0, 61
LIMIT_MARGIN = 0.002  # the table's limit is shrunk by this fraction so that interpolation rarely overshoots
FALLBACK_STEP = 0.05  # pixels the table leaves outside: bracket from 5 % below its limit when in gamut
GAMUT_STEPS = 8  # Illinois steps on the chroma scale: mean shortfall ~1e-3 C*, 99.9th percentile < 0.2
# The published sRGB matrix pair round-trips to ~2e-4, so grey and white land a hair outside [0, 1].
GAMUT_TOLERANCE = 2e-6

_WHITE = tuple(float(v) for v in D65_XYZ)


@functools.lru_cache(maxsize=16)
def _matrices(dtype: torch.dtype, device: str) -> tuple[Tensor, Tensor]:
    """``(sRGB linear -> XYZ / white, XYZ * white -> sRGB linear)``: white-point scaling folded into the rows."""
    white = torch.tensor(_WHITE, dtype=torch.float64)
    to_xyz = torch.tensor(M_RGB_TO_XYZ, dtype=torch.float64) / white[:, None]
    to_rgb = torch.tensor(M_XYZ_TO_RGB, dtype=torch.float64) * white[None, :]
    return to_xyz.to(dtype=dtype, device=device), to_rgb.to(dtype=dtype, device=device)


# The CIELAB function and its inverse run on every step of the gamut search, so they are evaluated without
# torch.where (slower than arithmetic on the CPU): each branch is fed its side of the junction by a clamp,
# and the two clamped halves are combined.
_F_KNEE = 6.0 / 29.0  # f(LAB_EPSILON): where the CIELAB cube root meets its linear segment


def _f(t: Tensor) -> Tensor:
    """CIELAB companding f(t) (CIE 15, Lab definition), elementwise.

    The linear segment is the cube root's tangent at the knee (value 6/29, slope 841/108 both ways), so
    it lies above the concave cube root everywhere: ``min(cbrt(max(t, eps)), linear(t))`` is exactly f.
    """
    lin = t * (LAB_KAPPA / 116.0)
    lin.add_(16.0 / 116.0)
    return torch.minimum(t.clamp_min(LAB_EPSILON).pow_(1.0 / 3.0), lin, out=lin)


def f_inv(f: Tensor) -> Tensor:
    """Inverse of the CIELAB function f (CIE 15), elementwise: ``f^3`` above the knee, linear below."""
    linear = f.clamp_max(_F_KNEE).mul_(116.0 / LAB_KAPPA).sub_(16.0 / LAB_KAPPA + LAB_EPSILON)
    high = f.clamp_min(_F_KNEE)
    return high.square().mul_(high).add_(linear)


def srgb_planes_to_f(rgb: Tensor) -> tuple[Tensor, Tensor]:
    """sRGB planes ``[3, M]`` to ``(f planes [3, M], Y [M])``: docs/design.md §3 Lab, planar (``L* = 116 fy - 16``)."""
    xyz = torch.mm(_matrices(rgb.dtype, str(rgb.device))[0], srgb_to_linear(rgb))  # Yn = 1: row 1 is Y itself
    return _f(xyz), xyz[1]


def f_to_linear(fx: Tensor, y: Tensor, fz: Tensor) -> Tensor:
    """Linear sRGB planes ``[3, M]`` from ``fx``, the kept ``Y`` and ``fz`` (docs/design.md §3; the inverse)."""
    xyz = torch.stack((f_inv(fx), y, f_inv(fz)))
    return torch.mm(_matrices(fx.dtype, str(fx.device))[1], xyz)


def _excess(lin: Tensor) -> Tensor:
    """How far each pixel is outside the sRGB cube (beyond the tolerance); <= 0 inside."""
    r, g, b = lin.unbind(0)
    hi = torch.maximum(torch.maximum(r, g), b).sub_(1.0)
    lo = torch.minimum(torch.minimum(r, g), b).neg_()
    return torch.maximum(hi, lo, out=hi).sub_(GAMUT_TOLERANCE)


def _ray_excess(fy: Tensor, y: Tensor, ex: Tensor, ez: Tensor, t: Tensor) -> Tensor:
    return _excess(f_to_linear(torch.addcmul(fy, t, ex), y, torch.addcmul(fy, t, ez)))


def _ray_fit(
    fy: Tensor, y: Tensor, ex: Tensor, ez: Tensor, t_in: Tensor, t_out: Tensor, v_out: Tensor, steps: int
) -> Tensor:
    """An in-gamut ``t`` in ``[t_in, t_out]`` next to the boundary on the rays ``f = fy + t (ex, 0, ez)``.

    ``t_in`` must be in gamut and ``t_out`` outside (excess ``v_out > 0``). Illinois variant of regula
    falsi (superlinear); the bracket's inner end, always in gamut, is returned.
    """
    lo, hi = t_in, t_out
    v_lo, v_hi = _ray_excess(fy, y, ex, ez, lo).clamp_max_(0.0), v_out
    last = torch.zeros_like(fy, dtype=torch.int8)  # end replaced by the previous step: 1 inner, 2 outer
    for _ in range(steps):
        t = (lo * v_hi - hi * v_lo) / (v_hi - v_lo)
        v = _ray_excess(fy, y, ex, ez, t)
        inside = v <= 0
        # Illinois: when the same end is replaced twice running, halve the other end's value.
        v_hi = torch.where(inside & (last == 1), 0.5 * v_hi, v_hi)
        v_lo = torch.where(~inside & (last == 2), 0.5 * v_lo, v_lo)
        lo, v_lo = torch.where(inside, t, lo), torch.where(inside, v, v_lo)
        hi, v_hi = torch.where(inside, hi, t), torch.where(inside, v_hi, v)
        last = torch.where(inside, 1, 2).to(torch.int8)
    return lo


@functools.cache
def _chroma_limit_table_f64() -> Tensor:
    """Largest in-gamut C*ab per (L*, hue) on a ``LIMIT_L x (LIMIT_H + 1)`` grid (hue wraps around).

    The sRGB gamut seen along a constant-hue ray of CIELAB is not always one interval (near the yellow
    cusp a ray leaves and re-enters it), so the rays are scanned outward at ``LIMIT_SCAN`` chromas and
    the last in-gamut sample is refined against the next one.
    """
    lightness = torch.linspace(0.0, 100.0, LIMIT_L, dtype=torch.float64)
    hue = torch.arange(LIMIT_H, dtype=torch.float64) * (2 * math.pi / LIMIT_H)
    grid_l, grid_h = torch.meshgrid(lightness, hue, indexing="ij")
    fy = ((grid_l + 16.0) / 116.0).reshape(-1)
    ex = (LIMIT_CHROMA / 500.0) * torch.cos(grid_h).reshape(-1)
    ez = -(LIMIT_CHROMA / 200.0) * torch.sin(grid_h).reshape(-1)
    y = f_inv(fy)
    last_in = torch.zeros_like(fy)
    for t in torch.linspace(0.0, 1.0, LIMIT_SCAN, dtype=torch.float64)[1:]:
        last_in = torch.where(_ray_excess(fy, y, ex, ez, t.expand_as(fy)) <= 0, t, last_in)
    t_out = (last_in + 1.0 / (LIMIT_SCAN - 1)).clamp_max_(1.0)
    v_out = _ray_excess(fy, y, ex, ez, t_out)
    t = torch.where(v_out > 0, _ray_fit(fy, y, ex, ez, last_in, t_out, v_out.clamp_min(1e-12), 30), t_out)
    table = (t * LIMIT_CHROMA).reshape(LIMIT_L, LIMIT_H)
    return torch.cat((table, table[:, :1]), dim=1)[None, None]


@functools.lru_cache(maxsize=8)
def _chroma_limit_table(dtype: torch.dtype, device: str) -> Tensor:
    return _chroma_limit_table_f64().to(dtype=dtype, device=device)


def _chroma_limit(lightness: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Interpolated gamut limit on C*ab at each pixel's L* and hue (bilinear in the cached table)."""
    table = _chroma_limit_table(lightness.dtype, str(lightness.device))
    hue = torch.atan2(b, a).remainder_(2 * math.pi)
    gx = hue * (2.0 / (2 * math.pi)) - 1.0
    gy = lightness * (2.0 / 100.0) - 1.0
    grid = torch.stack((gx, gy), dim=-1)[None, :, None]
    return F.grid_sample(table, grid, mode="bilinear", padding_mode="border", align_corners=True)[0, 0, :, 0]


def fit_chroma(fx: Tensor, fy: Tensor, y: Tensor, fz: Tensor) -> Tensor:
    """Linear sRGB planes of ``(fx, fy, fz)``; out-of-gamut pixels lose chroma at fixed L* (docs/design.md §10).

    Scaling a*b* by ``t`` is scaling ``fx - fy`` and ``fz - fy``. Out-of-gamut pixels first take the
    chroma limit of a cached (L*, hue) table (shrunk by ``LIMIT_MARGIN``); the few the interpolated limit
    still leaves outside are solved on their own ray (:func:`_ray_fit`).
    """
    lin = f_to_linear(fx, y, fz)
    v = _excess(lin)
    idx = torch.nonzero(v > 0, as_tuple=True)[0]
    if idx.numel() == 0:
        return lin.clamp_(0.0, 1.0)
    sy, sY = fy[idx], y[idx]
    ex, ez = fx[idx] - sy, fz[idx] - sy
    chroma = torch.hypot(500.0 * ex, 200.0 * ez)
    limit = _chroma_limit(116.0 * sy - 16.0, 500.0 * ex, -200.0 * ez)
    t = (limit * (1.0 - LIMIT_MARGIN) / chroma.clamp_min(1e-12)).clamp_(0.0, 1.0)
    sub = f_to_linear(torch.addcmul(sy, t, ex), sY, torch.addcmul(sy, t, ez))
    v_t = _excess(sub)
    still = torch.nonzero(v_t > 0, as_tuple=True)[0]
    if still.numel():
        fy_s, y_s, ex_s, ez_s, t_s = sy[still], sY[still], ex[still], ez[still], t[still]
        # Bracket from just below the table's limit when that is in gamut, else from the grey.
        near = t_s * (1.0 - FALLBACK_STEP)
        t_in = torch.where(_ray_excess(fy_s, y_s, ex_s, ez_s, near) <= 0, near, torch.zeros_like(near))
        t_fix = _ray_fit(fy_s, y_s, ex_s, ez_s, t_in, t_s, v_t[still], GAMUT_STEPS)
        t[still] = t_fix
        sub[:, still] = f_to_linear(torch.addcmul(fy_s, t_fix, ex_s), y_s, torch.addcmul(fy_s, t_fix, ez_s))
    lin[:, idx] = sub
    return lin.clamp_(0.0, 1.0)


def lab_to_srgb_keep_lightness(lab: Tensor) -> Tensor:
    """Lab ``[..., 3]`` to sRGB in [0, 1], out-of-gamut colours losing chroma, not L* (docs/design.md §10)."""
    if lab.ndim == 0 or lab.shape[-1] != 3:
        raise InputShapeError(f"lab: shape {tuple(lab.shape)}; expected [..., 3] CIE L*a*b* colours")
    if not lab.is_floating_point():
        lab = lab.double()
    p = lab.reshape(-1, 3).T
    fy = (p[0].clamp(0.0, 100.0) + 16.0) / 116.0
    fx, fz = fy + p[1] / 500.0, fy - p[2] / 200.0
    y = f_inv(fy)
    return linear_to_srgb(fit_chroma(fx, fy, y, fz)).T.reshape(lab.shape)
