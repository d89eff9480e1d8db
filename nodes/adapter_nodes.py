"""Palette-Adapter nodes: loader, colour conditions, entropy/distance controls and ApplyPaletteAdapter."""

from __future__ import annotations

import logging

import comfy.model_management
import comfy.model_patcher
import folder_paths
import torch
from comfy_api.latest import io, ui

from ..palette_core import adapter as pa
from ..palette_core.blocks import DEFAULT_BLOCKS, parse_blocks
from ..palette_core.errors import AdapterError, PaletteError
from ..palette_core.histogram import entropy, image_histogram
from ..palette_core.masks import is_empty
from ..palette_core.palette import Palette
from ..palette_core.render import histogram_bars
from .adapter_patch import AdapterRun, PaletteAttn2Patch
from .model_family import attention_layers_of
from .types import ColorCondition, PaletteAdapter
from .types import Palette as PaletteType
from .validation import check_inputs

log = logging.getLogger(__name__)

CATEGORY = "palette/adapter"
FOLDER = "palette_adapter"
MODES = list(pa.CONTROL_MODES)


def as_condition(value) -> pa.ColorCondition:
    """A PALETTE or COLOR_CONDITION input as a ColorCondition."""
    if isinstance(value, Palette):
        return pa.palette_condition(value.colors, value.weights)
    if isinstance(value, pa.ColorCondition):
        return value
    raise PaletteError(f"expected a PALETTE or COLOR_CONDITION, got {type(value).__name__}")


class PaletteAdapterLoader(io.ComfyNode):
    """Load a Palette-Adapter (.safetensors) from models/palette_adapter."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PaletteAdapterLoader",
            display_name="Load Palette Adapter",
            category=CATEGORY,
            is_experimental=True,  # all five adapter nodes: BETA while no trained adapter weights exist (README)
            description="Loads Palette-Adapter weights from ComfyUI/models/palette_adapter. Only .safetensors files "
            "are read; the file's shapes are checked when the adapter is applied to a model.",
            inputs=[
                io.Combo.Input(
                    "adapter_name",
                    options=folder_paths.get_filename_list(FOLDER),
                    tooltip="A .safetensors file in models/palette_adapter. No trained weights ship with the pack: "
                    "train them (train/) or obtain them; `python -m palette_core adapter init` makes an untrained "
                    "one for testing.",
                )
            ],
            outputs=[
                PaletteAdapter.Output(
                    display_name="adapter", tooltip="The adapter; connect it to Apply Palette Adapter."
                )
            ],
        )

    @classmethod
    def validate_inputs(cls, adapter_name: str | None = None, **others) -> bool | str:
        empty = adapter_name is not None and not folder_paths.get_filename_list(FOLDER)
        hint = "no adapter in models/palette_adapter: put a .safetensors file there and refresh" if empty else True
        return check_inputs(cls, {**others, "adapter_name": adapter_name}, hint)

    @classmethod
    def execute(cls, adapter_name: str) -> io.NodeOutput:
        path = folder_paths.get_full_path_or_raise(FOLDER, adapter_name)
        adapter = pa.load_adapter(path)
        if adapter.trained_steps == 0:
            log.warning(
                "%s is an untrained adapter (trained_steps 0): it changes images but not toward the palette",
                adapter_name,
            )
        return io.NodeOutput(adapter)


class HistogramFromImage(io.ComfyNode):
    """The full colour histogram of a reference image as a colour condition."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HistogramFromImage",
            display_name="Colour Histogram From Image",
            category=CATEGORY,
            is_experimental=True,
            description="Conditions on the full 34x12x10 HSV histogram of a reference image (a richer condition than "
            "a palette). A batch of images gives one condition per image, matched one per latent. After a run the "
            "heaviest 32 bins of each histogram show on the node as colour bars.",
            inputs=[
                io.Image.Input(
                    "image",
                    tooltip="The reference whose colours (not content) to use; a batch gives one condition per image.",
                )
            ],
            outputs=[
                ColorCondition.Output(
                    display_name="condition",
                    tooltip="The colour condition: connect it to Apply Palette Adapter (condition) or to Entropy / "
                    "Distance Control.",
                ),
                io.Float.Output(display_name="entropy", tooltip="Entropy of the (first) histogram in bits."),
            ],
        )

    @classmethod
    def validate_inputs(cls, **inputs) -> bool | str:
        return check_inputs(cls, inputs)

    @classmethod
    def execute(cls, image) -> io.NodeOutput:
        hist = image_histogram(image)
        rows = hist.reshape(-1, hist.shape[-1])
        bars = torch.stack([histogram_bars(h, top=32, height=64, width=512) for h in rows])
        return io.NodeOutput(pa.histogram_condition(hist), float(entropy(rows[0])), ui=ui.PreviewImage(bars, cls=cls))


