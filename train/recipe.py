"""The per-sample colour condition of training (paper §3.1-§3.4, Fig. 3; docs/design.md §8).

For every image: choose the kind (palette 45 %, histogram 45 %, unconditioned 10 %); a palette is a median
cut of 3-8 colours (Pylette's, paper §3.2) spread uniformly over its bins (§3.1); a histogram is the
image's full histogram; the distance is the Quadratic-Chi distance of the condition to the image's full
histogram and the entropy that of the image's histogram. Then the IP-Adapter drops for classifier-free
guidance: text, colour, or both (5 % each), and each scalar on its own (10 %) so that inference works
with a control unset. "Unconditioned" keeps the entropy (the null branch of relative entropy carries
one); a colour drop removes everything (zero histogram, kind 0, no scalars).

With ``palette_source="manifest"`` a palette is instead the one the manifest gives for the image (with its
weights): for data made from known palettes, where a median cut would also tell how the image was drawn
around them (the toy's shading, docs/training.md "Toy run") and so leave the scalars nothing to say.

Every random choice comes from the generator passed in, in a fixed order, so a step is reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from palette_core.adapter import KIND_HISTOGRAM, KIND_NONE, KIND_PALETTE, ColorCondition, image_scalars
from palette_core.errors import InputShapeError
from palette_core.extract import extract_palette
from palette_core.histogram import NUM_BINS, image_histogram, palette_histogram
from palette_core.palette import Palette

PALETTE_SOURCES = ("median_cut", "manifest")  # where a palette condition comes from


@dataclass(frozen=True)
class Recipe:
    """Probabilities of the docs/design.md §8 condition recipe (defaults: its starting point)."""

    p_palette: float = 0.45
    p_histogram: float = 0.45
    palette_min: int = 3
    palette_max: int = 8
    p_drop_text: float = 0.05
    p_drop_color: float = 0.05
    p_drop_both: float = 0.05
    p_drop_distance: float = 0.10
    p_drop_entropy: float = 0.10
    palette_resize: int | None = 256  # Pylette resamples to 256 x 256 before the median cut
    palette_source: str = "median_cut"

    def __post_init__(self) -> None:
        probs = (self.p_palette, self.p_histogram, self.p_drop_text, self.p_drop_color, self.p_drop_both)
        if any(not 0 <= p <= 1 for p in probs) or self.p_palette + self.p_histogram > 1:
            raise InputShapeError("recipe: probabilities must lie in [0, 1] and palette + histogram <= 1")
        if self.p_drop_text + self.p_drop_color + self.p_drop_both > 1:
            raise InputShapeError("recipe: text + colour + both drop probabilities must sum to <= 1")
        if not 1 <= self.palette_min <= self.palette_max <= 16:
            raise InputShapeError(f"recipe: palette sizes {self.palette_min}..{self.palette_max}; need 1 <= min <= max")
        if self.palette_source not in PALETTE_SOURCES:
            raise InputShapeError(f"recipe: palette source {self.palette_source!r}; choose one of {PALETTE_SOURCES}")


@dataclass
class DrawnConditions:
    """A batch's colour condition and which samples train with the empty text."""

    condition: ColorCondition
    drop_text: Tensor
    kind_drawn: Tensor  # the kind before the colour drop (for statistics)


def median_cut_histogram(image: Tensor, size: int, resize: int | None) -> Tensor:
    """Palette histogram (uniform weights, paper §3.1) of a median cut of ``size`` colours of ``image [H,W,3]``."""
    pal = extract_palette(image, size=size, method="median_cut", resize=resize)
    return palette_histogram(pal.colors.float(), torch.full((pal.colors.shape[0],), 1.0 / pal.colors.shape[0]))


def draw_conditions(
    images: Tensor, recipe: Recipe, generator: torch.Generator, palettes: Sequence[Palette] | None = None
) -> DrawnConditions:
    """The docs/design.md §8 condition of each image of a batch ``[B, H, W, 3]`` in [0, 1].

    ``palettes``: each image's own palette, needed by (and only used with) ``recipe.palette_source="manifest"``.
    """
    b = images.shape[0]
    given = recipe.palette_source == "manifest"
    if given and (palettes is None or len(palettes) != b):
        got = "none" if palettes is None else len(palettes)
        raise InputShapeError(f"recipe: the manifest palette source needs one palette per image ({b}), got {got}")
    u = torch.rand(b, 4, generator=generator)  # kind, text/colour drop, distance drop, entropy drop
    sizes = torch.randint(recipe.palette_min, recipe.palette_max + 1, (b,), generator=generator)
    full = image_histogram(images.float()).reshape(b, NUM_BINS)
    kind = torch.where(
        u[:, 0] < recipe.p_palette,
        KIND_PALETTE,
        torch.where(u[:, 0] < recipe.p_palette + recipe.p_histogram, KIND_HISTOGRAM, KIND_NONE),
    )
    hist = torch.zeros(b, NUM_BINS)
    for i in range(b):
        if kind[i] == KIND_PALETTE and given:
            hist[i] = palettes[i].histogram().float()
        elif kind[i] == KIND_PALETTE:
            hist[i] = median_cut_histogram(images[i], int(sizes[i]), recipe.palette_resize)
        elif kind[i] == KIND_HISTOGRAM:
            hist[i] = full[i]
    qc, ent = image_scalars(full, hist)
    distance = torch.where(kind != KIND_NONE, qc, math.nan)  # an unconditioned sample has no distance
    distance = torch.where(u[:, 2] < recipe.p_drop_distance, math.nan, distance)
    ent = torch.where(u[:, 3] < recipe.p_drop_entropy, math.nan, ent)
    d = u[:, 1]
    drop_text = d < recipe.p_drop_text
    drop_color = (d >= recipe.p_drop_text) & (d < recipe.p_drop_text + recipe.p_drop_color)
    drop_both = (d >= recipe.p_drop_text + recipe.p_drop_color) & (
        d < recipe.p_drop_text + recipe.p_drop_color + recipe.p_drop_both
    )
    drop_text = drop_text | drop_both
    null = drop_color | drop_both
    hist[null] = 0.0
    out_kind = torch.where(null, KIND_NONE, kind)
    distance = torch.where(null, math.nan, distance)
    ent = torch.where(null, math.nan, ent)
    return DrawnConditions(ColorCondition(hist, out_kind.long(), distance, ent), drop_text, kind)
