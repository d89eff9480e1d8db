"""Recolouring to a palette with L* kept, the lightness lock, and their metrics (docs/design.md §10).

PaletteNet (*PaletteNet: Image Recolorization with Given Color Palette*, §3) recolours an image to a
target palette while keeping its luminance; its predecessor (Chang et al. 2015, palette-based photo
recolouring) moves colours by an RBF blend of the palette edits. :func:`recolor` is that training-free transfer:

1. extract a source palette (k-means, docs/design.md §4) from the image;
2. match source to target colours by optimal transport in Lab with the palettes' weights (or by order);
3. give every source colour the a*b* offset to its matched target (barycentre of its transport plan row);
4. move each pixel's a*b* by a Gaussian-RBF-weighted blend of those offsets (weights normalised to sum 1,
   distance in Lab to the source colours), times ``strength``; L* is never touched;
5. colours that leave the sRGB gamut lose chroma along their a*b* ray (never lightness).

The offset field depends only on a pixel's Lab colour, so it is tabulated once per image on a coarse Lab
grid and read back with trilinear interpolation (a 3-D table packed into a 2-D texture so that the fast
2-D ``grid_sample`` kernel does the work); L* itself comes from each pixel's own Y, exactly.

:func:`lightness_lock` is the training-free form of the piggybacked colouriser's lightness-aware decoder
(*Piggybacked colorization*, §3.3): the source's L* with the colour image's a*b*.

Both take an optional region ``mask`` (docs/regions.md): each pixel's a*b* moves ``mask`` of the way (L*
kept), so pixels where the mask is 0 are returned bit for bit, and :func:`recolor` extracts its source
palette from the region's pixels only, weighted by the mask.

Pixels are handled as channel planes of the CIELAB ``f`` values (see :mod:`.gamut`): L* is never
recomputed from a*b*, each pixel keeps its own Y.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import check_colors, check_image, check_weights
from .color import linear_to_srgb, srgb_to_lab
from .distance import sampled_emd
from .errors import InputShapeError, PaletteError
from .gamut import fit_chroma, srgb_planes_to_f
from .masks import fit_mask
from .render import palette_stripes

log = logging.getLogger(__name__)

MATCH_MODES = ("ot", "order")
# Chroma (C*ab) scale of the neutral protection: a pixel keeps exp(-(C/c)^2) of its own a*b*.
NEUTRAL_CHROMA = 10.0
# Source colours extracted per image when not given: enough clusters that the transport plan rarely
# splits one source colour between targets (a split sends it to the mean of its targets).
MIN_SOURCE_COLORS, MAX_SOURCE_COLORS = 12, 24
# Kernel width sigma = max(SIGMA_SCALE x the mean distance from each source colour to its nearest other
# one, SIGMA_MIN). With normalised Gaussian weights two centres d apart hand over within 4.4 sigma^2 / d
# (10-90 % of the weight), so at d / 3 a pixel follows its own cluster's offset and changes hands in the
# middle half-distance. The floor is the offset table's cell (5 Lab units): a narrower field could not be
# tabulated, and on photos (15 source colours about 12 units apart) the floor is what usually applies.
# Wider kernels blend the offsets of clusters sent to different targets: on the benchmark photos
# sigma = 8 raised the chroma EMD to the palette by 11 % and sigma = 10 by 17 %.
SIGMA_SCALE = 1.0 / 3.0
SIGMA_MIN = 5.0
# Lightness counts this much in the matching cost: light source colours go to light targets, so the
# moved a*b* tends to stay inside the gamut at the pixel's own L*.
LIGHTNESS_WEIGHT = 1.0
# Offset table: L* in [0, 100] and a*, b* in [-AB_RANGE, AB_RANGE] (the sRGB gamut spans about
# a* -86..98, b* -108..95). 5-unit cells: the field varies over sigma (>= several units).
LUT_L, LUT_AB, AB_RANGE = 21, 53, 130.0
# Extraction runs on every n-th pixel of each n-th row, n chosen so that the longer side has at most this
# many: the palette of a photo does not need every pixel, and k-means cost grows with the pixel count.
EXTRACT_SIDE = 64
# Pixels per slice: the ~20 temporaries of a slice stay in cache (about 1.5x faster on 1024^2 than whole).
_PIXEL_CHUNK = 1 << 18
# A region whose strided sample keeps fewer pixels than this (a thin stroke the stride steps over) is
# sampled whole instead.
MIN_REGION_SAMPLES = 64


def _planes(x: Tensor) -> Tensor:
    """``[B, H, W, 3]`` to contiguous channel planes ``[3, B*H*W]`` (elementwise kernels run on dense rows)."""
    return x.reshape(-1, 3).T.contiguous()


def _unplanes(p: Tensor, shape: torch.Size) -> Tensor:
    return p.T.reshape(shape)


def _lab(rgb: Tensor) -> Tensor:
    return srgb_to_lab(rgb.double())


def match_palettes(
    source_lab: Tensor,
    source_weights: Tensor,
    target_lab: Tensor,
    target_weights: Tensor,
    match: str = "ot",
    lightness_weight: float | None = None,
) -> Tensor:
    """Transport plan ``[K, N]`` from source to target colours (exact OT in Lab, squared cost; docs/design.md §10).

    ``match="ot"``: the earth mover's plan between the weighted palettes with cost
    ``(w_L dL*)^2 + da*^2 + db*^2``; ``match="order"``: source ``i`` goes to target ``i`` (K <= N; the
    targets past K are unused). Rows sum to the source weights; for ``"ot"`` columns to the target weights.
    """
    if match not in MATCH_MODES:
        raise PaletteError(f"match: {match!r} is not one of {MATCH_MODES}")
    k, n = source_lab.shape[0], target_lab.shape[0]
    a = source_weights.double().cpu()
    a = a / a.sum()
    if match == "order":
        if k > n:
            raise PaletteError(
                f"match='order' pairs source colour i with target colour i, but there are {k} source and {n} "
                "target colours; give at most as many source colours as target colours, or use match='ot'"
            )
        # An image with fewer distinct colours than the palette uses the palette's first k colours.
        return torch.cat((torch.diag(a), torch.zeros(k, n - k, dtype=a.dtype)), dim=1)
    import ot  # POT: a runtime requirement (requirements.txt)

    b = target_weights.double().cpu()
    b = b / b.sum()
    w_l = LIGHTNESS_WEIGHT if lightness_weight is None else float(lightness_weight)
    scale = torch.tensor([w_l, 1.0, 1.0], dtype=torch.float64)
    cost = torch.cdist(source_lab.double().cpu() * scale, target_lab.double().cpu() * scale) ** 2
    plan = ot.emd(a.numpy(), b.numpy(), cost.numpy(), numItermax=1_000_000)
    return torch.from_numpy(np.asarray(plan))


def matched_offsets(source_lab: Tensor, target_lab: Tensor, plan: Tensor) -> Tensor:
    """a*b* offset ``[K, 2]`` of each source colour: the barycentre of its plan row's targets (docs/design.md §10)."""
    rows = plan.to(target_lab.dtype).to(target_lab.device)
    mass = rows.sum(1, keepdim=True)
    goal = (rows @ target_lab[:, 1:]) / torch.where(mass > 0, mass, torch.ones_like(mass))
    # A source colour with no mass (weight 0) keeps its own colour.
    goal = torch.where(mass > 0, goal, source_lab[:, 1:])
    return goal - source_lab[:, 1:]


