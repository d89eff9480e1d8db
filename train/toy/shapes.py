"""Synthetic training images: flat-coloured shapes drawn from a random palette, half of them shaded.

A deliberately narrow set that a small base model can learn on a CPU (docs/training.md "Toy run"): each
image takes a random palette of 3 vivid colours; the first fills the background, the other two fill one
rectangle or ellipse each, side by side at fixed places and sizes. Half of the images are shaded by one
fixed smooth field (a lightness ramp from top to bottom and a fade towards grey from left to right): many
histogram bins (about 5 bits of entropy against 1 for a flat image) from a pattern the base can draw on
command, where random textures gave a base that drew noise.

Narrow on purpose, because the entropy claims are read off the small base's samples: with the layout fixed
the base's samples are cleaner (it need not decide per pixel where a shape ends), and a vivid colour's
histogram bin is wide in RGB, where a dark or greyish colour's hue and saturation bins are so narrow that
the base's pixel noise scatters it over many (flat images under Gaussian noise of sigma 0.03 gain 2.2 bits
with vivid colours, 2.9 with saturation and value down to 0.25 and 0.3).

Two captions: ``caption`` names only the shapes ("two circle rectangle"); ``color_caption`` adds the
exact colours as ``#rrggbb`` words and the texture ("bg-#2b4d17 #e65c2f #52221c two circle rectangle flat").
The base model learns from the second, so that, as in SDXL, its cross-attention understands colour (the
word vectors of :class:`~train.toy.parts.WordText` place near colours near each other, as a text encoder places
"crimson" near "red"); the adapter trains with the first, so the colours have to come from the palette and
the texture from the entropy setting. Each manifest row also names the palette its image was drawn in
(``palette``), the adapter's condition: the same for a flat and a shaded image. Its colours weigh the same
(the paper's palettes), or, with ``palette_weights="area"``, the share of the scene each fills (an ablation:
docs/training.md "What limits the colours").
"""

from __future__ import annotations

import colorsys
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from palette_core.palette import Palette, to_hex

SATURATION = VALUE = (0.6, 1.0)  # vivid colours: their histogram bins are wide in RGB (module docstring)


def random_palette(rng: np.random.Generator, k: int | None = None) -> np.ndarray:
    """``[k, 3]`` sRGB colours in [0, 1] (k = 3 unless given): uniform hue, saturation and value in [0.6, 1]."""
    k = 3 if k is None else k
    hsv = np.stack([rng.random(k), rng.uniform(*SATURATION, k), rng.uniform(*VALUE, k)], axis=-1)
    return np.array([colorsys.hsv_to_rgb(*c) for c in hsv], dtype=np.float64)


SHAPE_WIDTH, SHAPE_HEIGHT = 0.34, 0.25  # half-extents: of the shape's strip, of the image
_COUNTS = ("zero", "one", "two", "three", "four", "five")
TEXTURE_LIGHTNESS = 0.9  # lightness ramp of a textured image: x (1 - a/2 + a y) from top to bottom
TEXTURE_GREY = 0.6  # and a blend towards each pixel's grey (its channel mean) rising to this from left to right


PALETTE_WEIGHTS = ("equal", "area")  # a manifest palette's weights: the paper's equal ones, or each colour's area


class Scene(NamedTuple):
    """One drawn image: ``[size, size, 3]`` uint8, its captions, and the share of the scene each colour fills."""

    image: np.ndarray
    caption: str
    color_caption: str
    areas: np.ndarray


def draw(palette: np.ndarray, rng: np.random.Generator, size: int = 16, textured: bool | None = None) -> Scene:
    """An image of shapes in the palette's colours, its shape and colour captions, and each colour's area.

    One shape (rectangle or ellipse) per colour after the first, centred in its own vertical strip of the
    image at a fixed size, so that all show and only the kinds of shape vary; the first colour fills the
    background. ``areas [k]``: the share of pixels each colour fills before shading (sums to 1).
    """
    yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size
    img = np.empty((size, size, 3))
    img[:] = palette[0]
    labels = np.zeros((size, size), dtype=np.int64)
    n_shapes = len(palette) - 1
    kinds = set()
    for s in range(n_shapes):
        left, width = s / n_shapes, 1.0 / n_shapes
        cx, cy, rx, ry = left + width / 2, 0.5, width * SHAPE_WIDTH, SHAPE_HEIGHT
        if rng.random() < 0.5:
            mask = (np.abs(xx - cx) < rx) & (np.abs(yy - cy) < ry)
            kinds.add("rectangle")
        else:
            mask = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1.0
            kinds.add("circle")
        img[mask] = palette[1 + s]
        labels[mask] = 1 + s
    textured = textured if textured is not None else bool(rng.random() < 0.5)
    caption = " ".join([_COUNTS[n_shapes], *sorted(kinds)])
    colours = dict.fromkeys(to_hex(c) for c in palette[1:])
    color_caption = " ".join([f"bg-{to_hex(palette[0])}", *colours, caption, "textured" if textured else "flat"])
    if textured:
        # one fixed, smooth shading field: many histogram bins (entropy ~4.8 bits against ~1 flat), and
        # nothing a small model must tell from the diffusion noise (per-pixel or random textures it cannot)
        img = img * (1.0 - TEXTURE_LIGHTNESS / 2 + TEXTURE_LIGHTNESS * yy)[..., None]
        grey = TEXTURE_GREY * xx[..., None]
        img = img * (1.0 - grey) + grey * img.mean(-1, keepdims=True)
    areas = np.bincount(labels.ravel(), minlength=len(palette)) / labels.size
    return Scene((np.clip(img, 0.0, 1.0) * 255.0).round().astype(np.uint8), caption, color_caption, areas)


def write_dataset(
    folder: str | Path, n: int, size: int = 32, seed: int = 0, broken: int = 0, palette_weights: str = "equal"
) -> Path:
    """``n`` PNGs and ``manifest.jsonl`` in ``folder``; ``broken`` extra unreadable/tiny files to be skipped.

    ``palette_weights``: each row's palette in equal weights (``[r, g, b]`` lists), or weighted by the area
    each colour fills (``{"hex", "weight"}`` objects); the images are the same either way.
    """
    if palette_weights not in PALETTE_WEIGHTS:
        raise ValueError(f"palette_weights {palette_weights!r}: choose one of {', '.join(PALETTE_WEIGHTS)}")
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        pal = random_palette(rng)
        name = f"images/{i:06d}.png"
        image, caption, color_caption, areas = draw(pal, rng, size)
        Image.fromarray(image).save(folder / name)
        if palette_weights == "area":
            palette = Palette.from_colors(pal, areas).to_json()
        else:
            palette = [[round(float(v), 4) for v in c] for c in pal]
        rows.append({"image": name, "caption": caption, "color_caption": color_caption, "palette": palette})
    for j in range(broken):
        name = f"images/broken-{j}.png"
        if j % 2 == 0:
            (folder / name).write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
        else:
            Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(folder / name)  # far below any minimum size
        rows.append({"image": name, "caption": "", "palette": "#808080"})  # a good row; the file is what is broken
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest
