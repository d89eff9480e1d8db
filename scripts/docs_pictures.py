"""Draw the before/after pictures of the docs from bundled scikit-image photos (no model, no network).

    python scripts/docs_pictures.py            # writes docs/images/{quantize,schemes,auto_negative}_strip.jpg

* ``quantize_strip.jpg`` (docs/craft.md): a photo and Palette Quantize to a 16-colour palette with each
  kind of dithering, and with 4-pixel pixel art;
* ``schemes_strip.jpg`` (docs/craft.md): one base colour and the palette of every scheme;
* ``auto_negative_strip.jpg`` (docs/training-free.md): a photo, Palette Guidance toward a palette (first pass,
  fast decoder), the automatic negative palette of that pass, and the second pass guided away from it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_recolor import PALETTES, load_photo  # noqa: E402

from palette_core.latent_rgb import fast_decode, fast_encode  # noqa: E402
from palette_core.negative import auto_negative  # noqa: E402
from palette_core.palette import Palette  # noqa: E402
from palette_core.quantize import quantize  # noqa: E402
from palette_core.render import palette_stripes  # noqa: E402
from palette_core.schemes import SCHEMES, palette_from_color  # noqa: E402
from palette_core.sw_guidance import guide  # noqa: E402

OUT = REPO / "docs" / "images"
LABEL_H = 22
# PICO-8's 16 colours: a palette pixel artists know
PICO8 = (
    "#000000, #1d2b53, #7e2553, #008751, #ab5236, #5f574f, #c2c3c7, #fff1e8, "
    "#ff004d, #ffa300, #ffec27, #00e436, #29adff, #83769c, #ff77a8, #ffccaa"
)


def to_pil(image: torch.Tensor | np.ndarray) -> Image.Image:
    arr = image.numpy() if isinstance(image, torch.Tensor) else image
    return Image.fromarray((np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8))


def strip(tiles: list[tuple[str, Image.Image]], gap: int = 6) -> Image.Image:
    """Tiles side by side on white, each with its label above it."""
    h = max(t.height for _, t in tiles)
    w = sum(t.width for _, t in tiles) + gap * (len(tiles) - 1)
    out = Image.new("RGB", (w, h + LABEL_H), "white")
    draw = ImageDraw.Draw(out)
    x = 0
    for label, tile in tiles:
        draw.text((x + 4, 4), label, fill=(30, 30, 30))
        out.paste(tile, (x, LABEL_H))
        x += tile.width + gap
    return out


def quantize_strip() -> Image.Image:
    photo = load_photo("chelsea", 256)
    pal = Palette.parse(PICO8)
    tiles = [("photo", to_pil(photo))]
    for dither in ("none", "floyd-steinberg", "bayer-8", "blue-noise"):
        tiles.append((dither, to_pil(quantize(photo, pal.colors, pal.weights, dither=dither))))
    pixel_art = quantize(photo, pal.colors, pal.weights, dither="none", pixel_size=4)
    tiles.append(("pixel_size 4", to_pil(pixel_art)))
    return strip(tiles)


def schemes_strip() -> Image.Image:
    base = "#e76f51"
    rows = []
    for scheme in SCHEMES:
        pal = palette_from_color(base, scheme, count=5)
        rows.append((scheme, to_pil(palette_stripes(pal.colors, pal.weights, height=28, width=300))))
    w = max(t.width for _, t in rows) + 150
    out = Image.new("RGB", (w, len(rows) * 34 + 6), "white")
    draw = ImageDraw.Draw(out)
    for i, (label, tile) in enumerate(rows):
        draw.text((6, 6 + i * 34 + 8), label, fill=(30, 30, 30))
        out.paste(tile, (150, 6 + i * 34))
    return out


def auto_negative_strip() -> Image.Image:
    photo = load_photo("motorcycle", 256)
    pal = Palette.parse(PALETTES["pastel"])
    z = fast_encode(photo.unsqueeze(0))
    first = fast_decode(guide(z, pal.colors, pal.weights, steps=8))[0].clamp(0, 1)
    negative, _ = auto_negative(first, pal)
    second = guide(
        z, pal.colors, pal.weights, steps=8, negative_colors=negative.colors, negative_weights=negative.weights
    )
    second = fast_decode(second)[0].clamp(0, 1)
    h = photo.shape[0]
    swatch = lambda p: to_pil(palette_stripes(p.colors, p.weights, height=h, width=64))  # noqa: E731
    return strip(
        [
            ("photo", to_pil(photo)),
            ("palette", swatch(pal)),
            ("first pass", to_pil(first)),
            ("negative", swatch(negative)),
            ("second pass", to_pil(second)),
        ]
    )


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, make in (
        ("quantize_strip", quantize_strip),
        ("schemes_strip", schemes_strip),
        ("auto_negative_strip", auto_negative_strip),
    ):
        path = OUT / f"{name}.jpg"
        make().save(path, quality=88)
        sys.stdout.write(f"wrote {path.relative_to(REPO)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
