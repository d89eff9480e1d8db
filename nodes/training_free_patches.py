"""Post-CFG functions of the training-free nodes (docs/design.md §9): zero-shot alignment and SW palette guidance.

Host-independent on import: ComfyUI calls these objects as ``sampler_post_cfg_function`` with
``args = {"denoised", "sigma", "model", ...}`` and uses what they return as the new denoised
prediction (x̂0, in the sampler's latent space), so contract tests can drive them anywhere.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from ..palette_core.alignment import DEFAULT_BLOCK, DEFAULT_BLUR, AlignmentCondition, condition_latents
from ..palette_core.latent_family import SDXL, LatentFamily
from ..palette_core.masks import check_mask, fit_mask
from ..palette_core.sw_guidance import DEFAULT_ROTATIONS, guide

log = logging.getLogger(__name__)

# encode(image [1, H, W, 3], model) -> latent [1, C, H/d, W/d] in the sampler's space (the family's C and d)
ImageEncoder = Callable[[Tensor, object], Tensor]
# decode(latent [B, C, h, w] in the sampler's space, model) -> image [B, H, W, 3], differentiable
LatentDecoder = Callable[[Tensor, object], Tensor]


def _sigma(args: Mapping) -> float:
    return float(torch.as_tensor(args["sigma"]).max())


class AlignPatch:
    """Replaces x̂0 by its one-to-one matching to the palette's condition latents while sigma > ``stop_sigma``.

    Condition latents are encoded once per latent size and kept (with their clusters) on the patch.
    """

    def __init__(
        self,
        encode: ImageEncoder,
        colors: Tensor,
        weights: Tensor,
        stop_sigma: float,
        strength: float = 1.0,
        block: int = DEFAULT_BLOCK,
        blur: int = DEFAULT_BLUR,
        seed: int = 0,
        family: LatentFamily = SDXL,
        mask: Tensor | None = None,
    ) -> None:
        self.encode = encode
        self.family = family
        self.mask = None if mask is None else check_mask(mask)  # a region (docs/regions.md); None: everywhere
        self.colors, self.weights = colors, weights
        self.stop_sigma, self.strength = float(stop_sigma), float(strength)
        self.block, self.blur, self.seed = block, blur, seed
        self.conditions: dict[tuple[int, int], AlignmentCondition] = {}
        self.calls = 0  # active evaluations (tests and benchmarks read it)

    def __deepcopy__(self, memo: dict) -> AlignPatch:
        return self  # ModelPatcher.clone() deep-copies model_options: share the VAE and the cache

    def condition(self, h: int, w: int, model: object, device: torch.device) -> AlignmentCondition:
        """The cached condition for an ``h x w`` latent (encoded on first use)."""
        key = (h, w)
        if key not in self.conditions:
            log.info("PaletteAlign: encoding the palette condition for a %dx%d latent", h, w)
            vectors = condition_latents(
                lambda image: self.encode(image, model),
                self.colors,
                self.weights,
                h,
                w,
                self.block,
                self.blur,
                self.seed,
                self.family,
            )
            self.conditions[key] = AlignmentCondition(vectors.to(device), seed=self.seed)
        return self.conditions[key]

    def __call__(self, args: Mapping) -> Tensor:
        denoised = args["denoised"]
        if self.strength <= 0 or _sigma(args) <= self.stop_sigma:
            return denoised
        self.calls += 1
        cond = self.condition(denoised.shape[-2], denoised.shape[-1], args.get("model"), denoised.device)
        return cond.align(denoised, self.strength, region(self.mask, denoised))


class GuidancePatch:
    """Takes sliced-Wasserstein palette steps on x̂0 while ``sigma_end < sigma <= sigma_start``."""

    def __init__(
        self,
        colors: Tensor,
        weights: Tensor,
        strength: float,
        steps: int,
        sigma_start: float = float("inf"),
        sigma_end: float = 0.0,
        decode: LatentDecoder | None = None,
        rotations: int = DEFAULT_ROTATIONS,
        family: LatentFamily = SDXL,
        mask: Tensor | None = None,
        negative: tuple[Tensor, Tensor] | None = None,
        negative_strength: float = 1.0,
    ) -> None:
        self.family = family  # its preview map is the decoder when ``decode`` is None
        self.mask = None if mask is None else check_mask(mask)
        self.colors, self.weights = colors, weights
        self.negative, self.negative_strength = negative, float(negative_strength)  # colours to keep away from
        self.strength, self.steps = float(strength), int(steps)
        self.sigma_start, self.sigma_end = float(sigma_start), float(sigma_end)
        self.decode = decode
        self.rotations = rotations
        self.calls = 0

    def __deepcopy__(self, memo: dict) -> GuidancePatch:
        return self

    def __call__(self, args: Mapping) -> Tensor:
        denoised = args["denoised"]
        sigma = _sigma(args)
        if self.strength == 0 or self.steps == 0 or not (self.sigma_end < sigma <= self.sigma_start):
            return denoised
        self.calls += 1
        decode = None
        if self.decode is not None:
            model = args.get("model")
            decode = lambda z: self.decode(z, model)  # noqa: E731
        out = guide(
            denoised,
            self.colors,
            self.weights,
            steps=self.steps,
            strength=self.strength,
            decode=decode,
            rotations=self.rotations,
            seed=int(sigma * 1e6) % (1 << 31),  # from the step, not a counter: a re-run gives the same image
            family=self.family,
            mask=self.mask,
            negative_colors=None if self.negative is None else self.negative[0],
            negative_weights=None if self.negative is None else self.negative[1],
            negative_strength=self.negative_strength,
        )
        return out.to(denoised.dtype)


_FITTED: dict[tuple, tuple[Tensor, Tensor]] = {}  # fitted masks by (mask, grid, batch, device): the same at every step


def region(mask: Tensor | None, latent: Tensor) -> Tensor | None:
    """``mask`` on the latent grid ``[B, h, w]`` (area-averaged, docs/regions.md), or None without a mask."""
    if mask is None:
        return None
    key = (id(mask), latent.shape[-2], latent.shape[-1], latent.shape[0], latent.device)
    cached = _FITTED.get(key)
    if cached is None or cached[0] is not mask:
        fitted = fit_mask(mask, latent.shape[-2], latent.shape[-1], latent.shape[0]).to(latent.device)
        if len(_FITTED) > 64:  # a bound: masks of finished runs are dropped
            _FITTED.clear()
        _FITTED[key] = cached = (mask, fitted)
    return cached[1]


class RegionGroup:
    """Regional patches of one kind on one model: each sees the same x̂0, their changes add, and where regions
    overlap the sum is divided by the summed mask weight (docs/regions.md), so node order does not matter."""

    def __init__(self, patches: tuple) -> None:
        self.patches = tuple(patches)

    def __deepcopy__(self, memo: dict) -> RegionGroup:
        return self

    def with_patch(self, patch) -> RegionGroup:
        """A new group with ``patch`` added (the group on the input model is left as it is)."""
        return RegionGroup((*self.patches, patch))

    def __call__(self, args: Mapping) -> Tensor:
        if len(self.patches) == 1:
            return self.patches[0](args)
        x = args["denoised"]
        delta = cover = None
        for patch in self.patches:
            out = patch(args)
            if out is x:  # outside its window at this step
                continue
            weight = region(patch.mask, x).unsqueeze(1).to(x.dtype)
            delta = out - x if delta is None else delta + (out - x)
            cover = weight if cover is None else cover + weight
        return x if delta is None else x + delta / cover.clamp_min(1.0)


def add_post_cfg_patch(model, patch) -> None:
    """Add a palette post-CFG patch to a cloned ModelPatcher; a regional one joins the model's group of its kind."""
    if patch.mask is None:
        model.set_model_sampler_post_cfg_function(patch)
        return
    functions = model.model_options.get("sampler_post_cfg_function", [])
    for i, fn in enumerate(functions):
        if isinstance(fn, RegionGroup) and type(fn.patches[0]) is type(patch):
            functions[i] = fn.with_patch(patch)  # the clone's own list (ModelPatcher.clone deep-copies it)
            return
    model.set_model_sampler_post_cfg_function(RegionGroup((patch,)))
