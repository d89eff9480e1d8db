"""Peak memory and time of reading a huge image for ``palette extract``, and what the reduced decode changes.

Run from the repository root on Linux: ``python bench/bench_image_file.py [--side 12000] [--runs 3]``.
Each reader runs in its own process, ``--runs`` times, interleaved; the peak memory is the growth of
``VmHWM`` (``/proc/self/status``) over the imports (``ru_maxrss`` is no use here: Linux keeps the parent's
across exec). The table gives the best time and the largest peak, with ratios against the anchor
measured in the same run: the loader the CLI used before (Pillow ``open``, ``exif_transpose``,
``convert("RGB")``, a uint8 array, then float32 / 255).

* ``whole``: ``read_image(path)``: every pixel, as ``histogram``/``evaluate`` need.
* ``reduced``: ``read_image(path, 256)``: what ``extract`` reads (256 x 256 resample after it).

Images: a ``side``² 8-bit grey ramp PNG (written with zlib, a few seconds) and a ``side x 3/4 side`` RGB
JPEG (Pillow, quality 90). Then, on a 5,000 x 4,000 photo-like image (under the threshold, so the CLI
reads it whole), the 256² resample that extraction sees is compared between a whole and a reduced
decode: mean, 99th percentile and largest difference in 8-bit levels.
"""

from __future__ import annotations

import argparse
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
READERS = {
    "before (anchor)": """
from PIL import Image, ImageOps
def read(path):
    with Image.open(path) as im:
        rgb = ImageOps.exif_transpose(im).convert("RGB")
    return np.asarray(rgb, dtype=np.uint8).astype(np.float32) / np.float32(255.0)
""",
    "whole": "from palette_core.image_file import read_image as read\n",
    "reduced": "from palette_core.image_file import read_image\nread = lambda path: read_image(path, 256)\n",
}
RUN = """
import sys, time, warnings
import numpy as np, PIL.Image
warnings.simplefilter("ignore")
{reader}
def peak_kb():
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1])
before = peak_kb()
t0 = time.perf_counter()
pixels = read(sys.argv[1])
seconds = time.perf_counter() - t0
print(seconds, (peak_kb() - before) / 1024, *pixels.shape[:2])
"""


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def grey_ramp_png(path: Path, side: int) -> Path:
    row = b"\x00" + (np.arange(side) * 255 // (side - 1)).astype(np.uint8).tobytes()
    packer = zlib.compressobj(1)
    data = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", data) + _chunk(b"IEND", b""))
    return path


def photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth colour fields, hard-edged shapes and noise: what photographs have, at any size."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    y /= h
    x /= w
    rgb = 0.5 + 0.35 * np.sin(np.stack([7 * x + 2 * y, 5 * y - 3 * x, 11 * x * y], -1))
    rgb[((x - 0.3) ** 2 + (y - 0.6) ** 2) < 0.02] = (0.9, 0.2, 0.1)
    rgb += rng.normal(0, 0.04, rgb.shape).astype(np.float32)
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def measure(path: Path, runs: int) -> dict[str, tuple[float, float, str]]:
    env = {"PYTHONPATH": str(REPO)}
    best: dict[str, tuple[float, float, str]] = {}
    for _ in range(runs):
        for name, reader in READERS.items():
            out = subprocess.run(
                [sys.executable, "-c", RUN.format(reader=reader), str(path)],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            ).stdout.split()
            seconds, mb, h, w = float(out[0]), float(out[1]), out[2], out[3]
            old = best.get(name)
            best[name] = (min(seconds, old[0]) if old else seconds, max(mb, old[1]) if old else mb, f"{w}x{h}")
    return best


def table(title: str, best: dict[str, tuple[float, float, str]]) -> None:
    anchor_s, anchor_mb, _ = best["before (anchor)"]
    print(f"\n{title}")
    print(f"{'reader':<16} {'decoded':>11} {'time':>8} {'x anchor':>9} {'peak MB':>9} {'x anchor':>9}")
    for name, (s, mb, size) in best.items():
        print(f"{name:<16} {size:>11} {s:7.2f}s {s / anchor_s:8.2f}x {mb:9.0f} {mb / anchor_mb:8.2f}x")


def resample_difference() -> None:
    from palette_core.extract import resized_pixels
    from palette_core.image_file import REDUCING_GAP

    image = photo(4000, 5000, seed=1)
    whole = image.astype(np.float32) / 255
    keep = REDUCING_GAP * 256
    fx, fy = image.shape[1] // keep, image.shape[0] // keep
    reduced = np.asarray(Image.fromarray(image).reduce((fx, fy)), dtype=np.float32) / 255
    a = resized_pixels(whole).numpy().astype(int)
    b = resized_pixels(reduced).numpy().astype(int)
    d = np.abs(a - b)
    print(
        f"\n256² resample for extraction, 5000x4000 photo, whole vs reduced ({fx}x{fy} boxes): "
        f"mean {d.mean():.3f}, p99 {np.percentile(d, 99):.0f}, max {d.max()} levels"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=12000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        png = grey_ramp_png(Path(tmp) / "ramp.png", args.side)
        table(f"{args.side}x{args.side} 8-bit grey PNG", measure(png, args.runs))
        jpg = Path(tmp) / "photo.jpg"
        Image.fromarray(photo(args.side * 3 // 4, args.side)).save(jpg, quality=90)
        table(f"{args.side}x{args.side * 3 // 4} RGB JPEG", measure(jpg, args.runs))
    resample_difference()


if __name__ == "__main__":
    main()