def kernel_width(source_lab: Tensor, scale: float | None = None) -> Tensor:
    """RBF width: ``scale`` x mean Lab distance of source colours to their nearest neighbour, >= SIGMA_MIN (§10)."""
    if source_lab.shape[0] < 2:  # one centre: every weight is 1 whatever the width
        return torch.tensor(SIGMA_MIN, dtype=source_lab.dtype, device=source_lab.device)
    d = torch.cdist(source_lab, source_lab)
    d.fill_diagonal_(float("inf"))
    return ((SIGMA_SCALE if scale is None else scale) * d.min(1).values.mean()).clamp_min(SIGMA_MIN)


def rbf_offsets(lab: Tensor, source_lab: Tensor, offsets: Tensor, sigma: float | Tensor) -> Tensor:
    """Offset field at Lab points ``[..., 3]``: normalised Gaussian-RBF blend of source offsets (docs/design.md §10)."""
    # [K, P] layout: the reductions over the K source colours then run along dense rows of P points.
    d2 = torch.cdist(source_lab.to(lab.dtype), lab.reshape(-1, 3)).square_()
    logits = d2.mul_(-0.5 / float(sigma) ** 2)
    # Floored at -80 so that far points do not produce float32 denormals (slow to exponentiate).
    w = logits.sub_(logits.amax(0)).clamp_min_(-80.0).exp_()
    w = w.div_(w.sum(0))
    return (offsets.to(lab.dtype).T @ w).T.reshape(*lab.shape[:-1], 2)


def _lut_nodes(dtype: torch.dtype, device: torch.device) -> Tensor:
    lightness = torch.linspace(0.0, 100.0, LUT_L, dtype=dtype, device=device)
    ab = torch.linspace(-AB_RANGE, AB_RANGE, LUT_AB, dtype=dtype, device=device)
    return torch.stack(torch.meshgrid(lightness, ab, ab, indexing="ij"), dim=-1)  # [L, a, b, 3]


def offset_texture(
    source_lab: Tensor, offsets: Tensor, sigma: float | Tensor, dtype: torch.dtype = torch.float32
) -> Tensor:
    """The offset field tabulated on the Lab grid, packed as a 2-D texture ``[4, LUT_AB, (LUT_L-1) * LUT_AB]``.

    Tile ``k`` (columns ``k*LUT_AB ...``) holds the field at L* slices ``k`` (channels 0-1) and ``k+1``
    (channels 2-3), rows index b*, columns within a tile index a*: one bilinear read gives both slices.
    The channels hold the offset as the changes of ``fx`` and ``fz`` (``da*/500``, ``-db*/200``).
    """
    field = rbf_offsets(_lut_nodes(dtype, source_lab.device), source_lab, offsets, sigma)
    field = field * torch.tensor([1.0 / 500.0, -1.0 / 200.0], dtype=dtype, device=field.device)
    planes = field.permute(3, 2, 0, 1)  # [2, b, L, a]
    tiles = torch.cat((planes[:, :, :-1], planes[:, :, 1:]), dim=0)  # [4, b, L-1, a]
    return tiles.reshape(4, LUT_AB, (LUT_L - 1) * LUT_AB)


def _read_texture(texture: Tensor, fx: Tensor, fy: Tensor, fz: Tensor) -> tuple[Tensor, Tensor]:
    """Trilinear read of ``[B, 4, LUT_AB, W]`` textures at pixels given as f planes ``[B, N]``: ``(dfx, dfz)``.

    The coordinates come straight from the f values (``L* = 116 fy - 16``, ``a* = 500 (fx - fy)``,
    ``b* = 200 (fy - fz)``) in as few passes over the pixels as possible.
    """
    per_l = (LUT_L - 1) / 100.0
    lpos = fy.mul(116.0 * per_l).sub_(16.0 * per_l).clamp_(0.0, LUT_L - 1)
    tile = lpos.floor().clamp_(max=LUT_L - 2)
    frac = lpos.sub_(tile)
    per_ab = (LUT_AB - 1) / (2.0 * AB_RANGE)
    width = texture.shape[-1]
    grid = torch.empty((*fx.shape, 1, 2), dtype=fx.dtype, device=fx.device)
    col = (fx - fy).mul_(500.0 * per_ab).add_(AB_RANGE * per_ab).clamp_(0.0, LUT_AB - 1).add_(tile, alpha=LUT_AB)
    torch.mul(col, 2.0 / (width - 1), out=grid[..., 0, 0]).sub_(1.0)
    row = (fy - fz).mul_(200.0 * per_ab).add_(AB_RANGE * per_ab).clamp_(0.0, LUT_AB - 1)
    torch.mul(row, 2.0 / (LUT_AB - 1), out=grid[..., 0, 1]).sub_(1.0)
    out = F.grid_sample(texture, grid, mode="bilinear", align_corners=True)[..., 0]  # [B, 4, N]
    mixed = torch.lerp(out[:, :2], out[:, 2:], frac.unsqueeze(1))
    return mixed[:, 0], mixed[:, 1]


def _check_unit(value: float, name: str) -> float:
    v = float(value)
    if not (math.isfinite(v) and 0.0 <= v <= 1.0):
        raise PaletteError(f"{name}: {value} must be in [0, 1] (0 leaves the image as it is, 1 is the full effect)")
    return v


def _per_image(t: Tensor, b: int, name: str, what: str) -> Tensor:
    if t.shape[0] == b:
        return t
    if t.shape[0] == 1:
        return t.expand(b, *t.shape[1:])
    raise InputShapeError(f"{name}: {t.shape[0]} {what} for {b} images; give one (shared) or one per image")


