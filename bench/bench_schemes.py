"""Palette craft benchmarks: OKLab against colour-science, the CSS Color 4 gamut mapping, schemes and edits.

Run from the repository root: ``python bench/bench_schemes.py [--device cuda]``. Each line is a ratio against
an anchor timed in the same run: colour-science's sRGB -> Oklab conversion; for the gamut mapping, the plain
conversion and clip of the same colours (so the ratio is what the chroma search costs on top); for the
palette functions, parsing a palette of the same size (what a node does anyway).
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

from palette_core.oklab import gamut_map_oklch, oklab_to_srgb, oklch_to_oklab, srgb_to_oklab  # noqa: E402
from palette_core.palette import Palette  # noqa: E402
from palette_core.schemes import edit_palette, merge_palettes, palette_from_color  # noqa: E402


def report_cost(name: str, ours: float, anchor: float, anchor_name: str) -> None:
    """One line for work that does more than its anchor: both times and ours as a multiple of the anchor."""
    ratio = ours / anchor
    print(f"{name}: ours {ours * 1e3:.2f} ms, {anchor_name} {anchor * 1e3:.2f} ms, cost {ratio:.1f}x the anchor")


def bench_oklab() -> None:
    rgb = np.random.default_rng(0).random((1_000_000, 3))
    ours = best_of(lambda: srgb_to_oklab(rgb), repeat=3)
    ref = best_of(lambda: colour.convert(rgb, "sRGB", "Oklab"), repeat=3)
    report("srgb_to_oklab 1e6 colours float64", ours, ref, "colour.convert sRGB -> Oklab", "info")
    diff = np.abs(srgb_to_oklab(rgb) - colour.convert(rgb, "sRGB", "Oklab")).max()
    print(f"  max |difference|: {diff:.2e} (colour-science goes through the 4-digit XYZ matrix)")


def bench_gamut_map(device: str) -> None:
    rng = np.random.default_rng(1)
    n = 100_000
    lch = np.stack((rng.random(n), rng.random(n) * 0.4, rng.random(n) * 360), -1)
    cases = [("numpy float64", lch)]
    cases.append((f"torch float32 {device}", torch.from_numpy(lch).float().to(device)))

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    for name, x in cases:
        clip = (lambda x=x: oklab_to_srgb(oklch_to_oklab(x)).clip(0, 1)) if isinstance(x, np.ndarray) else None
        if clip is None:

            def clip(x=x):
                out = oklab_to_srgb(oklch_to_oklab(x)).clamp(0, 1)
                sync()
                return out

        def mapped(x=x):
            out = gamut_map_oklch(x)
            sync()
            return out

        ours = best_of(mapped, repeat=3)
        ref = best_of(clip, repeat=3)
        report_cost(f"gamut_map_oklch 1e5 colours {name}", ours, ref, "convert + clip (no search)")


def bench_palettes() -> None:
    text = ", ".join(f"#{v:06x}" for v in np.random.default_rng(2).integers(0, 1 << 24, 256))
    big = Palette.parse(text)
    parse = best_of(lambda: Palette.parse(text), repeat=20)
    five = "#e63946, #f1faee, #a8dadc, #457b9d, #1d3557"
    parse5 = best_of(lambda: Palette.parse(five), repeat=50)
    scheme = best_of(lambda: palette_from_color("#e63946", "tetradic", 16, 0.4), repeat=50)
    report_cost("palette_from_color tetradic 16 colours", scheme, parse5, "Palette.parse of 5 colours")
    for op in ("sort_hue", "lighten", "saturate", "keep_heaviest"):
        t = best_of(lambda op=op: edit_palette(big, op, 0.2, 32), repeat=20)
        report_cost(f"edit_palette {op} 256 colours", t, parse, "Palette.parse of 256 colours")
    t = best_of(lambda: merge_palettes(big, big, 0.5), repeat=20)
    report_cost("merge_palettes 256 + 256 colours", t, parse, "Palette.parse of 256 colours")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}")
    bench_oklab()
    bench_gamut_map(args.device)
    bench_palettes()


if __name__ == "__main__":
    main()
