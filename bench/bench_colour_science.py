"""Foundation benchmarks: histogram, CIEDE2000, Quadratic-Chi and palette EMD against their anchors.

Run from the repository root: ``python bench/bench_colour_science.py [--device cuda] [--only-histogram]``. The
histogram and its anchor are called in turn (interleaved) so that both ratios come from the same load.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import colour
import numpy as np
import ot
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import best_of, report  # noqa: E402

from palette_core import distance, histogram  # noqa: E402
from palette_core.color import ciede2000  # noqa: E402


def _photo_1024() -> torch.Tensor:
    """scikit-image's astronaut photograph upscaled to 1024x1024, 8-bit as ComfyUI loads it."""
    from PIL import Image
    from skimage import data

    img = Image.fromarray(data.astronaut()).resize((1024, 1024), Image.BICUBIC)
    return torch.from_numpy(np.asarray(img).astype(np.float32) / 255.0)


def _histogramdd_anchor(arr: np.ndarray) -> np.ndarray:
    hsv = colour.RGB_to_HSV(arr).reshape(-1, 3)
    counts, _ = np.histogramdd(hsv, bins=histogram.HIST_SHAPE, range=((0, 1),) * 3)
    return counts.reshape(-1) / hsv.shape[0]


def interleaved(fns: list[Callable[[], object]], repeat: int) -> list[tuple[float, float]]:
    """(best, median) wall seconds per function, called in turn after one warm-up each: one run, same load."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - t0)
    return [(min(t), statistics.median(t)) for t in times]


def bench_histogram(repeat: int) -> None:
    histogram._uint8_lut()  # the one-off table build is reported separately below
    cases = [
        ("8-bit photo", _photo_1024()),
        ("continuous floats", torch.rand(1024, 1024, 3, generator=torch.Generator().manual_seed(0))),
    ]
    for name, img in cases:
        arr = img.numpy().astype(np.float64)
        (ours, ours_med), (ref, ref_med) = interleaved(
            [lambda img=img: histogram.image_histogram(img), lambda arr=arr: _histogramdd_anchor(arr)], repeat
        )
        report(f"image_histogram 1024x1024 {name}", ours, ref, "colour RGB_to_HSV + histogramdd", ">= 10x")
        print(
            f"  interleaved, {repeat} calls each: medians ours {ours_med * 1e3:.1f} ms, anchor {ref_med * 1e3:.1f} ms "
            f"-> {ref_med / ours_med:.1f}x"
        )
        diff = np.abs(histogram.image_histogram(img).numpy() - _histogramdd_anchor(arr)).max()
        print(f"  max |difference| of the histograms: {diff:.2e}")
    histogram._uint8_lut.cache_clear()
    t0 = time.perf_counter()
    histogram._uint8_lut()
    print(f"  one-off 8-bit lookup table build: {time.perf_counter() - t0:.2f} s")


def bench_ciede2000() -> None:
    g = torch.Generator().manual_seed(1)
    scale, shift = torch.tensor([100.0, 256, 256]), torch.tensor([0.0, 128, 128])
    a = torch.rand(1_000_000, 3, generator=g, dtype=torch.float64) * scale - shift
    b = torch.rand(1_000_000, 3, generator=g, dtype=torch.float64) * scale - shift
    an, bn = a.numpy(), b.numpy()
    ours = best_of(lambda: ciede2000(a, b), repeat=3)
    ref = best_of(lambda: colour.delta_E(an, bn, method="CIE 2000"), repeat=3)
    report("ciede2000 1e6 pairs float64", ours, ref, "colour.delta_E CIE 2000", ">= 3x")
    ours32 = best_of(lambda: ciede2000(a.float(), b.float()), repeat=3)
    report("ciede2000 1e6 pairs float32", ours32, ref, "colour.delta_E (float64)", "info")


def bench_quadratic_chi(device: str) -> None:
    distance._similarity_cached.cache_clear()
    distance._clipped_similarity_coo.cache_clear()
    t0 = time.perf_counter()
    distance.bin_similarity()
    print(f"bin_similarity first build: {time.perf_counter() - t0:.2f} s (target <= 3 s)")
    g = torch.Generator().manual_seed(2)
    p = histogram.image_histogram(torch.rand(256, 256, 3, generator=g))
    q = histogram.palette_histogram(torch.rand(5, 3, generator=g))
    one = best_of(lambda: distance.quadratic_chi(p, q), repeat=20)
    print(f"quadratic_chi one pair (image vs palette), cpu: {one * 1e3:.2f} ms (target <= 5 ms)")
    pb = histogram.image_histogram(torch.rand(64, 64, 64, 3, generator=g))
    qb = histogram.palette_histogram(torch.rand(64, 5, 3, generator=g))
    batch = best_of(lambda: distance.quadratic_chi(pb, qb), repeat=5)
    print(f"quadratic_chi batch of 64 pairs, cpu: {batch * 1e3:.1f} ms ({batch / 64 * 1e3:.2f} ms per pair)")
    if device != "cpu":
        pd, qd = pb.to(device), qb.to(device)

        def run() -> None:
            distance.quadratic_chi(pd, qd)
            torch.cuda.synchronize()

        t = best_of(run, repeat=20)
        print(f"quadratic_chi batch of 64 pairs, {device}: {t * 1e3:.2f} ms")


def bench_palette_emd() -> None:
    g = torch.Generator().manual_seed(3)
    img = torch.rand(512, 512, 3, generator=g)
    colors = torch.rand(5, 3, generator=g)

    def anchor() -> float:
        pixels = img.reshape(-1, 3).double()
        idx = torch.randint(0, pixels.shape[0], (1024,), generator=torch.Generator().manual_seed(0))
        x = pixels[idx].numpy()
        cost = ot.dist(x, colors.double().numpy(), metric="euclidean")
        return float(ot.emd2(np.full(1024, 1 / 1024), np.full(5, 0.2), cost))

    ours = best_of(lambda: distance.palette_emd(img, colors), repeat=10)
    ref = best_of(anchor, repeat=10)
    report("palette_emd 1024 samples x 5 colours", ours, ref, "direct POT protocol", "same value")
    print(f"  values: ours {float(distance.palette_emd(img, colors)):.6f}, POT {anchor():.6f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeat", type=int, default=7, help="interleaved calls per histogram case")
    parser.add_argument("--only-histogram", action="store_true", help="skip CIEDE2000, Quadratic-Chi and EMD")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}")
    bench_histogram(args.repeat)
    if args.only_histogram:
        return
    bench_ciede2000()
    bench_quadratic_chi(args.device)
    bench_palette_emd()


if __name__ == "__main__":
    main()
