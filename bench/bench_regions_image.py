"""Cost of a region mask on the image operations: masked vs unmasked on a 1-megapixel photo (docs/regions.md).

Palette Recolor (palette_core.recolor.recolor), Luminance Lock (lightness_lock) and Palette From Image
(extract_palette, k-means and median cut) each run unmasked and with three masks: all ones (the same
pixels and result as unmasked: the mask's own overhead), the left half with a soft seam, and a soft disc
over most of the image (every slice of pixels has edge pixels to blend: the worst case for the blend). A
region is another extraction problem than the whole image (k-means may take more or fewer iterations),
so for extraction the ones mask is the measure of the overhead. The variants of one operation run interleaved
round by round on the same photo (drift hits all alike), and each round's masked time is divided by the
same round's unmasked time. Printed: median wall and process CPU ms, and the medians of those ratios
(the target: a masked node costs <= 10 % more than the unmasked one, ratio <= 1.10). On a shared machine
the CPU-time ratio is the steadier one (run with ``--threads 1`` there: waiting threads burn CPU time).

Run from the repository root: ``python bench/bench_regions_image.py [--side 1024] [--rounds 9] [--threads 1]``
(``--device cuda`` for the recolour and the lock on a GPU; extraction runs on the CPU either way).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_recolor import load_photo  # noqa: E402

from palette_core import extract as ex  # noqa: E402
from palette_core import recolor as rc  # noqa: E402
from palette_core.palette import Palette  # noqa: E402

PALETTE = Palette.parse("#264653, #2a9d8f, #e9c46a, #f4a261, #e76f51")


def masks(h: int, w: int, device: str) -> dict[str, torch.Tensor]:
    """A mask of ones, the left half with a soft 5 % seam, a soft disc of 0.9 the half-diagonal (10 % ramp)."""
    x = (torch.arange(w) + 0.5) / w
    half = ((0.5 - x) / 0.05 + 0.5).clamp(0, 1).expand(h, w).contiguous()
    yy, xx = torch.meshgrid((torch.arange(h) + 0.5) / h, x, indexing="ij")
    r = ((yy - 0.5) ** 2 + (xx - 0.5) ** 2).sqrt() / (0.5 * 2**0.5)
    disc = ((0.9 - r) / 0.1).clamp(0, 1)
    return {"ones": torch.ones(h, w, device=device), "half": half.to(device), "disc": disc.to(device)}


def interleaved(variants: dict[str, Callable[[], object]], rounds: int, sync: Callable[[], None]) -> dict:
    """``(wall, process CPU)`` seconds per variant per round; the order rotates each round (after a warm-up call)."""
    for fn in variants.values():
        fn()
    sync()
    labels = list(variants)
    times: dict[str, list[tuple[float, float]]] = {label: [] for label in labels}
    for r in range(rounds):
        for label in labels[r % len(labels) :] + labels[: r % len(labels)]:
            t0, c0 = time.perf_counter(), time.process_time()
            variants[label]()
            sync()
            times[label].append((time.perf_counter() - t0, time.process_time() - c0))
    return times


def report(op: str, times: dict[str, list[tuple[float, float]]]) -> list[float]:
    """Print each variant's median ms and median per-round ratios to the unmasked run; return the CPU ratios.

    CPU time (all threads of this process) is hardly moved by other jobs on a shared machine; wall time is.
    """
    base = times["unmasked"]
    ratios = []
    for label, t in times.items():
        wall, cpu = statistics.median(w for w, _ in t), statistics.median(c for _, c in t)
        line = f"{op:<22} {label:<10} {wall * 1e3:>9.1f} {cpu * 1e3:>8.1f}"
        if label != "unmasked":
            r_wall = statistics.median(m[0] / u[0] for m, u in zip(t, base))
            r_cpu = statistics.median(m[1] / u[1] for m, u in zip(t, base))
            ratios.append(r_cpu)
            line += f" {r_wall:>10.3f} {r_cpu:>9.3f}"
        print(line)
    return ratios


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--side", type=int, default=1024, help="the photo's side in pixels (1024: one megapixel)")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads (1 on a busy CPU)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    img = load_photo("astronaut", a.side).to(a.device)
    grey = img.mean(-1, keepdim=True).expand(-1, -1, 3).contiguous()
    colour = img.flip(1).contiguous()
    c, w = PALETTE.colors.to(a.device), PALETTE.weights.to(a.device)
    regions = masks(*img.shape[:2], a.device)
    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)
    ops: dict[str, Callable[[torch.Tensor | None], object]] = {
        "Palette Recolor": lambda m: rc.recolor(img, c, w, mask=m),
        "Luminance Lock": lambda m: rc.lightness_lock(colour, grey, mask=m),
        "From Image kmeans": lambda m: ex.extract_palette(img, 5, "kmeans", mask=m),
        "From Image median_cut": lambda m: ex.extract_palette(img, 5, "median_cut", mask=m),
    }
    print(f"== astronaut {img.shape[1]}x{img.shape[0]}, {a.device}, torch threads {a.threads}, {a.rounds} rounds")
    print(f"{'operation':<22} {'mask':<10} {'wall ms':>9} {'CPU ms':>8} {'wall ratio':>10} {'CPU ratio':>9}")
    worst = []
    for op, fn in ops.items():
        variants = {"unmasked": lambda fn=fn: fn(None)}
        variants.update({label: (lambda fn=fn, m=m: fn(m)) for label, m in regions.items()})
        worst += report(op, interleaved(variants, a.rounds, sync))
    print(f"largest masked/unmasked CPU-time ratio: {max(worst):.3f} (target <= 1.10)")


if __name__ == "__main__":
    main()