class NegativePalette(io.ComfyNode):
    """Colours to steer away from, through the CFG uncond branch (paper §3.3)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NegativePalette",
            display_name="Negative Palette",
            category=CATEGORY,
            is_experimental=True,
            description="Colours to suppress. Goes to ApplyPaletteAdapter's negative input; classifier-free guidance "
            "then extrapolates from this palette toward the positive one at no extra cost.",
            inputs=[
                PaletteType.Input("palette", tooltip="The unwanted colours."),
                io.Float.Input(
                    "weight",
                    default=0.3,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="How strongly to suppress them, 0 to 1 (default 0.3; the paper uses 0.07 to 0.3). "
                    "Needs cfg above 1.",
                ),
            ],
            outputs=[
                ColorCondition.Output(
                    display_name="negative", tooltip="Connect to Apply Palette Adapter's negative input."
                )
            ],
        )

    @classmethod
    def validate_inputs(cls, **inputs) -> bool | str:
        return check_inputs(cls, inputs)

    @classmethod
    def execute(cls, palette: Palette, weight: float) -> io.NodeOutput:
        return io.NodeOutput(pa.negative_condition(palette.colors, palette.weights, weight))


class EntropyDistanceControl(io.ComfyNode):
    """Set the entropy and palette-distance controls of a colour condition (paper §3.4)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EntropyDistanceControl",
            display_name="Entropy / Distance Control",
            category=CATEGORY,
            is_experimental=True,
            description="Lower entropy gives flatter images with fewer shades; higher distance lets more colours "
            "outside the palette appear. 'relative' puts the reference on the negative branch and reference + value "
            "on the positive one (the paper's relative entropy); 'off' leaves the control absent on both.",
            inputs=[
                io.MultiType.Input(
                    "condition",
                    types=[PaletteType, ColorCondition],
                    tooltip="A palette (from Palette) or a colour condition (from Colour Histogram From Image).",
                ),
                io.Combo.Input(
                    "entropy_mode",
                    options=MODES,
                    default="relative",
                    tooltip="off: no entropy control. absolute: 'entropy' is the target in bits. relative (default): "
                    "'entropy' is a change from 'entropy_reference' (the reference goes to CFG's negative branch).",
                ),
                io.Float.Input(
                    "entropy",
                    default=-2.0,
                    min=-12.0,
                    max=12.0,
                    step=0.1,
                    tooltip="Bits: the target entropy (absolute) or the change from the reference "
                    "(relative, e.g. -3 for flat graphics, +2 for rich detail; reference + change stops at 0).",
                ),
                io.Float.Input(
                    "entropy_reference",
                    default=7.0,
                    min=0.0,
                    max=12.0,
                    step=0.1,
                    tooltip="Entropy of the negative branch in relative mode (typical photos: ~7 bits).",
                ),
                io.Combo.Input(
                    "distance_mode",
                    options=MODES,
                    default="off",
                    tooltip="off (default): no distance control. absolute: 'distance' is the target. relative: "
                    "'distance' is a change from 'distance_reference'.",
                ),
                io.Float.Input(
                    "distance",
                    default=0.2,
                    min=-1.5,
                    max=1.5,
                    step=0.01,
                    tooltip="Quadratic-Chi distance to the palette: the target (absolute) or the change "
                    "from the reference (relative; reference + change stops at 0). Palettes of real images sit "
                    "around 0.5-0.7.",
                ),
                io.Float.Input(
                    "distance_reference",
                    default=0.6,
                    min=0.0,
                    max=1.5,
                    step=0.01,
                    tooltip="Distance of the negative branch in relative mode (0 to 1.5, default 0.6).",
                ),
            ],
            outputs=[
                ColorCondition.Output(
                    display_name="condition",
                    tooltip="The condition with its controls: connect to Apply Palette Adapter.",
                )
            ],
        )

    @classmethod
    def validate_inputs(
        cls,
        entropy_mode: str | None = None,
        entropy: float | None = None,
        distance_mode: str | None = None,
        distance: float | None = None,
        **others,
    ) -> bool | str:
        values = {**others, "entropy_mode": entropy_mode, "entropy": entropy}
        values |= {"distance_mode": distance_mode, "distance": distance}
        verdict = True  # linked inputs are None here: they are checked when the node runs
        if entropy_mode == "absolute" and entropy is not None and entropy < 0:
            verdict = (
                f"entropy {entropy} is negative: absolute entropy is in bits (0 to 12); use relative mode for a change"
            )
        elif distance_mode == "absolute" and distance is not None and distance < 0:
            verdict = f"distance {distance} is negative: an absolute distance is >= 0; use relative mode for a change"
        return check_inputs(cls, values, verdict)

    @classmethod
    def execute(
        cls, condition, entropy_mode, entropy, entropy_reference, distance_mode, distance, distance_reference
    ) -> io.NodeOutput:
        cond = as_condition(condition)
        out = pa.apply_controls(
            cond, entropy_mode, entropy, entropy_reference, distance_mode, distance, distance_reference
        )
        return io.NodeOutput(out)


