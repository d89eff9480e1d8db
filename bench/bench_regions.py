"""Cost of a region mask on the generation nodes: masked vs unmasked, one sampling step each (docs/regions.md).

Run with a ComfyUI checkout and its Python::

    COMFYUI_PATH=/path/to/ComfyUI comfy-venv/bin/python bench/bench_regions.py [--side 32] [--rounds 7]

On the tests' tiny random-weight SDXL (the adapter's family) each node runs unmasked and with a mask of the
image's left half; the unpatched step is timed too. Variants run interleaved round by round on the same
model (drift hits all alike); printed: median and min ms per step and masked / unmasked per node (the
target: a masked node costs <= 10 % more than the unmasked one).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the test helpers import train.models
sys.path.insert(0, str(ROOT / "tests"))

import torch  # noqa: E402


def variants(host, side: int) -> dict[str, object]:
    """The unpatched tiny SDXL and, per node, the patched clones without and with a left-half mask."""
    from comfyhost import run_node, tiny_sdxl
    from family_models import preview_vae

    model = tiny_sdxl(seed=0)
    pal = host.pack.palette_core.palette.Palette.parse("#d62828, #f77f00:2, #1d3557")
    mask = torch.zeros(1, side * 8, side * 8)
    mask[..., : side * 4] = 1.0
    layers = host.pack.nodes.model_family.attention_layers_of(model)
    adapter = host.pack.palette_core.adapter.init_adapter(layers.select(["up_blocks.0.attentions.1"]).dims, seed=1)
    nodes = {
        "align": ("PaletteAlign", {"vae": preview_vae(model), "palette": pal, "stop_percent": 0.0, "strength": 1.0}),
        "guidance": (
            "PaletteGuidance",
            {
                "palette": pal,
                "strength": 1.0,
                "steps_per_sample": 4,
                "start_percent": 0.0,
                "end_percent": 1.0,
                "decoder": "fast",
            },
        ),
        "adapter": (
            "ApplyPaletteAdapter",
            {
                "adapter": adapter,
                "condition": pal,
                "weight": 1.0,
                "start_percent": 0.0,
                "end_percent": 1.0,
                "blocks": "from file",
            },
        ),
    }
    out = {"unpatched": model}
    for label, (node, inputs) in nodes.items():
        (out[label],) = run_node(node, model=model, **inputs)
        (out[f"{label}+mask"],) = run_node(node, model=model, mask=mask, **inputs)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--side", type=int, default=32, help="latent side (32: 256 x 256 pixels)")
    p.add_argument("--rounds", type=int, default=7)
    a = p.parse_args()
    from comfyhost import load_comfyui
    from family_models import run_sample

    host = load_comfyui()
    models = variants(host, a.side)
    labels = list(models)
    for label in labels:
        run_sample(models[label], "SDXL", steps=1, side=a.side)  # warm-up: loads, encodes the condition
    times: dict[str, list[float]] = {label: [] for label in labels}
    for r in range(a.rounds):
        for label in labels[r % len(labels) :] + labels[: r % len(labels)]:
            t0 = time.perf_counter()
            run_sample(models[label], "SDXL", steps=1, side=a.side)
            times[label].append(time.perf_counter() - t0)
    print(f"== tiny SDXL, latent {a.side}x{a.side}, one euler step at cfg 4, {a.rounds} interleaved rounds")
    print(f"{'variant':<16} {'median ms':>10} {'min ms':>10} {'masked/unmasked (median)':>26}")
    for label in labels:
        med = statistics.median(times[label])
        line = f"{label:<16} {med * 1e3:>10.1f} {min(times[label]) * 1e3:>10.1f}"
        if label.endswith("+mask"):
            line += f" {med / statistics.median(times[label.removesuffix('+mask')]):>26.3f}"
        print(line)


if __name__ == "__main__":
    main()
