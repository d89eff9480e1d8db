"""Recolouring benchmark: palette adherence against the Reinhard a*b* baseline, and speed.

For every photo x palette pair it reports, for our :func:`recolor` and for the fair baseline (Reinhard
statistics transfer on a*b* with L* kept, toward a stripes rendering of the same palette): the chroma
EMD (exact EMD between 1024 sampled pixels' a*b* and the palette's a*b* with its weights, lower is
better), the paper's RGB ``palette_emd``, and mean |dL*|. Then the time of a 1024x1024 recolour.

Run from the repository root: ``python bench/bench_recolor.py [--device cuda] [--size 512]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from _timing import best_of, report  # noqa: E402
from sample_photos import DESIGNER_PALETTES as PALETTES  # noqa: E402
from sample_photos import RECOLOR_PHOTOS as PHOTOS  # noqa: E402
from sample_photos import sample_photo  # noqa: E402

from palette_core import recolor as rc  # noqa: E402
from palette_core.distance import palette_emd  # noqa: E402
from palette_core.palette import Palette  # noqa: E402


def load_photo(name: str, size: int | None = None) -> torch.Tensor:
    """A scikit-image sample photo (the tests' loader) as float32 [H, W, 3], longer side resized to ``size``."""
    arr = sample_photo(name, size)
    if arr is None:
        raise SystemExit(f"scikit-image sample photo {name!r} is not available offline")
    return torch.from_numpy(arr.astype(np.float32) / 255.0)


def bench_adherence(size: int, device: str) -> None:
    rows = []
    print(
        f"{'photo':<18} {'palette':<13} {'chromaEMD ours':>14} {'reinhard':>9} {'input':>7}  "
        f"{'paletteEMD ours':>15} {'reinhard':>9}  {'|dL*| ours':>10} {'reinhard':>9}"
    )
    for photo in PHOTOS:
        img = load_photo(photo, size).to(device)
        for name, text in PALETTES.items():
            pal = Palette.parse(text)
            c, w = pal.colors.to(device), pal.weights.to(device)
            ours, base = rc.recolor(img, c, w), rc.reinhard_ab(img, c, w)
            row = (
                float(rc.chroma_emd(ours, c, w)),
                float(rc.chroma_emd(base, c, w)),
                float(rc.chroma_emd(img, c, w)),
                float(palette_emd(ours, c, w)),
                float(palette_emd(base, c, w)),
                float(rc.lightness_error(img, ours)),
                float(rc.lightness_error(img, base)),
            )
            rows.append(row)
            print(
                f"{photo:<18} {name:<13} {row[0]:>14.2f} {row[1]:>9.2f} {row[2]:>7.2f}  "
                f"{row[3]:>15.3f} {row[4]:>9.3f}  {row[5]:>10.4f} {row[6]:>9.4f}"
            )
    cols = list(zip(*rows))
    wins = sum(o < b for o, b in zip(cols[0], cols[1]))
    print(
        f"{'mean':<32} {statistics.mean(cols[0]):>14.2f} {statistics.mean(cols[1]):>9.2f} "
        f"{statistics.mean(cols[2]):>7.2f}  {statistics.mean(cols[3]):>15.3f} {statistics.mean(cols[4]):>9.3f}  "
        f"{statistics.mean(cols[5]):>10.4f} {statistics.mean(cols[6]):>9.4f}"
    )
    pe_wins = sum(o < b for o, b in zip(cols[3], cols[4]))
    print(
        f"chroma EMD lower than Reinhard in {wins}/{len(rows)} = {wins / len(rows):.0%} of pairs (target >= 80%), "
        f"mean ratio ours/Reinhard {statistics.mean(cols[0]) / statistics.mean(cols[1]):.2f} (target < 1); "
        f"palette_emd lower in {pe_wins}/{len(rows)}; max mean |dL*| {max(cols[5]):.4f} (target <= 0.5)"
    )


def bench_speed(device: str) -> None:
    img = load_photo("astronaut", 1024).to(device)  # 1024x1024, 8-bit levels as ComfyUI loads them
    pal = Palette.parse(PALETTES["ocean-sunset"])
    c, w = pal.colors.to(device), pal.weights.to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def timed(fn):
        def run():
            fn()
            sync()

        return best_of(run, repeat=7)

    def cpu_time(fn, repeat: int = 7) -> float:
        """Median process CPU time (all threads): unlike wall time, hardly moved by other jobs on the machine."""
        fn()
        times = []
        for _ in range(repeat):
            t0 = time.process_time()
            fn()
            times.append(time.process_time() - t0)
        return statistics.median(times)

    rc.recolor(img, c, w)  # builds the cached gamut table once
    ours = timed(lambda: rc.recolor(img, c, w))
    anchor = timed(lambda: rc.reinhard_ab(img, c, w))
    report(f"recolor 1024x1024 on {device}", ours, anchor, "Reinhard a*b* transfer", "<= 150 ms on CPU")
    if device == "cpu":
        print(
            f"  CPU time per call (median, all {torch.get_num_threads()} threads): "
            f"{cpu_time(lambda: rc.recolor(img, c, w)) * 1e3:.1f} ms"
        )
    lock_src = img.mean(-1, keepdim=True).expand(-1, -1, 3).contiguous()
    small = load_photo("coffee", 512).to(device)
    lock = timed(lambda: rc.lightness_lock(small, lock_src))
    print(f"lightness_lock 512 -> 1024x1024 on {device}: {lock * 1e3:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=512, help="longer side of the photos for the adherence table")
    parser.add_argument("--skip-table", action="store_true")
    args = parser.parse_args()
    if not args.skip_table:
        bench_adherence(args.size, args.device)
    bench_speed(args.device)


if __name__ == "__main__":
    main()
