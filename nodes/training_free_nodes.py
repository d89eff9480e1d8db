"""Training-free palette control nodes (docs/design.md §9): PaletteAlign and PaletteGuidance, post-CFG functions."""

from __future__ import annotations

import logging
import math

import comfy.model_management
import torch
from comfy_api.latest import io

from ..palette_core.alignment import check_palette_weights
from ..palette_core.errors import PaletteError
from ..palette_core.masks import is_empty
from ..palette_core.palette import Palette
from .model_family import latent_family, vae_family
from .progress import check_cancel
from .training_free_patches import AlignPatch, GuidancePatch, add_post_cfg_patch
from .types import Palette as PaletteType
from .validation import check_inputs

log = logging.getLogger(__name__)

CATEGORY = "palette/training-free"
DECODERS = ["fast", "exact"]


def palette_arrays(palette: Palette):
    """The palette's colours and weights with zero-weight colours dropped, or a PaletteError."""
    if not isinstance(palette, Palette):
        raise PaletteError(f"expected a PALETTE, got {type(palette).__name__}: connect a Palette node")
    return check_palette_weights(palette.colors, palette.weights)


def vae_encoder(vae):
    """``encode(image, model)``: the VAE latent of an image, moved into the model's sampling space."""

    def encode(image, model):
        latent = vae.encode(image)
        return model.process_latent_in(latent) if model is not None else latent

    return encode


class _Decode(torch.nn.Module):
    """Wraps a VAE model so torch.func.functional_call can run its ``decode`` with substitute weights."""

    def __init__(self, vae_model: torch.nn.Module) -> None:
        super().__init__()
        self.vae_model = vae_model

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae_model.decode(z)


def vae_decoder(vae):
    """``decode(z, model)``: the VAE decoder with autograd (gradients w.r.t. ``z`` only), image in [0, 1] unclamped.

    ComfyUI loads models and samples under ``torch.inference_mode``, so the VAE's weights are inference
    tensors that autograd refuses to save; each call runs the decoder on detached copies of them.

    Each guidance step decodes once, so each call first checks for Cancel: one sampling step runs
    ``steps_per_sample`` VAE decodes with their gradients, long enough that waiting for the sampler's own
    check at the step's end would make Cancel lag by seconds.
    """

    def decode(z, model):
        check_cancel()
        comfy.model_management.load_models_gpu([vae.patcher])
        raw = model.process_latent_out(z) if model is not None else z
        wrapper = _Decode(vae.first_stage_model)
        state = {name: t.detach().clone() for name, t in wrapper.state_dict(keep_vars=True).items()}
        x = torch.func.functional_call(wrapper, state, (raw.to(vae.device, vae.vae_dtype),))
        return ((x.float() + 1.0) * 0.5).movedim(1, -1).to(z.device)

    return decode


