"""Benchmark of ``python -m palette_core evaluate``: images per second over a folder of 100 photos.

Run from the repository root: ``python bench/bench_evaluate.py [--images 100] [--side 512]``. The images
are crops of scikit-image's sample photographs saved as PNG; the palette is a 5-colour one. The
one-off set-up (bin-similarity matrix, 8-bit histogram table) is done before timing and reported apart.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import palette_cli.main as cli  # noqa: E402
from palette_core.distance import bin_similarity  # noqa: E402
from palette_core.histogram import image_histogram  # noqa: E402

PALETTE = "#264653, #2a9d8f, #e9c46a, #f4a261, #e76f51"


def _photos(folder: Path, count: int, side: int) -> None:
    from skimage import data

    sources = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.immunohistochemistry()]
    rng = np.random.default_rng(0)
    for i in range(count):
        src = Image.fromarray(sources[i % len(sources)]).resize((side * 2, side * 2), Image.BICUBIC)
        x, y = rng.integers(0, side, 2)
        Image.fromarray(np.asarray(src)[y : y + side, x : x + side]).save(folder / f"{i:03d}.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--side", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        _photos(folder, args.images, args.side)
        t0 = time.perf_counter()
        bin_similarity()
        image_histogram(np.zeros((args.side, args.side, 3), np.uint8))
        setup = time.perf_counter() - t0
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                code = cli.main(["evaluate", "--images", str(folder), "--palette", PALETTE, "--out", f"{d}/r.csv"])
            times.append(time.perf_counter() - t0)
            assert code == 0
    best = min(times)
    print(
        f"evaluate: {args.images} images of {args.side}x{args.side} in {best:.2f} s = "
        f"{args.images / best:.1f} images/s (best of {args.repeat}); one-off set-up {setup:.1f} s"
    )


if __name__ == "__main__":
    main()
