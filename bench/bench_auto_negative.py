"""The automatic negative palette with Palette Guidance on real photographs (docs/training-free.md).

For each scikit-image photo x Coolors palette: the photo (longer side ``--size``) is taken to SDXL latents
with the fast encoder, guided toward the palette (pass 1), the negative palette is derived from pass 1's
decoded image (colours farther than ΔE00 10 from every palette colour, 3 colours), and the same guidance is
run again with the negative's repulsion (pass 2). Reported per pair and in total: the share of pixels within
ΔE00 10 of a negative colour in pass 1 and pass 2 (target: >= 2x fewer) and the palette EMD (paper Table 1
protocol) of both passes (target: equal, pass 2 / pass 1 <= 1.05), and the time of each pass.

    python bench/bench_auto_negative.py [--size 96] [--steps 8] [--negative-strength 1.0]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402
from bench_recolor import PALETTES, PHOTOS, load_photo  # noqa: E402

from palette_core.adherence import nearest_delta_e  # noqa: E402
from palette_core.distance import palette_emd  # noqa: E402
from palette_core.latent_rgb import fast_decode, fast_encode  # noqa: E402
from palette_core.negative import auto_negative  # noqa: E402
from palette_core.palette import Palette  # noqa: E402
from palette_core.sw_guidance import DEFAULT_REPULSION_RADIUS, guide  # noqa: E402

NEAR = 10.0  # ΔE00: a pixel this close to a negative colour counts as showing it


def near_share(image: torch.Tensor, negative: Palette) -> float:
    """Share of pixels within ``NEAR`` ΔE00 of any negative colour."""
    return float((nearest_delta_e(image.unsqueeze(0), negative.colors, negative.weights)[0] < NEAR).double().mean())


def two_passes(photo: torch.Tensor, palette: Palette, steps: int, strength: float, radius: float) -> dict:
    """Pass 1 (palette only), the automatic negative from it, pass 2 (with the negative); metrics of both."""
    z = fast_encode(photo.unsqueeze(0))
    t0 = time.perf_counter()
    first = fast_decode(guide(z, palette.colors, palette.weights, steps=steps))[0].clamp(0, 1)
    t1 = time.perf_counter()
    negative, share = auto_negative(first, palette)
    t2 = time.perf_counter()
    if negative is None:
        return {"share_off": 0.0}
    second_z = guide(
        z,
        palette.colors,
        palette.weights,
        steps=steps,
        negative_colors=negative.colors,
        negative_weights=negative.weights,
        negative_strength=strength,
        negative_radius=radius,
    )
    second = fast_decode(second_z)[0].clamp(0, 1)
    t3 = time.perf_counter()
    return {
        "share_off": share,
        "near_1": near_share(first, negative),
        "near_2": near_share(second, negative),
        "emd_1": palette_emd(first, palette.colors, palette.weights),
        "emd_2": palette_emd(second, palette.colors, palette.weights),
        "t_pass": t1 - t0,
        "t_negative": t2 - t1,
        "t_pass_negative": t3 - t2,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=96, help="longer side of the photos (= latent side here)")
    parser.add_argument("--steps", type=int, default=8, help="guidance steps per pass")
    parser.add_argument("--negative-strength", type=float, default=1.0)
    parser.add_argument("--radius", type=float, default=DEFAULT_REPULSION_RADIUS, help="repulsion radius (RGB)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    print(f"{'photo':18s} {'palette':13s} {'off %':>6s} {'near 1':>7s} {'near 2':>7s} {'emd 1':>7s} {'emd 2':>7s}")
    for photo_name in PHOTOS:
        photo = load_photo(photo_name, args.size)
        for pal_name, text in PALETTES.items():
            r = two_passes(photo, Palette.parse(text), args.steps, args.negative_strength, args.radius)
            if "near_1" not in r:
                print(f"{photo_name:18s} {pal_name:13s} nothing off-palette after pass 1")
                continue
            rows.append(r)
            print(
                f"{photo_name:18s} {pal_name:13s} {100 * r['share_off']:6.1f} {100 * r['near_1']:7.2f} "
                f"{100 * r['near_2']:7.2f} {r['emd_1']:7.4f} {r['emd_2']:7.4f}"
            )
    near_1 = sum(r["near_1"] for r in rows) / len(rows)
    near_2 = sum(r["near_2"] for r in rows) / len(rows)
    emd_ratio = statistics.median(r["emd_2"] / r["emd_1"] for r in rows)
    fewer = sum(r["near_2"] * 2 <= r["near_1"] for r in rows)
    print(
        f"\n{len(rows)} pairs: pixels near a negative colour {100 * near_1:.2f} % -> {100 * near_2:.2f} % "
        f"({near_1 / max(near_2, 1e-12):.1f}x fewer; target >= 2x), >= 2x fewer on {fewer} of {len(rows)} pairs; "
        f"palette EMD pass 2 / pass 1, median {emd_ratio:.3f} (target <= 1.05)"
    )
    print(
        "time per pair (median): pass {:.3f} s, negative {:.3f} s, pass with negative {:.3f} s".format(
            *(statistics.median(r[k] for r in rows) for k in ("t_pass", "t_negative", "t_pass_negative"))
        )
    )


if __name__ == "__main__":
    main()
