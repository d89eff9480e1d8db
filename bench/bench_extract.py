"""Benchmark: extract_palette (k-means 5 colours, median cut 8 colours) against Pylette's extract_colors.

Same 1024 x 1024 photo (scikit-image's astronaut, bicubic-upscaled), same resize setting (256). Ours gets the
image as a ComfyUI IMAGE holds it (float32 tensor in [0, 1]); Pylette gets a PIL image, its native input.
Calls alternate; prints the best wall time of each, the speed-up (target >= 3x; ours on ``PALETTE_THREADS``
threads, by default the usable cores, Pylette on one, so ours on one thread too), the CPU time per call, the
same for Pylette with scikit-learn limited to one thread (its k-means threads stall on a shared, busy CPU,
which inflates the default-setting ratio), and the quantisation error of each palette on the resized
pixels (mean squared RGB distance to the nearest colour, sRGB in [0, 1]; target: ours <= Pylette's).

    python bench/bench_extract.py [--repeat 9] [--photo astronaut]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from _timing import report
from PIL import Image

from palette_core.extract import extract_palette, quantization_error, resized_pixels


def alternate(fns: list[Callable[[], object]], repeat: int) -> list[tuple[float, float]]:
    """(best wall seconds, mean CPU seconds) per function, calling them in turn after one warm-up each."""
    for fn in fns:
        fn()
    wall = [[] for _ in fns]
    cpu = [[] for _ in fns]
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[i].append(time.perf_counter() - w0)
            cpu[i].append(time.process_time() - c0)
    return [(min(w), float(np.mean(c))) for w, c in zip(wall, cpu)]


def case(label: str, size: int, method: str, mode: str, image, pil, px, repeat: int) -> None:
    from pylette import extract_colors
    from threadpoolctl import threadpool_limits

    def ours():
        return extract_palette(image, size=size, method=method, resize=256)

    def ours_one_thread():
        before = os.environ.get("PALETTE_THREADS")
        os.environ["PALETTE_THREADS"] = "1"  # the resample bands and the sorts on the calling thread only
        try:
            return ours()
        finally:
            if before is None:
                del os.environ["PALETTE_THREADS"]
            else:
                os.environ["PALETTE_THREADS"] = before

    def theirs():
        return extract_colors(pil, palette_size=size, resize=256, mode=mode)

    def theirs_one_thread():
        with threadpool_limits(1):  # scikit-learn's OpenMP threads off: its work without waiting on a busy CPU
            return theirs()

    fns = [ours, theirs, theirs_one_thread, ours_one_thread]
    (t_ours, c_ours), (t_theirs, c_theirs), (t_one, c_one), (t_ours1, _) = alternate(fns, repeat)
    report(f"{label} ({size} colours)", t_ours, t_theirs, "Pylette", ">= 3x")
    print(f"  CPU time per call: ours {c_ours * 1e3:.1f} ms, Pylette {c_theirs * 1e3:.1f} ms")
    print(f"  ours on 1 thread (PALETTE_THREADS=1): {t_ours1 * 1e3:.1f} ms, speed-up {t_theirs / t_ours1:.1f}x")
    print(
        f"  Pylette with scikit-learn on 1 thread: {t_one * 1e3:.1f} ms (CPU {c_one * 1e3:.1f} ms), "
        f"speed-up {t_one / t_ours:.1f}x"
    )
    theirs_rgb = np.array([c.rgb for c in theirs().colors], dtype=np.float64) / 255.0
    e_ours, e_theirs = quantization_error(px, ours().colors), quantization_error(px, theirs_rgb)
    ratio = e_ours / e_theirs
    print(f"  quantisation error: ours {e_ours:.6f}, Pylette {e_theirs:.6f}, ratio {ratio:.4f} (target <= 1)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--photo", default="astronaut", help="a scikit-image sample photo (skimage.data.<name>)")
    args = ap.parse_args()

    import skimage.data

    src = np.ascontiguousarray(getattr(skimage.data, args.photo)()[..., :3])
    pil = Image.fromarray(src).resize((1024, 1024), Image.Resampling.BICUBIC)
    u8 = np.array(pil)
    image = torch.from_numpy(u8).float() / 255.0  # [H, W, 3] float, as a ComfyUI IMAGE holds it
    px = resized_pixels(u8, 256)
    print(f"photo: {args.photo} upscaled to 1024x1024, resize=256, torch threads={torch.get_num_threads()}")
    case("k-means", 5, "kmeans", "KM", image, pil, px, args.repeat)
    case("median cut", 8, "median_cut", "MC", image, pil, px, args.repeat)


if __name__ == "__main__":
    main()
