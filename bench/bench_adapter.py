"""Per-step overhead of ApplyPaletteAdapter against the unpatched model, in one run (issue 4).

Needs a ComfyUI checkout: ``COMFYUI_PATH=~/ComfyUI ~/comfy-venv/bin/python bench/bench_adapter.py``.
``--channels 320`` builds a full-size random-weight SDXL UNet (use on a GPU, ``--size 1024``); the
default is the tiny SDXL-layout UNet of the tests (same 70 cross-attention layers, 64 channels).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import torch  # noqa: E402
from comfyhost import load_comfyui, run_node, sample, tiny_sdxl  # noqa: E402


def per_step(models: dict, steps: int, size: int, repeat: int, device_sync) -> dict[str, float]:
    """Best seconds per sampling step of each model (cfg 5: cond + uncond per evaluation).

    Runs are interleaved (A, B, C, A, B, C, ...) so that load drifting on a shared machine hits every
    configuration alike; the minimum over repeats is kept.
    """
    for m in models.values():
        sample(m, steps=1, size=size)  # warm-up
    best = {name: float("inf") for name in models}
    for _ in range(repeat):
        for name, m in models.items():
            t0 = time.perf_counter()
            sample(m, steps=steps, size=size)
            device_sync()
            best[name] = min(best[name], (time.perf_counter() - t0) / steps)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--channels", type=int, default=64, help="UNet model_channels (320 = full SDXL)")
    parser.add_argument("--size", type=int, default=256, help="image size in pixels (latent = size / 8)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    host = load_comfyui()
    import comfyhost

    comfyhost.TINY_SDXL_CHANNELS = args.channels
    model = tiny_sdxl(seed=0)
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    pa = host.pack.palette_core.adapter
    layers = host.pack.nodes.model_family.attention_layers_of(model)
    adapter = pa.init_adapter({x.name: x.dim for x in layers}, seed=1)
    palette = host.pack.palette_core.palette.Palette.parse("#e63946:2, #f1faee, #a8dadc, #457b9d, #1d3557")

    def patched(blocks: str, negative=None):
        (m,) = run_node(
            "ApplyPaletteAdapter",
            model=model,
            adapter=adapter,
            condition=palette,
            weight=1.0,
            start_percent=0.0,
            end_percent=1.0,
            blocks=blocks,
            negative=negative,
        )
        return m

    all_blocks = ", ".join(dict.fromkeys(x.block for x in layers))
    times = per_step(
        {"base": model, "default": patched("up_blocks.0.attentions.1"), "every": patched(all_blocks)},
        args.steps,
        args.size,
        args.repeat,
        sync,
    )
    base, default, every = times["base"], times["default"], times["every"]
    print(
        f"UNet model_channels {args.channels}, {args.size}x{args.size}, cfg 5, device "
        f"{'cuda' if torch.cuda.is_available() else 'cpu'}, torch threads {torch.get_num_threads()}"
    )
    print(f"unpatched: {base * 1e3:.1f} ms/step")
    print(
        f"default block (10 layers): {default * 1e3:.1f} ms/step, overhead {100 * (default / base - 1):+.1f}% "
        "(target <= 2% on a GPU at 1024x1024)"
    )
    print(
        f"all 11 blocks (70 layers): {every * 1e3:.1f} ms/step, overhead {100 * (every / base - 1):+.1f}% "
        "(target <= 8% on a GPU at 1024x1024)"
    )

    counts = {}
    negative = run_node("NegativePalette", palette=host.pack.palette_core.palette.Palette.parse("#00ff00"), weight=0.3)[
        0
    ]
    for name, m in (("without negative", patched("from file")), ("with negative", patched("from file", negative))):
        calls = []
        m = m.clone()

        def wrapper(apply_model, a, calls=calls):
            calls.append(len(a["cond_or_uncond"]))
            return apply_model(a["input"], a["timestep"], **a["c"])

        m.set_model_unet_function_wrapper(wrapper)
        sample(m, steps=args.steps, size=args.size)
        counts[name] = (len(calls), sum(calls))
    for name, (evals, chunks) in counts.items():
        print(f"UNet evaluations {name}: {evals} for {args.steps} steps ({chunks} batch chunks)")


if __name__ == "__main__":
    main()
