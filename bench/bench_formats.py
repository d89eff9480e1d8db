"""Palette files of many colours: reading time against independent readers, and what a big palette costs.

Run from the repository root: ``python bench/bench_formats.py [--colours 16384] [--runs 7]``.

* Reading a file of ``--colours`` colours (the most a file may hold) as GIMP (``.gpl``), Illustrator
  (``.ase``, RGB) and Photoshop (``.aco``, versions 1 and 2 with names) write it, against the independent
  readers the tests use: Pillow's ``GimpPaletteFile``, ``swatch`` (ASE, structure only, no colour
  conversion) and ``adobe-color-swatch`` (ACO). The cases run interleaved (a busy spell hits all alike);
  each line gives the best time and the ratio to its anchor. Target: within 3x of each anchor (ours
  also checks every field and converts every colour).
* ``palette_emd`` (``palette evaluate``) against 256, 4096 and 16384 colours, one 256x256 image, as
  ratios to the 256-colour time: it solves an exact transport problem over every colour, so it grows
  with the palette; docs/palettes.md quotes these.
"""

from __future__ import annotations

import argparse
import io
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from palette_core import formats as F  # noqa: E402
from palette_core.palette import Palette  # noqa: E402


class _KeepOpen(io.BytesIO):
    def close(self) -> None:  # adobe-color-swatch closes the file it is given
        pass


def _aco(rgb: np.ndarray) -> bytes:
    levels = (rgb * 257).astype(int).tolist()
    out = struct.pack(">HH", 1, len(levels)) + b"".join(struct.pack(">5H", 0, *c, 0) for c in levels)
    out += struct.pack(">HH", 2, len(levels))
    for i, c in enumerate(levels):
        name = f"Colour {i}".encode("utf-16-be")
        out += struct.pack(">5H", 0, *c, 0) + struct.pack(">I", len(name) // 2 + 1) + name + b"\x00\x00"
    return out


def _interleaved(cases: dict[str, Callable[[], object]], runs: int) -> dict[str, float]:
    best = {name: float("inf") for name in cases}
    for fn in cases.values():
        fn()  # warm-up
    for _ in range(runs):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def bench_reading(colours: int, runs: int) -> None:
    from PIL.GimpPaletteFile import GimpPaletteFile

    rgb = np.random.default_rng(0).integers(0, 256, (colours, 3))
    palette = Palette.from_colors(rgb.astype(np.float32) / 255)
    gpl, ase, aco = F.encode(palette, "gpl"), F.encode(palette, "ase"), _aco(rgb)
    cases: dict[str, Callable[[], object]] = {
        "gpl ours": lambda: F.decode(gpl, "gpl"),
        "gpl Pillow GimpPaletteFile": lambda: GimpPaletteFile.frombytes(gpl),
        "ase ours": lambda: F.decode(ase, "ase"),
        "aco ours": lambda: F.decode(aco, "aco"),
    }
    try:
        from swatch import parser

        def swatch_ase() -> list:
            fd = io.BytesIO(ase)
            fd.seek(12)
            return list(parser.parse_chunk(fd))

        cases["ase swatch.parser"] = swatch_ase
    except ImportError:
        print("swatch is not installed: no ASE anchor")
    try:
        from swatch import swatch as acs

        cases["aco adobe-color-swatch"] = lambda: acs.load_aco_file(_KeepOpen(aco))
    except ImportError:
        print("adobe-color-swatch is not installed: no ACO anchor")
    best = _interleaved(cases, runs)
    anchors = {"gpl": "gpl Pillow GimpPaletteFile", "ase": "ase swatch.parser", "aco": "aco adobe-color-swatch"}
    print(f"reading a {colours}-colour file (best of {runs}, interleaved):")
    for fmt, anchor in anchors.items():
        ours = best[f"{fmt} ours"]
        line = f"  {fmt}: ours {ours * 1e3:.1f} ms"
        if anchor in best:
            line += f", {anchor} {best[anchor] * 1e3:.1f} ms, ours / anchor {ours / best[anchor]:.2f} (target <= 3)"
        print(line)


def bench_emd(runs: int) -> None:
    import torch

    from palette_core.distance import palette_emd

    g = torch.Generator().manual_seed(0)
    image = torch.rand(256, 256, 3, generator=g)
    cases = {}
    for n in (256, 4096, 16384):
        colours, weights = torch.rand(n, 3, generator=g), torch.full((n,), 1.0 / n)
        cases[n] = lambda c=colours, w=weights: palette_emd(image, c, w)
    best = _interleaved({str(n): fn for n, fn in cases.items()}, max(1, runs // 3))
    print("palette_emd of one image against N colours (1024 pixel samples):")
    for n in cases:
        print(f"  N = {n:5d}: {best[str(n)]:.3f} s, {best[str(n)] / best['256']:.1f}x the 256-colour time")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--colours", type=int, default=16384, help="colours in each file (default 16384)")
    ap.add_argument("--runs", type=int, default=7, help="timed rounds (default 7)")
    ap.add_argument("--no-emd", action="store_true", help="skip the palette_emd timings")
    args = ap.parse_args()
    bench_reading(args.colours, args.runs)
    if not args.no_emd:
        bench_emd(args.runs)


if __name__ == "__main__":
    main()