def source_palette(image: Tensor, size: int, weight: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """k-means palette ``(colors [K, 3], shares [K])`` of an image ``[H, W, 3]``, on a reduced copy (docs/design.md §4).

    ``weight`` ``[H, W]`` (a fitted region mask, docs/regions.md): the palette of the pixels inside, each
    weighted by it; the stride shrinks with the region's area so that a small region is sampled as densely
    as a whole image is (a mask of ones gives the unmasked palette exactly).
    """
    from .extract import extract_palette

    if weight is None:
        step = max(1, math.ceil(max(image.shape[:2]) / EXTRACT_SIDE))
        # A regular sample of the pixels (not an average): shares stay pixel shares and no edge blends appear.
        pal = extract_palette(image[::step, ::step], size, method="kmeans", resize=None)
        return pal.colors, pal.weights
    inside = weight > 0
    coverage = float(inside.sum()) / inside.numel()
    step = max(1, math.ceil(max(image.shape[:2]) / EXTRACT_SIDE * math.sqrt(coverage)))
    w = weight[::step, ::step]
    keep = w > 0
    if int(keep.sum()) < MIN_REGION_SAMPLES:
        pixels, w = image[inside], weight[inside]
    else:
        pixels, w = image[::step, ::step][keep], w[keep]
    pal = extract_palette(pixels[None], size, method="kmeans", resize=None, mask=w[None])
    return pal.colors, pal.weights


def default_source_size(n_target: int) -> int:
    """Source colours extracted for ``n_target`` target colours: ``clamp(3 n, 12, 24)``."""
    return max(MIN_SOURCE_COLORS, min(MAX_SOURCE_COLORS, 3 * n_target))


def _palettes(
    x: Tensor,
    colors: Tensor,
    weights: Tensor | None,
    source_colors: Tensor | None,
    source_weights: Tensor | None,
    source_size: int | None,
    match: str,
    weight: Tensor | None = None,
) -> Callable[[int], tuple[Tensor, Tensor, Tensor, Tensor]]:
    """``palettes(i)``: image ``i``'s source Lab, source weights, target Lab, target weights.

    The inputs are validated and broadcast here, at once; a source palette is extracted only when its image
    is asked for, so a batch is worked through one image at a time. With a region ``weight`` ``[B, H*W]``
    the sources are the regions' palettes (an image whose region is empty is never asked for).
    """
    b = x.shape[0]
    tc, _ = check_colors(colors)
    tw = check_weights(weights, tc)
    tc, tw = _per_image(tc, b, "colors", "palettes"), _per_image(tw, b, "weights", "palettes")
    tc, tw = tc.to(x.device), tw.to(x.device)
    n = tc.shape[1]
    if source_colors is not None:
        sc, _ = check_colors(source_colors, "source_colors")
        sw = check_weights(source_weights, sc, "source_weights")
        sc, sw = _per_image(sc, b, "source_colors", "palettes"), _per_image(sw, b, "source_weights", "palettes")

        def source(i: int) -> tuple[Tensor, Tensor]:
            return sc[i], sw[i]
    else:
        size = n if match == "order" else (source_size or default_source_size(n))
        if size < 1:
            raise PaletteError(f"source_size: {size} must be >= 1")

        def source(i: int) -> tuple[Tensor, Tensor]:
            return source_palette(x[i], size, None if weight is None else weight[i].view(x.shape[1:3]))

    def palettes(i: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        c, w = source(i)
        return _lab(c.to(x.device)), w.double().to(x.device), _lab(tc[i]), tw[i].double()

    return palettes


def recolor(
    image: Tensor | np.ndarray,
    colors: Tensor | np.ndarray,
    weights: Tensor | np.ndarray | None = None,
    strength: float = 1.0,
    *,
    match: str = "ot",
    keep_neutrals: bool = False,
    source_colors: Tensor | np.ndarray | None = None,
    source_weights: Tensor | np.ndarray | None = None,
    source_size: int | None = None,
    sigma: float | None = None,
    mask: Tensor | np.ndarray | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Tensor:
    """Recolour images to a palette keeping L* (PaletteNet premise; Chang et al. 2015 RBF transfer; docs/design.md §10).

    ``image`` ``[H, W, 3]`` or ``[B, H, W, 3]``; ``colors`` ``[N, 3]`` (shared) or ``[B, N, 3]``;
    ``weights`` the target weights (equal when None). The source palette is ``source_colors`` (with
    ``source_weights``) when given, else a k-means palette of each image (``source_size`` colours,
    default :func:`default_source_size`; ``match="order"`` extracts N and pairs them by share). Each
    pixel's a*b* moves by ``strength`` x the RBF blend of the matched offsets (``sigma`` in Lab units,
    default :func:`kernel_width`); ``keep_neutrals`` keeps low-chroma pixels (C* below ~NEUTRAL_CHROMA)
    near their own a*b*. Out-of-gamut results lose chroma, never lightness. Returns the input's shape.

    ``mask`` (a MASK, docs/regions.md) recolours a region: the source palette comes from the pixels inside
    (weighted by the mask) and each pixel's a*b* moves ``mask`` x its offset (L* kept across soft edges), so
    pixels where the mask is 0 are returned unchanged, bit for bit; an image whose mask is all 0 is returned
    as it is.

    The batch is worked through one image at a time, each in slices of 2^18 pixels;
    ``progress(done, total)`` is called after every slice (``total`` = images x slices per image) for a host's
    progress bar, and an exception it raises (e.g. a cancel) stops the work there.
    """
    strength = _check_unit(strength, "strength")
    if sigma is not None and not (math.isfinite(float(sigma)) and float(sigma) > 0):
        raise PaletteError(f"sigma: {sigma} must be a positive RBF width in Lab units (or None for automatic)")
    x, batched = check_image(image)
    weight, filled = (None, None) if mask is None else _region(mask, x, "recolor")
    if filled is not None and not any(filled):
        return (x if batched else x[0]).clone()
    palettes = _palettes(x, colors, weights, source_colors, source_weights, source_size, match, weight)

    def texture(i: int) -> Tensor:
        src_lab, src_w, tgt_lab, tgt_w = palettes(i)
        plan = match_palettes(src_lab, src_w, tgt_lab, tgt_w, match)
        offsets = matched_offsets(src_lab, tgt_lab, plan)
        width = torch.as_tensor(sigma, dtype=torch.float64) if sigma is not None else kernel_width(src_lab)
        return offset_texture(src_lab, offsets * strength, width, x.dtype)[None]

    out = _shift_ab(x, texture, keep_neutrals, weight, progress)
    return out if batched else out[0]


def _region(mask: Tensor | np.ndarray, x: Tensor, what: str) -> tuple[Tensor, list[bool]]:
    """``(mask as [B, H*W] in x's dtype, whether it selects pixels of each image)``; logs the empty ones."""
    m = fit_mask(torch.as_tensor(mask), x.shape[1], x.shape[2], x.shape[0])
    m = m.to(device=x.device, dtype=x.dtype).reshape(x.shape[0], -1)
    # One mask shared by the batch is an expanded view (batch stride 0): test it once.
    filled = m.amax(1).gt(0).tolist() if m.stride(0) else [bool(m[0].any())] * m.shape[0]
    empty = [i for i, f in enumerate(filled) if not f]
    if empty:
        log.warning(
            "%s: the mask selects no pixels (all zero) of image(s) %s; they are returned unchanged",
            what,
            ", ".join(str(i) for i in empty),
        )
    return m, filled


def _shift_pixels(rgb: Tensor, texture: Tensor, keep_neutrals: bool, weight: Tensor | None = None) -> Tensor:
    """sRGB planes ``[3, n]`` of one image moved by its offset texture ``[1, 4, ., .]`` (scaled by a region
    ``weight [n]``); L* (Y) kept."""
    f, y = srgb_planes_to_f(rgb)
    fx, fy, fz = f.unbind(0)
    dfx, dfz = _read_texture(texture, fx[None], fy[None], fz[None])
    dfx, dfz = dfx[0], dfz[0]
    if keep_neutrals:
        chroma2 = (fx - fy).mul_(500.0).square_().add_((fy - fz).mul_(200.0).square_())
        keep = chroma2.mul_(-1.0 / NEUTRAL_CHROMA**2).exp_().neg_().add_(1.0)
        dfx, dfz = dfx.mul_(keep), dfz.mul_(keep)
    if weight is not None:  # a soft edge moves a*b* part of the way: L* stays exact across it
        dfx, dfz = dfx.mul_(weight), dfz.mul_(weight)
    return linear_to_srgb(fit_chroma(fx.add_(dfx), fy, y, fz.add_(dfz)))


def _per_chunk(
    fn: Callable[..., Tensor],
    *images: Tensor,
    weight: Tensor | None = None,
    original: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Tensor:
    """``fn(i, *planes)`` on cache-sized slices of pixels of image ``i`` of same-shape ``[B, H, W, 3]`` images.

    With ``weight`` ``[B, H*W]`` (a region, docs/regions.md) ``fn`` gets the slice's weights as a keyword and
    blends by them itself (in Lab, so L* is kept across soft edges); pixels of weight 0 are ``images[original]``
    bit for bit, and slices the region misses are copied without calling ``fn``.

    ``progress(done, total)`` follows every slice, counted over the batch (``total`` = B x slices per image):
    a large image reports as it goes, not only when it is finished.
    """
    flats = [x.reshape(x.shape[0], -1, 3) for x in images]
    out = torch.empty_like(flats[0])
    per_image = math.ceil(out.shape[1] / _PIXEL_CHUNK)
    for i in range(out.shape[0]):
        for k, s in enumerate(range(0, out.shape[1], _PIXEL_CHUNK)):
            part = slice(s, s + _PIXEL_CHUNK)
            w = None if weight is None else weight[i, part]
            lo, hi = (1.0, 1.0) if w is None else (float(v) for v in torch.aminmax(w))
            if hi == 0.0:
                out[i, part] = flats[original][i, part]
            else:
                planes = [f[i, part].T.contiguous() for f in flats]
                if lo == 1.0:  # inside the region: weight 1 is the unmasked result exactly, without the blend's cost
                    res = fn(i, *planes)
                else:
                    res = torch.where(w > 0, fn(i, *planes, weight=w), planes[original])
                out[i, part] = res.T
            if progress is not None:
                progress(i * per_image + k + 1, out.shape[0] * per_image)
    return out.reshape(images[0].shape).clamp_(0.0, 1.0)


def _shift_ab(
    x: Tensor,
    texture: Callable[[int], Tensor],
    keep_neutrals: bool,
    weight: Tensor | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Tensor:
    """Move every pixel's a*b* by its image's tabulated offset field (blended by a region ``weight``).

    ``texture(i)`` is made when image ``i``'s first pixels are moved and dropped after its last: one image's
    palette work at a time, and none for an image the region misses.
    """
    made: dict[int, Tensor] = {}

    def shift(i: int, rgb: Tensor, weight: Tensor | None = None) -> Tensor:
        if i not in made:
            made.clear()
            made[i] = texture(i)
        return _shift_pixels(rgb, made[i], keep_neutrals, weight)

    return _per_chunk(shift, x, weight=weight, progress=progress)


def reinhard_ab(
    image: Tensor | np.ndarray, colors: Tensor | np.ndarray, weights: Tensor | np.ndarray | None = None
) -> Tensor:
    """Baseline: Reinhard et al. 2001 statistics transfer on a*b* only, L* kept, to the palette's stripes render.

    Each image's a* and b* are shifted and scaled to the mean and standard deviation of a*, b* over
    :func:`palette_stripes` of the palette (the same gamut rule as :func:`recolor`). A constant image
    (zero spread) takes the palette's mean a*b*.
    """
    x, batched = check_image(image)
    b = x.shape[0]
    tc, _ = check_colors(colors)
    tw = check_weights(weights, tc)
    tc, tw = _per_image(tc, b, "colors", "palettes"), _per_image(tw, b, "weights", "palettes")
    f, y = srgb_planes_to_f(_planes(x))
    fx, fy, fz = f.unbind(0)
    ab = torch.stack((500.0 * (fx - fy), 200.0 * (fy - fz))).view(2, b, -1)
    out = torch.empty_like(ab)
    for i in range(b):
        stripes = palette_stripes(tc[i], tw[i], height=1, width=1024).to(ab)
        goal = srgb_to_lab(stripes)[0, :, 1:].T  # [2, W]
        mean, std = ab[:, i].mean(1, keepdim=True), ab[:, i].std(1, correction=0, keepdim=True)
        scale = torch.where(std > 1e-6, goal.std(1, correction=0, keepdim=True) / std.clamp_min(1e-6), 0.0)
        out[:, i] = (ab[:, i] - mean) * scale + goal.mean(1, keepdim=True)
    out = out.view(2, -1)
    lin = fit_chroma(fy + out[0] / 500.0, fy, y, fy - out[1] / 200.0)
    res = _unplanes(linear_to_srgb(lin), x.shape).clamp(0.0, 1.0)
    return res if batched else res[0]


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(x.shape[1:3]) == size:
        return x
    chw = x.permute(0, 3, 1, 2)
    out = F.interpolate(chw, size=size, mode="bicubic", align_corners=False, antialias=True)
    return out.permute(0, 2, 3, 1).clamp(0.0, 1.0)


def lightness_lock(
    image: Tensor | np.ndarray,
    lightness_source: Tensor | np.ndarray,
    mask: Tensor | np.ndarray | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Tensor:
    """The colour image's a*b* on the source's L* (training-free lightness-aware decoding; docs/design.md §10).

    ``image`` is resized to ``lightness_source``'s size first (bicubic, antialiased). Batches of 1 are
    broadcast against the other; otherwise the batch sizes must match. The result has the source's L*
    (to rounding); where the a*b* cannot be shown at that L*, chroma is reduced. Returns ``[B, H, W, 3]``
    (or ``[H, W, 3]`` when both inputs were single images).

    ``mask`` (a MASK on the source's grid, docs/regions.md) limits the lock to a region: each pixel's a*b*
    goes ``mask`` of the way from the source's to the colour image's (L* stays the source's), and the
    source's pixels where the mask is 0 are returned bit for bit.

    ``progress(done, total)`` is called after every slice of pixels of the result, as in :func:`recolor`.
    """
    x, x_batched = check_image(image, "image")
    s, s_batched = check_image(lightness_source, "lightness_source")
    if x.shape[0] != s.shape[0] and 1 not in (x.shape[0], s.shape[0]):
        raise InputShapeError(
            f"image has {x.shape[0]} images and lightness_source has {s.shape[0]}; give the same number, "
            "or a single image on one side (it is used for every image of the other)"
        )
    b = max(x.shape[0], s.shape[0])
    s = s.to(device=x.device, dtype=torch.promote_types(x.dtype, s.dtype)).expand(b, -1, -1, -1)
    x = _resize(x.to(s.dtype), tuple(s.shape[1:3])).expand(b, -1, -1, -1)
    weight = None if mask is None else _region(mask, s, "lightness_lock")[0]
    out = _per_chunk(
        lambda i, colour, source, weight=None: _lock_pixels(colour, source, weight),
        x,
        s,
        weight=weight,
        original=1,
        progress=progress,
    )
    return out if (x_batched or s_batched) else out[0]


def _lock_pixels(colour: Tensor, source: Tensor, weight: Tensor | None = None) -> Tensor:
    """sRGB planes with the a*b* of ``colour`` (blended with the source's by a region ``weight [n]``) and the
    Y (so L*) of ``source``; gamut by chroma."""
    fc, _ = srgb_planes_to_f(colour)
    fs, y = srgb_planes_to_f(source)
    fy = fs[1]
    fx, fz = fc[0].sub_(fc[1]).add_(fy), fc[2].sub_(fc[1]).add_(fy)
    if weight is not None:  # a*b* part of the way from the source's: L* stays exact across soft edges
        fx, fz = torch.lerp(fs[0], fx, weight), torch.lerp(fs[2], fz, weight)
    return linear_to_srgb(fit_chroma(fx, fy, y, fz))


def lightness_error(before: Tensor | np.ndarray, after: Tensor | np.ndarray) -> Tensor:
    """Mean |L*(before) - L*(after)| per image (docs/design.md §10 check); scalar or ``[B]``."""
    x, batched = check_image(before, "before")
    y, _ = check_image(after, "after")
    if x.shape != y.shape:
        raise InputShapeError(f"before {tuple(x.shape)} and after {tuple(y.shape)}: shapes must match")
    d = (srgb_to_lab(x.double())[..., 0] - srgb_to_lab(y.double().to(x.device))[..., 0]).abs()
    out = d.reshape(x.shape[0], -1).mean(1)
    return out if batched else out[0]


def chroma_emd(
    image: Tensor | np.ndarray,
    colors: Tensor | np.ndarray,
    weights: Tensor | np.ndarray | None = None,
    samples: int = 1024,
    seed: int = 0,
) -> Tensor:
    """Exact EMD (W1, Euclidean in the a*b* plane) between sampled pixels' a*b* and the palette's (docs/design.md §10).

    Pixels are drawn as in :func:`palette_emd` (``samples`` uniformly with replacement, generator seeded
    by ``seed`` per image); the palette's a*b* carry its weights. Scalar or ``[B]`` (float64).
    """
    return sampled_emd(image, colors, weights, samples, seed, lambda rgb: _lab(rgb)[:, 1:])
