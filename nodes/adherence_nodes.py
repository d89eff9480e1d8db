"""Palette adherence in the graph: scores of images against a palette and a map of off-palette pixels."""

from __future__ import annotations

import torch
from comfy_api.latest import io, ui

from ..palette_core.adherence import DEFAULT_THRESHOLD, check_threshold, mark_off_palette, palette_adherence
from ..palette_core.errors import PaletteError
from ..palette_core.palette import Palette
from .types import Palette as PaletteType
from .validation import check_inputs

CATEGORY = "palette"
MAX_SAMPLES = 65536


def check_samples(samples: int) -> None:
    """``samples``: a whole number of pixels from 1 to MAX_SAMPLES (the paper samples 1024)."""
    if isinstance(samples, bool) or not isinstance(samples, int) or not 1 <= samples <= MAX_SAMPLES:
        raise PaletteError(
            f"samples: {samples!r} must be a whole number of pixels from 1 to {MAX_SAMPLES} (paper: 1024)"
        )


def report(emd: list[float], qc: list[float], off: list[float], threshold: float) -> str:
    """One line per image (and the mean of a batch): EMD, Quadratic-Chi and the off-palette share."""
    lines = [f"image  palette_emd  quadratic_chi  off-palette (ΔE > {threshold:g})"]
    lines += [f"{i:>5}  {e:11.4f}  {q:13.4f}  {o:7.1%}" for i, (e, q, o) in enumerate(zip(emd, qc, off))]
    if len(emd) > 1:
        n = len(emd)
        lines.append(f"{'mean':>5}  {sum(emd) / n:11.4f}  {sum(qc) / n:13.4f}  {sum(off) / n:7.1%}")
    return "\n".join(lines)


class PaletteAdherence(io.ComfyNode):
    """Score images against a palette (EMD, Quadratic-Chi) and show which pixels are off the palette."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PaletteAdherence",
            display_name="Palette Adherence",
            category=CATEGORY,
            is_output_node=True,  # shows its scores and marked image even with nothing connected after it
            description="Measures how closely images follow a palette, inside the graph: the paper's palette EMD "
            "(1024 sampled pixels against the weighted palette; lower is closer), the Quadratic-Chi distance "
            "between the image's and the palette's colour histograms (lower is closer), and the share of "
            "off-palette pixels, those farther than the threshold (CIEDE2000) from every palette colour. The "
            "marked image shows them in magenta over a grey copy.",
            inputs=[
                io.Image.Input("image", tooltip="The image or batch to score, e.g. the decoded generation."),
                PaletteType.Input("palette", tooltip="The palette the images should follow (weights count)."),
                io.Float.Input(
                    "threshold",
                    default=DEFAULT_THRESHOLD,
                    min=0.5,
                    max=100.0,
                    step=0.5,
                    tooltip="CIEDE2000 colour difference above which a pixel is off-palette: about 2 is just "
                    "noticeable, 10 (default) clearly another colour, 20 and more only very different colours.",
                ),
                io.Int.Input(
                    "samples",
                    default=1024,
                    min=1,
                    max=MAX_SAMPLES,
                    tooltip="Pixels sampled per image for the EMD (the paper's protocol uses 1024, with the same "
                    "seed for every image).",
                ),
            ],
            outputs=[
                io.Float.Output(
                    display_name="palette_emd",
                    tooltip="EMD of the first image (the paper's Table 1 metric, RGB distance; lower is closer).",
                ),
                io.Float.Output(
                    display_name="quadratic_chi",
                    tooltip="Quadratic-Chi histogram distance of the first image (0 to about 1.4; lower is closer).",
                ),
                io.Float.Output(
                    display_name="off_palette",
                    tooltip="Share of the first image's pixels that are off-palette (0 to 1).",
                ),
                io.Image.Output(
                    display_name="marked",
                    tooltip="Each image as a grey copy with its off-palette pixels in magenta.",
                ),
                io.Mask.Output(
                    display_name="off_palette_mask",
                    tooltip="1 where a pixel is off-palette, per image: e.g. the mask for Palette Recolor or "
                    "inpainting.",
                ),
                io.String.Output(
                    display_name="report",
                    tooltip="Every image's scores as a table (and the batch mean); connect it to Preview Any.",
                ),
            ],
        )

    @classmethod
    def validate_inputs(cls, threshold: float | None = None, samples: int | None = None, **others) -> bool | str:
        # Linked inputs are None here: they are checked when the node runs.
        verdict = True
        try:
            if threshold is not None:
                check_threshold(threshold)
            if samples is not None:
                check_samples(samples)
        except PaletteError as e:
            verdict = str(e)
        return check_inputs(cls, {**others, "threshold": threshold, "samples": samples}, verdict)

    @classmethod
    def execute(
        cls, image: torch.Tensor, palette: Palette, threshold: float = DEFAULT_THRESHOLD, samples: int = 1024
    ) -> io.NodeOutput:
        check_samples(samples)
        scores = palette_adherence(image, palette.colors, palette.weights, threshold=threshold, samples=samples)
        off = scores.delta_e > scores.threshold
        marked = mark_off_palette(image, off)
        emd, qc, share = scores.emd.tolist(), scores.quadratic_chi.tolist(), scores.off_fraction.tolist()
        text = report(emd, qc, share, scores.threshold)
        shown = ui.PreviewImage(marked, cls=cls).as_dict() | {"text": (text,)}
        return io.NodeOutput(emd[0], qc[0], share[0], marked, off.float(), text, ui=shown)


NODES = [PaletteAdherence]
