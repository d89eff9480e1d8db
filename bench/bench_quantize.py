"""Palette quantisation benchmark: speed against Pillow's Floyd-Steinberg, quality on photographs, diffusion spaces.

Speed (CPU, a 1024x1024 photo, a 16-colour median-cut palette): every variant runs once to warm up (the
ordered-dither tables and the blue-noise map are built then), then ``--rounds`` interleaved rounds, the
order rotated each round, so that a busy spell of the machine hits all variants alike. The anchor is
``Image.quantize(palette=..., dither=Image.Dither.FLOYDSTEINBERG)`` on the 8-bit PIL image (its bare call).
A second anchor line shows what a ComfyUI node built on Pillow would pay: float tensor to 8 bits, the
quantize, and back to floats. Ours is timed as the node calls it (a float tensor in, a float tensor out), on
the compiled kernels where numba is installed (on palette_core._jit.threads() threads, and on one:
``PALETTE_THREADS=1``) and on the numpy paths (``PALETTE_NO_JIT=1``). Ratios are
medians against the bare anchor.
Targets: ordered dithering >= 5x faster than the anchor; error diffusion <= 3x its time.

Quality (``--quality``): mean CIEDE2000 between the input and the output, both blurred with a 1.5-pixel
Gaussian (scipy.ndimage, on sRGB values), on eight scikit-image photographs (longer side ``--quality-size``)
with each photo's 16-colour median-cut palette, for every dither and distance, against Pillow's
Floyd-Steinberg with the same palette. Lower is better.

Spaces (``--spaces``): Floyd-Steinberg run in CIELAB, OKLab (colour-science's conversion) and sRGB, with
the clip margin 0, 0.1 and 0.2, on the same photos: why the pack diffuses in CIELAB with a 0.1 margin.

Run from the repository root: ``python bench/bench_quantize.py [--quality] [--spaces] [--rounds 9]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from palette_core import _jit  # noqa: E402
from palette_core import quantize as qz  # noqa: E402
from palette_core.color import ciede2000, srgb_to_lab  # noqa: E402
from palette_core.extract import extract_palette  # noqa: E402

PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "motorcycle", "hubble_deep_field", "immunohistochemistry"]
PHOTOS += ["retina"]
OURS = [
    ("floyd-steinberg", "perceptual"),
    ("atkinson", "perceptual"),
    ("bayer-8", "perceptual"),
    ("blue-noise", "perceptual"),
    ("none", "perceptual"),
    ("floyd-steinberg", "rgb"),
    ("bayer-8", "rgb"),
]


def load_photo(name: str, size: int) -> np.ndarray:
    """A bundled scikit-image photo as 8-bit RGB, longer side ``size`` (bicubic)."""
    from skimage import data

    arr = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
    img = Image.fromarray(np.ascontiguousarray(arr[..., :3]))
    scale = size / max(img.size)
    return np.array(img.resize((round(img.width * scale), round(img.height * scale)), Image.BICUBIC))


def pillow_palette(palette: np.ndarray) -> Image.Image:
    """A P-mode image carrying ``palette`` (padded with repeats of its first colour, not with black)."""
    levels = np.round(palette * 255).astype(int)
    pal = Image.new("P", (1, 1))
    pal.putpalette(levels.ravel().tolist() + levels[0].tolist() * (256 - len(levels)))
    return pal


def pillow_fs(u8: np.ndarray, pal: Image.Image) -> np.ndarray:
    q = Image.fromarray(u8).quantize(palette=pal, dither=Image.Dither.FLOYDSTEINBERG)
    return np.asarray(q.convert("RGB")).astype(np.float32) / 255


def blurred_delta_e(a: np.ndarray, b: np.ndarray) -> float:
    """Mean CIEDE2000 between ``a`` and ``b`` blurred with a 1.5-pixel Gaussian (sRGB values)."""
    from scipy.ndimage import gaussian_filter

    blur = [gaussian_filter(x.astype(np.float64), sigma=(1.5, 1.5, 0)) for x in (a, b)]
    return float(ciede2000(srgb_to_lab(blur[0]), srgb_to_lab(blur[1])).mean())


def time_interleaved(fns: dict[str, object], rounds: int) -> dict[str, list[float]]:
    labels = list(fns)
    for label in labels:
        fns[label]()
    times: dict[str, list[float]] = {label: [] for label in labels}
    for r in range(rounds):
        for label in labels[r % len(labels) :] + labels[: r % len(labels)]:
            t0 = time.perf_counter()
            fns[label]()
            times[label].append(time.perf_counter() - t0)
    return times


def bench_speed(size: int, rounds: int, threads: int) -> None:
    torch.set_num_threads(threads)
    u8 = load_photo("astronaut", size)
    palette = extract_palette(u8, 16, method="median_cut").colors_array
    pal = pillow_palette(palette)
    pil = Image.fromarray(u8)
    x = u8.astype(np.float32) / 255
    tensor = torch.from_numpy(x)

    def pillow_node() -> torch.Tensor:
        small = (tensor * 255).round().clamp(0, 255).to(torch.uint8).numpy()
        q = Image.fromarray(small).quantize(palette=pal, dither=Image.Dither.FLOYDSTEINBERG).convert("RGB")
        return torch.from_numpy(np.asarray(q).astype(np.float32) / 255)

    fns = {"Pillow FS (anchor)": lambda: pil.quantize(palette=pal, dither=Image.Dither.FLOYDSTEINBERG)}
    fns["Pillow FS as a node"] = pillow_node
    paths = ["compiled", "compiled-1-thread", "numpy"] if _jit.kernels() is not None else ["numpy"]
    for path in paths:
        for dither, distance in OURS if path != "compiled-1-thread" else OURS[:1] + OURS[2:4]:
            fns[f"ours {dither} {distance} {path}"] = lambda d=dither, m=distance, p=path: quantize_on(
                p, tensor, palette, d, m
            )
    times = time_interleaved(fns, rounds)
    anchor = statistics.median(times["Pillow FS (anchor)"])
    print(
        f"== speed: {u8.shape[1]}x{u8.shape[0]} photo, {len(palette)} colours, {rounds} interleaved rounds, CPU, "
        f"{_jit.threads()} quantiser thread(s)"
    )
    print(f"{'variant':<50} {'median ms':>10} {'min ms':>9} {'x anchor':>9}  target")
    for label, ts in times.items():
        med = statistics.median(ts)
        target = ""
        if label.startswith("ours"):
            dither = label.split()[1]
            ordered, diffused = dither in qz.ORDERED_DITHERS, dither in qz.ERROR_KERNELS
            target = "<= 0.20 (5x faster)" if ordered else ("<= 3" if diffused else "")
        print(f"{label:<50} {med * 1e3:>10.1f} {min(ts) * 1e3:>9.1f} {med / anchor:>9.2f}  {target}")


def quantize_on(path: str, tensor: torch.Tensor, palette: np.ndarray, dither: str, distance: str) -> torch.Tensor:
    """The node's call on the compiled kernels (numba; on one thread: ``PALETTE_THREADS=1``) or on the numpy
    paths (``PALETTE_NO_JIT=1``)."""
    name, value = {"numpy": ("PALETTE_NO_JIT", "1"), "compiled-1-thread": ("PALETTE_THREADS", "1")}.get(path, ("", ""))
    before = os.environ.get(name)
    if name:
        os.environ[name] = value
    try:
        return qz.quantize(tensor, palette, dither=dither, distance=distance)
    finally:
        if name and before is None:
            os.environ.pop(name, None)
        elif name:
            os.environ[name] = before


def photos(size: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    out = []
    for name in PHOTOS:
        u8 = load_photo(name, size)
        out.append((name, u8, extract_palette(u8, 16, method="median_cut").colors_array))
    return out


def bench_quality(size: int) -> None:
    rows = []
    for name, u8, palette in photos(size):
        x = u8.astype(np.float32) / 255
        pil = blurred_delta_e(x, pillow_fs(u8, pillow_palette(palette)))
        ours = [blurred_delta_e(x, qz.quantize(x, palette, dither=d, distance=m)) for d, m in OURS]
        rows.append((name, pil, ours))
    labels = [f"{d[:8]}/{m[:4]}" for d, m in OURS]
    print(f"== quality: mean CIEDE2000 of the blurred (sigma 1.5 px) output, longer side {size}, 16 colours")
    print(f"{'photo':<21} {'Pillow FS':>9} " + " ".join(f"{label:>13}" for label in labels))
    for name, pil, ours in rows:
        print(f"{name:<21} {pil:>9.3f} " + " ".join(f"{v:>13.3f}" for v in ours))
    ratios = [statistics.mean(r[2][i] / r[1] for r in rows) for i in range(len(OURS))]
    wins = [sum(r[2][i] < r[1] for r in rows) for i in range(len(OURS))]
    print(f"{'mean ratio to Pillow':<31} " + " ".join(f"{v:>13.3f}" for v in ratios))
    print(f"{'lower than Pillow on':<31} " + " ".join(f"{f'{w}/{len(rows)}':>13}" for w in wins))


def bench_spaces(size: int) -> None:
    import colour

    spaces = {
        "CIELAB/100": lambda rgb: srgb_to_lab(rgb.astype(np.float64)) / 100,
        "OKLab": lambda rgb: colour.convert(rgb.astype(np.float64), "sRGB", "Oklab"),
        "sRGB": lambda rgb: rgb.astype(np.float64),
    }
    results: dict[tuple[str, float], list[float]] = {}
    for _, u8, palette in photos(size):
        x = u8.astype(np.float32) / 255
        pil = blurred_delta_e(x, pillow_fs(u8, pillow_palette(palette)))
        for space, convert in spaces.items():
            work, work_palette = convert(x)[None].astype(np.float32), convert(palette)
            for margin in (0.0, 0.1, 0.2):
                lo, hi = work_palette.min(0) - margin, work_palette.max(0) + margin
                idx = qz.error_diffusion(work, work_palette, lo, hi, "floyd-steinberg")[0]
                results.setdefault((space, margin), []).append(blurred_delta_e(x, palette[idx]) / pil)
    print(f"== Floyd-Steinberg by diffusion space and clip margin (palette box +- margin), longer side {size}")
    print(f"{'space':<12} {'margin':>6} {'mean ratio to Pillow':>21} {'wins':>6}")
    for (space, margin), ratios in results.items():
        wins = sum(r < 1 for r in ratios)
        print(f"{space:<12} {margin:>6.2f} {statistics.mean(ratios):>21.3f} {f'{wins}/{len(ratios)}':>6}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="side of the timed photo")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    parser.add_argument("--quality", action="store_true", help="the photo quality table")
    parser.add_argument("--spaces", action="store_true", help="the diffusion space / clip margin table")
    parser.add_argument("--quality-size", type=int, default=256, help="longer side of the quality photos")
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args()
    if not args.skip_speed:
        bench_speed(args.size, args.rounds, args.threads)
    if args.quality:
        bench_quality(args.quality_size)
    if args.spaces:
        bench_spaces(args.quality_size)


if __name__ == "__main__":
    main()
