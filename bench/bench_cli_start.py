"""Start-up benchmark of the command line: whole processes, timed as a user runs them.

Run from the repository root: ``python bench/bench_cli_start.py [--runs 7] [--installed]``. Each command
runs ``--runs`` times, interleaved with the others (so a busy spell hits all of them alike); the table
gives min and median wall time and ratios against anchors measured in the same run: a bare
``python -c pass`` and ``python -c "import torch"``. Commands:

* ``palette --help`` and ``palette distance IMAGE PALETTE`` on a 1-megapixel photo (scikit-image's
  astronaut upscaled at run time; smooth gradients plus noise without scikit-image). Without
  ``--installed`` the ``palette`` command is run as its entry-point script does it
  (``from palette_cli.main import main``) on this checkout; with it, the ``palette`` on PATH.
* ``python -m palette_core --help``.
* the torch path for comparison: ``image_histogram`` and ``quadratic_chi`` with the full cached
  similarity matrix, in one ``python -c`` (what ``distance`` did before it ran on numpy alone).

Targets on a quiet machine: ``--help`` <= 0.5 s, ``distance`` <= 1.5 s.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
PALETTE = "#264653, #2a9d8f, #e9c46a, #f4a261, #e76f51"
ENTRY_POINT = "import sys; from palette_cli.main import main; sys.exit(main())"
TORCH_PATH = """
import sys
import numpy as np, torch
from PIL import Image
from palette_core.distance import quadratic_chi
from palette_core.histogram import image_histogram
from palette_core.palette import Palette
pixels = torch.from_numpy(np.asarray(Image.open(sys.argv[1]).convert("RGB"))).float() / 255.0
print(f"{float(quadratic_chi(image_histogram(pixels), Palette.parse(sys.argv[2]).histogram())):.6f}")
"""


def photo(path: Path, side: int = 1024) -> Path:
    """A 1-megapixel photo-like PNG: scikit-image's astronaut upscaled, or gradients plus noise."""
    try:
        from skimage import data

        image = Image.fromarray(data.astronaut()).resize((side, side), Image.BICUBIC)
    except ImportError:
        rng = np.random.default_rng(0)
        y, x = np.mgrid[0:side, 0:side] / side
        rgb = (
            0.5
            + 0.4 * np.sin(np.stack([6 * x + 3 * y, 5 * y - 2 * x, 9 * x * y], -1))
            + rng.normal(0, 0.03, (side, side, 3))
        )
        image = Image.fromarray(np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8))
    image.save(path)
    return path


def timed(argv: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)[:80]}: exit status {proc.returncode}\n{proc.stderr}")
    return elapsed, proc.stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7, help="runs of each command (default 7)")
    ap.add_argument("--installed", action="store_true", help="time the palette command on PATH")
    args = ap.parse_args()

    py = sys.executable
    if args.installed:
        found = shutil.which("palette")
        if found is None:
            raise SystemExit("--installed: no palette command on PATH (pip install . first)")
        palette = [found]
    else:
        palette = [py, "-c", ENTRY_POINT]
    with tempfile.TemporaryDirectory() as d:
        image = str(photo(Path(d) / "photo.png"))
        commands = {
            "anchor: python -c pass": [py, "-c", "pass"],
            'anchor: python -c "import torch"': [py, "-c", "import torch"],
            "palette --help": [*palette, "--help"],
            "python -m palette_core --help": [py, "-m", "palette_core", "--help"],
            "palette distance (numpy)": [*palette, "distance", image, PALETTE],
            "torch path: histogram + quadratic_chi": [py, "-c", TORCH_PATH, image, PALETTE],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        outputs: dict[str, str] = {}
        for _ in range(args.runs):
            for name, argv in commands.items():
                elapsed, out = timed(argv)
                times[name].append(elapsed)
                outputs[name] = out

    best = {name: min(ts) for name, ts in times.items()}
    print(f"{args.runs} interleaved runs each; {'installed palette' if args.installed else 'palette entry point'}")
    print(f"{'command':40s} {'min s':>7s} {'median s':>9s}")
    for name, ts in times.items():
        print(f"{name:40s} {min(ts):7.3f} {statistics.median(ts):9.3f}")
    bare, torch_import = best["anchor: python -c pass"], best['anchor: python -c "import torch"']
    help_s, distance_s = best["palette --help"], best["palette distance (numpy)"]
    old = best["torch path: histogram + quadratic_chi"]
    print()
    print(f"palette --help: {help_s:.3f} s = bare interpreter + {help_s - bare:.3f} s (target <= 0.5 s)")
    print(f"palette --help / import torch: {help_s / torch_import:.2f}")
    print(f"palette distance: {distance_s:.3f} s (target <= 1.5 s); / import torch: {distance_s / torch_import:.2f}")
    print(f"torch path / palette distance: {old / distance_s:.1f}x")
    numpy_qc, torch_qc = outputs["palette distance (numpy)"], outputs["torch path: histogram + quadratic_chi"]
    print(f"QC: palette distance {numpy_qc}, torch path {torch_qc} (float32 histograms and matrix)")


if __name__ == "__main__":
    main()