class PaletteAlign(io.ComfyNode):
    """Zero-shot colour alignment: x̂0 is replaced by a one-to-one matching to the palette's condition latents."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PaletteAlign",
            display_name="Palette Align (zero-shot)",
            category=CATEGORY,
            description="Training-free colour alignment (Color Alignment in Diffusion, zero-shot): at every step the "
            "model's predicted image is rearranged to use exactly the palette's colours in the palette's "
            "proportions, and the model repairs the structure. Works with SD1.5, SDXL, SD3/3.5 and Flux checkpoints; "
            "no adapter.",
            inputs=[
                io.Model.Input("model", tooltip="An SD1.5, SDXL, SD3/3.5 or Flux model; it is cloned."),
                io.Vae.Input(
                    "vae", tooltip="The model's own VAE; it encodes the palette condition once per image size."
                ),
                PaletteType.Input("palette", tooltip="Colours and their proportions (weights)."),
                io.Float.Input(
                    "stop_percent",
                    default=0.2,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="Final fraction of the schedule left unaligned so the model can refine details (the "
                    "paper: 0.2). 0 aligns every step, so the result uses only the palette's latents.",
                ),
                io.Float.Input(
                    "strength",
                    default=1.0,
                    min=0.0,
                    max=1.0,
                    step=0.05,
                    tooltip="Blend between the model's prediction (0) and the aligned one (1, default).",
                ),
                io.Mask.Input(
                    "mask",
                    optional=True,
                    tooltip="Optional region: only latents inside the mask are aligned (soft edges blend). Chain "
                    "several Palette Align nodes with their own masks for a palette per region (docs/regions.md).",
                ),
            ],
            outputs=[
                io.Model.Output(display_name="model", tooltip="The model with alignment: connect it to the KSampler.")
            ],
        )

    @classmethod
    def validate_inputs(cls, stop_percent: float | None = None, strength: float | None = None, **others) -> bool | str:
        verdict = True  # linked inputs are None here: they are checked when the node runs
        if stop_percent is not None and not 0.0 <= stop_percent <= 1.0:
            verdict = f"stop_percent {stop_percent} is outside [0, 1]: it is a fraction of the schedule"
        elif strength is not None and not 0.0 <= strength <= 1.0:
            verdict = f"strength {strength} is outside [0, 1]"
        return check_inputs(cls, {**others, "stop_percent": stop_percent, "strength": strength}, verdict)

    @classmethod
    def execute(cls, model, vae, palette, stop_percent, strength, mask=None) -> io.NodeOutput:
        verdict = cls.validate_inputs(stop_percent, strength)
        if verdict is not True:
            raise PaletteError(verdict)
        colors, weights = palette_arrays(palette)
        family = vae_family(vae, latent_family(model, "PaletteAlign"))
        m = model.clone()
        if mask is not None and is_empty(mask):
            log.warning("PaletteAlign: the mask selects no pixels (all zero); the model is left unchanged")
            return io.NodeOutput(m)
        # aligned while sigma is above the point where the final stop_percent of the schedule begins, in the
        # model's own schedule (flow models: sigma in [0, 1]); post-CFG hooks run at cfg 1 too
        stop_sigma = m.get_model_object("model_sampling").percent_to_sigma(1.0 - stop_percent)
        patch = AlignPatch(vae_encoder(vae), colors, weights, stop_sigma, strength, family=family, mask=mask)
        add_post_cfg_patch(m, patch)
        return io.NodeOutput(m)


class PaletteGuidance(io.ComfyNode):
    """Sliced-Wasserstein palette guidance: gradient steps pull x̂0's colours toward the palette distribution."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PaletteGuidance",
            display_name="Palette Guidance (sliced Wasserstein)",
            category=CATEGORY,
            description="Training-free palette guidance: at each step, a few gradient steps move the model's predicted "
            "image so its colour distribution approaches the palette (sliced Wasserstein distance). 'fast' "
            "differentiates ComfyUI's linear latent-to-RGB preview map of the model's family (nearly free); 'exact' "
            "the VAE decoder.",
            inputs=[
                io.Model.Input("model", tooltip="An SD1.5, SDXL, SD3/3.5 or Flux model; it is cloned."),
                PaletteType.Input("palette", tooltip="Colours and their proportions (weights)."),
                io.Float.Input(
                    "strength",
                    default=1.0,
                    min=0.0,
                    max=2.0,
                    step=0.05,
                    tooltip="Step size, 0 to 2 (default 1): at 1 each colour moves about half way to its target "
                    "per guidance step.",
                ),
                io.Int.Input(
                    "steps_per_sample",
                    default=4,
                    min=1,
                    max=32,
                    tooltip="Guidance steps per sampling step, 1 to 32 (default 4); each costs one decode and its "
                    "gradient.",
                ),
                io.Float.Input(
                    "start_percent",
                    default=0.0,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="Where in the schedule guidance starts (0 = first step).",
                ),
                io.Float.Input(
                    "end_percent",
                    default=0.8,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="Where it stops (1 = last step); stopping early leaves the last steps for detail.",
                ),
                io.Combo.Input(
                    "decoder",
                    options=DECODERS,
                    default="fast",
                    tooltip="fast: ComfyUI's linear latent-to-RGB preview map of the model's family. exact: the VAE "
                    "decoder (needs the vae input; slower and memory-hungry at large sizes).",
                ),
                io.Vae.Input("vae", optional=True, tooltip="The model's own VAE, needed by the exact decoder."),
                io.Mask.Input(
                    "mask",
                    optional=True,
                    tooltip="Optional region: only its pixels pull toward the palette (weighted by the mask) and "
                    "latents outside it never move. Chain several nodes with their own masks for a palette per "
                    "region (docs/regions.md).",
                ),
                PaletteType.Input(
                    "negative_palette",
                    optional=True,
                    tooltip="Optional colours to keep away from, e.g. from Auto Negative Palette on a first pass: "
                    "pixels near them are pushed out and drawn to their nearest palette colour.",
                ),
                io.Float.Input(
                    "negative_strength",
                    default=1.0,
                    min=0.0,
                    max=4.0,
                    step=0.05,
                    optional=True,
                    tooltip="How hard the negative palette pushes, 0 to 4 (default 1; 0 ignores it).",
                ),
            ],
            outputs=[
                io.Model.Output(display_name="model", tooltip="The model with guidance: connect it to the KSampler.")
            ],
        )

    @classmethod
    def validate_inputs(
        cls,
        strength: float | None = None,
        steps_per_sample: int | None = None,
        start_percent: float | None = None,
        end_percent: float | None = None,
        decoder: str | None = None,
        **others,
    ) -> bool | str:
        values = {**others, "strength": strength, "steps_per_sample": steps_per_sample, "decoder": decoder}
        values |= {"start_percent": start_percent, "end_percent": end_percent}
        own = cls._own_checks(strength, steps_per_sample, start_percent, end_percent, decoder)
        return check_inputs(cls, values, own)

    @staticmethod
    def _own_checks(strength, steps_per_sample, start_percent, end_percent, decoder) -> bool | str:
        """The node's own messages; a None (linked input) passes and is checked when the node runs."""
        if strength is not None and not 0.0 <= strength <= 2.0:
            return f"strength {strength} is outside [0, 2]"
        if steps_per_sample is not None and not 1 <= steps_per_sample <= 32:
            return f"steps_per_sample {steps_per_sample} is outside [1, 32]"
        for name, value in (("start_percent", start_percent), ("end_percent", end_percent)):
            if value is not None and not 0.0 <= value <= 1.0:
                return f"{name} {value} is outside [0, 1]"
        if start_percent is not None and end_percent is not None and start_percent > end_percent:
            return f"start_percent {start_percent} is after end_percent {end_percent}"
        if decoder is not None and decoder not in DECODERS:
            return f"decoder {decoder!r} is not one of {DECODERS}"
        return True

    @classmethod
    def execute(
        cls,
        model,
        palette,
        strength,
        steps_per_sample,
        start_percent,
        end_percent,
        decoder,
        vae=None,
        mask=None,
        negative_palette=None,
        negative_strength=1.0,
    ) -> io.NodeOutput:
        verdict = cls.validate_inputs(strength, steps_per_sample, start_percent, end_percent, decoder)
        if verdict is not True:
            raise PaletteError(verdict)
        if not (math.isfinite(negative_strength) and 0.0 <= negative_strength <= 4.0):
            raise PaletteError(f"PaletteGuidance: negative_strength {negative_strength} is outside [0, 4]")
        negative = None if negative_palette is None else palette_arrays(negative_palette)
        colors, weights = palette_arrays(palette)
        family = latent_family(model, "PaletteGuidance")
        decode = None
        if decoder == "exact":
            if vae is None:
                raise PaletteError("decoder 'exact' needs the VAE: connect the vae input, or use decoder 'fast'")
            family = vae_family(vae, family)
            decode = vae_decoder(vae)
        m = model.clone()
        if mask is not None and is_empty(mask):
            log.warning("PaletteGuidance: the mask selects no pixels (all zero); the model is left unchanged")
            return io.NodeOutput(m)
        sampling = m.get_model_object("model_sampling")
        patch = GuidancePatch(
            colors,
            weights,
            strength,
            steps_per_sample,
            sampling.percent_to_sigma(start_percent),
            sampling.percent_to_sigma(end_percent),
            decode,
            family=family,
            mask=mask,
            negative=negative,
            negative_strength=negative_strength,
        )
        add_post_cfg_patch(m, patch)
        return io.NodeOutput(m)


NODES = [PaletteAlign, PaletteGuidance]
