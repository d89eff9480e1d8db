"""Palette adherence and colour-name benchmarks (docs/palettes.md, "Palette adherence in the graph").

Run from the repository root: ``python bench/bench_adherence.py [--device cuda]``. Each line is a ratio against
an anchor timed in the same run:

* the off-palette map (:func:`palette_core.adherence.nearest_delta_e`) on a 512x512 photo against
  colour-science's CIEDE2000 of every pixel to every palette colour (the plain way), and against the same
  plain computation with palette_core's float64 ``ciede2000`` (what the distinct-colour trick saves);
* the Palette Adherence node's work (EMD, Quadratic-Chi with the similarity matrix already built, the map
  and the marked image) against the EMD alone (the paper's metric, which the node computes anyway);
* naming a 5-colour palette against parsing it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import colour
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import best_of, report  # noqa: E402

from palette_core.adherence import mark_off_palette, nearest_delta_e, palette_adherence  # noqa: E402
from palette_core.color import ciede2000, srgb_to_lab  # noqa: E402
from palette_core.color_names import name_palette, xkcd_names  # noqa: E402
from palette_core.distance import bin_similarity, palette_emd  # noqa: E402
from palette_core.image_file import read_image  # noqa: E402
from palette_core.palette import Palette  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO / "workflows" / "input" / "palette_example_astronaut.jpg"
PALETTE = "#e63946:2, #f1faee, #a8dadc, #457b9d, #1d3557"
D65 = np.array([0.3127, 0.3290])


def report_cost(name: str, ours: float, anchor: float, anchor_name: str) -> None:
    """One line for work that does more than its anchor: both times and ours as a multiple of the anchor."""
    cost = ours / anchor
    print(f"{name}: ours {ours * 1e3:.1f} ms, {anchor_name} {anchor * 1e3:.1f} ms, cost {cost:.1f}x the anchor")


def bench_map(device: str) -> None:
    p = Palette.parse(PALETTE)
    photo = torch.from_numpy(read_image(PHOTO))[None].to(device)
    pixels = photo[0].double().cpu().numpy()
    ref_lab = colour.XYZ_to_Lab(colour.sRGB_to_XYZ(p.colors_array.astype(np.float64)), illuminant=D65)

    def with_colour_science():
        lab = colour.XYZ_to_Lab(colour.sRGB_to_XYZ(pixels), illuminant=D65)
        return colour.delta_E(lab[..., None, :], ref_lab, method="CIE 2000").min(-1)

    def plain_palette_core():
        lab = srgb_to_lab(photo.double())
        return ciede2000(lab[..., None, :], srgb_to_lab(p.colors.double().to(device))).amin(-1)

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def ours_fn():
        out = nearest_delta_e(photo, p.colors, p.weights)
        sync()
        return out

    distinct = int(torch.unique((photo * 255).round().reshape(-1, 3), dim=0).shape[0])
    print(f"photo {PHOTO.name}: {photo.shape[1]}x{photo.shape[2]}, {distinct} distinct colours, 5-colour palette")
    ours = best_of(ours_fn, repeat=3)
    ref = best_of(with_colour_science, repeat=1)
    report(f"off-palette map ({device})", ours, ref, "colour-science dE2000 per pixel", "> 1x")
    plain = best_of(plain_palette_core, repeat=1)
    report(f"off-palette map ({device})", ours, plain, "palette_core float64 dE2000 per pixel", "> 1x")
    diff = np.abs(ours_fn().cpu().numpy()[0] - with_colour_science()).max()
    print(f"  max |difference| to colour-science: {diff:.2e} (8-bit levels, float32 dE)")


def bench_node(device: str) -> None:
    p = Palette.parse(PALETTE)
    photo = torch.from_numpy(read_image(PHOTO))[None].to(device)
    bin_similarity(dtype=torch.float32, device=device)  # built once per process (docs/palettes.md)

    def node():
        scores = palette_adherence(photo, p.colors, p.weights)
        return mark_off_palette(photo, scores.delta_e > scores.threshold)

    ours = best_of(node, repeat=3)
    emd = best_of(lambda: palette_emd(photo, p.colors, p.weights), repeat=3)
    report_cost("Palette Adherence node work, one 512x512 photo", ours, emd, "palette_emd alone")


def bench_names() -> None:
    p = Palette.parse(PALETTE)
    xkcd_names()
    ours = best_of(lambda: name_palette(p.colors_array, p.weights_array), repeat=20)
    parse = best_of(lambda: Palette.parse(PALETTE), repeat=50)
    report_cost("name a 5-colour palette (921 names)", ours, parse, "Palette.parse of it")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="torch device for the map (default cpu)")
    args = parser.parse_args()
    torch.manual_seed(0)
    bench_map(args.device)
    bench_node(args.device)
    bench_names()


if __name__ == "__main__":
    main()
