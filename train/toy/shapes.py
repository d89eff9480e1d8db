"""Synthetic training images: flat-coloured shapes drawn from a random palette, some with texture.

Each image takes a random palette of 3-5 colours: the first fills the background, the others fill 2-4
rectangles and ellipses. Half of the images get smooth light-dark blotches and a shading gradient, so the set spans
low-entropy (flat) and high-entropy (textured) colour histograms, which the entropy control needs.

Two captions: ``caption`` names only the shapes ("three circle rectangle"); ``color_caption`` adds the
exact colours as ``#rrggbb`` words and the texture ("bg-#2b4d17 #e65c2f #52221c three circle rectangle flat").
The base model learns from the second, so that, as in SDXL, its cross-attention understands colour (the
word vectors of :class:`~train.toy.parts.WordText` place near colours near each other, as a text encoder places
"crimson" near "red"); the adapter trains with the first, so the colours have to come from the palette and
the texture from the entropy setting.
"""

from __future__ import annotations

import colorsys
import json
from pathlib import Path

import numpy as np
from PIL import Image

from palette_core.palette import to_hex


def random_palette(rng: np.random.Generator, k: int | None = None) -> np.ndarray:
    """``[k, 3]`` sRGB colours in [0, 1] (k = 3-5): uniform hue, mid-to-high saturation and value."""
    k = int(rng.integers(3, 6)) if k is None else k
    hsv = np.stack([rng.random(k), rng.uniform(0.25, 1.0, k), rng.uniform(0.3, 1.0, k)], axis=-1)
    return np.array([colorsys.hsv_to_rgb(*c) for c in hsv], dtype=np.float64)


_COUNTS = ("zero", "one", "two", "three", "four", "five")


def _upsample(grid: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling of a ``[k, k, C]`` grid to ``[size, size, C]``."""
    k = grid.shape[0]
    pos = (np.arange(size) + 0.5) * k / size - 0.5
    i0 = np.clip(np.floor(pos).astype(int), 0, k - 1)
    i1 = np.clip(i0 + 1, 0, k - 1)
    f = np.clip(pos - i0, 0.0, 1.0)
    rows = grid[i0] * (1 - f)[:, None, None] + grid[i1] * f[:, None, None]
    return rows[:, i0] * (1 - f)[None, :, None] + rows[:, i1] * f[None, :, None]


def draw(
    palette: np.ndarray, rng: np.random.Generator, size: int = 32, textured: bool | None = None
) -> tuple[np.ndarray, str, str]:
    """An ``[size, size, 3]`` uint8 image of shapes in the palette's colours, its shape and colour captions."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.empty((size, size, 3))
    img[:] = palette[0]
    n_shapes = int(rng.integers(len(palette) - 1, 5))  # every colour shows (a shape may hide another)
    kinds = set()
    for s in range(n_shapes):
        colour = palette[1 + s % (len(palette) - 1)]
        cx, cy = rng.uniform(0.15, 0.85, 2)
        rx, ry = rng.uniform(0.15, 0.4, 2)
        if rng.random() < 0.5:
            mask = (np.abs(xx - cx) < rx) & (np.abs(yy - cy) < ry)
            kinds.add("rectangle")
        else:
            mask = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1.0
            kinds.add("circle")
        img[mask] = colour
    textured = textured if textured is not None else bool(rng.random() < 0.5)
    caption = " ".join([_COUNTS[n_shapes], *sorted(kinds)])
    colours = dict.fromkeys(to_hex(palette[1 + s % (len(palette) - 1)]) for s in range(n_shapes))
    color_caption = " ".join([f"bg-{to_hex(palette[0])}", *colours, caption, "textured" if textured else "flat"])
    if textured:
        angle = rng.uniform(0, 2 * np.pi)
        ramp = (np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5))[..., None]
        # smooth light/dark blotches (4 x 4 noise, bilinearly upsampled, the same in R, G and B): many shades,
        # as the entropy control needs, but neither pixel noise nor colour noise, which a small model cannot
        # tell from the diffusion noise (it then keeps the sampling noise as colour blotches)
        blotches = _upsample(rng.normal(0.0, 1.0, (4, 4, 1)), size)
        img = img * (1.0 + 0.5 * ramp) + rng.uniform(0.04, 0.1) * blotches
    return (np.clip(img, 0.0, 1.0) * 255.0).round().astype(np.uint8), caption, color_caption


def write_dataset(folder: str | Path, n: int, size: int = 32, seed: int = 0, broken: int = 0) -> Path:
    """``n`` PNGs and ``manifest.jsonl`` in ``folder``; ``broken`` extra unreadable/tiny files to be skipped."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        pal = random_palette(rng)
        name = f"images/{i:06d}.png"
        image, caption, color_caption = draw(pal, rng, size)
        Image.fromarray(image).save(folder / name)
        palette = [[round(float(v), 4) for v in c] for c in pal]
        rows.append({"image": name, "caption": caption, "color_caption": color_caption, "palette": palette})
    for j in range(broken):
        name = f"images/broken-{j}.png"
        if j % 2 == 0:
            (folder / name).write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
        else:
            Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(folder / name)  # far below the minimum size
        rows.append({"image": name, "caption": ""})
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest
