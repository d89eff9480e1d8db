"""What the progress callback costs: recolour and lightness lock of a batch with and without it.

The nodes pass a callback that checks ComfyUI's Cancel flag and moves its progress bar after every slice of
2^18 pixels (docs/recolor.md "Previews, progress and Cancel"). Here the callback does the same amount of
bookkeeping without ComfyUI: a lock-protected flag test and a counter. Anchor: the same call without a
callback, in the same run. Also reports how long one slice takes, which bounds how late a Cancel lands.

Run from the repository root: ``python bench/bench_progress.py [--device cuda] [--batch 8] [--size 1024]``.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import best_of  # noqa: E402

from palette_core import recolor as rc  # noqa: E402
from palette_core.palette import Palette  # noqa: E402

PALETTE = Palette.parse("#264653, #2a9d8f, #e9c46a:2, #f4a261, #e76f51")


def smooth_images(batch: int, size: int, device: str) -> torch.Tensor:
    """Smooth random colour fields ``[B, size, size, 3]`` on 8-bit levels (many distinct colours, like photos)."""
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(batch, 3, 6, 6, generator=g)
    fine = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear").permute(0, 2, 3, 1)
    return (fine * 255).round().div(255).contiguous().to(device)


class HostLike:
    """A callback with a host's bookkeeping: test a flag under a lock (ComfyUI's Cancel), count the updates."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cancelled = False
        self.updates = 0

    def __call__(self, done: int, total: int) -> None:
        with self.lock:
            if self.cancelled:
                raise RuntimeError("cancelled")
        self.updates += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args()
    x = smooth_images(args.batch, args.size, args.device)
    c, w = PALETTE.colors.to(args.device), PALETTE.weights.to(args.device)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    def timed(fn) -> float:
        def run():
            fn()
            sync()

        return best_of(run, repeat=5)

    rc.recolor(x[:1], c, w)  # builds the cached gamut table once
    slices = args.batch * -(-args.size * args.size // rc._PIXEL_CHUNK)
    cases = {
        "recolor": (lambda cb: rc.recolor(x, c, w, progress=cb)),
        "lightness_lock": (lambda cb: rc.lightness_lock(x.flip(0), x, progress=cb)),
    }
    for name, call in cases.items():
        anchor = timed(lambda call=call: call(None))
        ours = timed(lambda call=call: call(HostLike()))
        print(
            f"{name} {args.batch}x{args.size}x{args.size} on {args.device}: with the callback {ours * 1e3:.1f} ms, "
            f"without {anchor * 1e3:.1f} ms, ratio {ours / anchor:.3f} (target <= 1.02); {slices} callbacks, "
            f"one slice {ours / slices * 1e3:.1f} ms (the most a Cancel waits)"
        )


if __name__ == "__main__":
    main()