class ApplyPaletteAdapter(io.ComfyNode):
    """Patch the Palette-Adapter into an SDXL model's cross-attention at the chosen blocks."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ApplyPaletteAdapter",
            display_name="Apply Palette Adapter",
            category=CATEGORY,
            is_experimental=True,
            description="Adds the Palette-Adapter's decoupled cross-attention to the model at the chosen blocks. The "
            "condition drives the positive (cond) branch, the optional negative the uncond branch of CFG.",
            inputs=[
                io.Model.Input("model", tooltip="The SDXL model to patch (from Load Checkpoint); it is cloned."),
                PaletteAdapter.Input("adapter", tooltip="The adapter weights, from Load Palette Adapter."),
                io.MultiType.Input(
                    "condition",
                    types=[PaletteType, ColorCondition],
                    tooltip="A palette, a histogram condition, or a condition with entropy/distance.",
                ),
                io.Float.Input(
                    "weight",
                    default=1.0,
                    min=-2.0,
                    max=3.0,
                    step=0.05,
                    tooltip="Scale of the adapter's attention, -2 to 3 (default 1); 0 leaves the model unchanged.",
                ),
                io.Float.Input(
                    "start_percent",
                    default=0.0,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="Where in the schedule the adapter starts acting (0 = first step).",
                ),
                io.Float.Input(
                    "end_percent",
                    default=1.0,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="Where it stops acting (1 = last step).",
                ),
                io.String.Input(
                    "blocks",
                    default="from file",
                    tooltip="'from file' for every block the adapter has weights for, or block names "
                    f"separated by commas, e.g. {DEFAULT_BLOCKS[0]}, mid_block.attentions.0",
                ),
                ColorCondition.Input(
                    "negative", optional=True, tooltip="Optional negative palette (from Negative Palette)."
                ),
                io.Mask.Input(
                    "mask",
                    optional=True,
                    tooltip="Optional region: the adapter's attention is scaled by the mask at every patched "
                    "layer, on both CFG branches. Chain several Apply Palette Adapter nodes with their own masks "
                    "for a palette per region (docs/regions.md).",
                ),
            ],
            outputs=[io.Model.Output(display_name="model", tooltip="The patched model: connect it to the KSampler.")],
        )

    @classmethod
    def validate_inputs(
        cls, blocks: str | None = None, start_percent: float | None = None, end_percent: float | None = None, **others
    ) -> bool | str:
        values = {**others, "blocks": blocks, "start_percent": start_percent, "end_percent": end_percent}
        verdict = True  # linked inputs are None here: they are checked when the node runs
        try:
            if blocks is not None:
                parse_blocks(blocks)
        except AdapterError as e:
            verdict = str(e)
        if verdict is True and start_percent is not None and end_percent is not None and start_percent > end_percent:
            verdict = f"start_percent {start_percent} is after end_percent {end_percent}"
        return check_inputs(cls, values, verdict)

    @classmethod
    def execute(cls, model, adapter, condition, weight, start_percent, end_percent, blocks, negative=None, mask=None):
        m = model.clone()
        if weight == 0:
            return io.NodeOutput(m)
        if mask is not None and is_empty(mask):
            log.warning("ApplyPaletteAdapter: the mask selects no pixels (all zero); the model is left unchanged")
            return io.NodeOutput(m)
        model_layers = attention_layers_of(m)
        model_layers.check_fits(adapter.layer_dims, adapter.context_dim, getattr(adapter, "base", pa.BASE_MODEL))
        layers = pa.select_layers(adapter.layers, parse_blocks(blocks))
        sampling = m.get_model_object("model_sampling")
        weights = adapter.subset(layers).to(comfy.model_management.unet_offload_device())
        # model management loads, counts and offloads the adapter's weights with the model (AdapterRun.models)
        patcher = comfy.model_patcher.ModelPatcher(
            weights,
            load_device=comfy.model_management.get_torch_device(),
            offload_device=comfy.model_management.unet_offload_device(),
        )
        run = AdapterRun(
            weights,
            as_condition(condition),
            negative,
            weight,
            sampling.percent_to_sigma(start_percent),
            sampling.percent_to_sigma(end_percent),
            patcher=patcher,
            mask=mask,
        )
        replace = m.model_options["transformer_options"].get("patches_replace", {}).get("attn2", {})
        for name in layers:
            kind, block_id, index = model_layers.layer(name).comfy_key
            previous = replace.get((kind, block_id, index)) or replace.get((kind, block_id))
            m.set_model_attn2_replace(PaletteAttn2Patch(run, name, previous), kind, block_id, index)
        positive = run.positive
        if negative is not None or positive.null_entropy is not None or positive.null_distance is not None:
            m.model_options["disable_cfg1_optimization"] = True  # the uncond branch carries a condition even at cfg 1
        return io.NodeOutput(m)


NODES = [PaletteAdapterLoader, HistogramFromImage, NegativePalette, EntropyDistanceControl, ApplyPaletteAdapter]
