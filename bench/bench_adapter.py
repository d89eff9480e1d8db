"""Per-step cost of Apply Palette Adapter against the unpatched model, in one run (README.md, Palette-Adapter).

Needs a ComfyUI checkout::

    COMFYUI_PATH=~/ComfyUI ~/comfy-venv/bin/python bench/bench_adapter.py [--model tiny|full|both]

``tiny`` is the tests' random-weight SDXL-layout UNet (the same 70 cross-attention layers, 64 channels) at
256x256; ``full`` a full-size random-weight SDXL UNet (model_channels 320, float32, ~10 GB of RAM) at
512x512. Per model: the unpatched step, the adapter on its default block (10 layers) and on all 11 blocks
(70 layers), and on all blocks with the K/V cache turned off (the cost before the cache). Variants run
interleaved round by round (drift on a shared machine hits all alike); printed: min and median ms per
step and each variant's overhead, the median over rounds of its time over the unpatched time of the same
round, against the CPU targets (default block <= 3 %, all blocks <= 10 %).

A step-level difference of a few percent drowns in a shared machine's noise, so the cost is also taken
apart per call: the attn2 calls of one patched step are recorded (layer, shapes, extra_options), and each
is timed best-of-N as the host's attention alone and as the palette patch (cached and uncached K/V); the
sum of the differences is the adapter's time per step, printed against the fastest unpatched step.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the test helpers import train.models
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import torch  # noqa: E402
from _timing import best_of  # noqa: E402
from comfyhost import load_comfyui, run_node, sample  # noqa: E402

DEFAULT_BLOCK = "up_blocks.0.attentions.1"
TARGETS = {"default block": 3.0, "all blocks": 10.0}  # % over the unpatched step, CPU
MODELS = {"tiny": (64, 256, 5), "full": (320, 512, 2)}  # model_channels, image side, rounds


def build(channels: int, seed: int = 0):
    """A random-weight SDXL-layout UNet of ``model_channels`` as a ComfyUI ModelPatcher (float32)."""
    import comfy.model_management
    import comfy.model_patcher
    from comfyhost import init_random_, sdxl_model_config

    model = sdxl_model_config(channels, torch.float32).get_model({})
    init_random_(model.diffusion_model, seed)
    device = comfy.model_management.get_torch_device()
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=device)


def attn2(model) -> dict:
    return model.model_options["transformer_options"]["patches_replace"]["attn2"]


def without_kv_cache(model):
    """The patched model with its run's K/V recomputed at every call (the cost before the cache)."""
    run = next(iter(attn2(model).values())).run
    cached = run.kv

    def kv(*args):
        run._kv.clear()
        return cached(*args)

    run.kv = kv
    return model


def variants(host, model) -> dict[str, object]:
    """The unpatched model and the adapter on the default block, on all blocks, on all blocks uncached, and a
    file version 3 adapter (the scalar token inside the softmax, docs/design.md §6) on all blocks."""
    pa = host.pack.palette_core.adapter
    layers = host.pack.nodes.model_family.attention_layers_of(model)
    adapter = pa.init_adapter(layers.dims, seed=1)
    palette = host.pack.palette_core.palette.Palette.parse("#e63946:2, #f1faee, #a8dadc, #457b9d, #1d3557")

    def patched(blocks: str, adapter=adapter):
        inputs = {"adapter": adapter, "condition": palette, "weight": 1.0, "start_percent": 0.0, "end_percent": 1.0}
        return run_node("ApplyPaletteAdapter", model=model, blocks=blocks, **inputs)[0]

    every = ", ".join(dict.fromkeys(x.block for x in layers))
    return {
        "unpatched": model,
        "default block": patched(DEFAULT_BLOCK),
        "all blocks": patched(every),
        "all blocks, K/V not cached": without_kv_cache(patched(every)),
        "all blocks, version 3": patched(every, pa.init_adapter(layers.dims, seed=1, version="3")),
    }


def per_step(models: dict, steps: int, size: int, rounds: int, sync) -> dict[str, list[float]]:
    """Seconds per sampling step (cfg 5: cond and uncond in one batch) of each model, per round, interleaved."""
    for m in models.values():
        sample(m, steps=1, size=size)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, m in models.items():
            t0 = time.perf_counter()
            sample(m, steps=steps, size=size)
            sync()
            times[name].append((time.perf_counter() - t0) / steps)
    return times


def report(label: str, times: dict[str, list[float]]) -> None:
    """Min and median ms per step; overhead = median over rounds of (variant / unpatched of the same round) - 1."""
    print(label)
    base = times["unpatched"]
    for name, t in times.items():
        line = f"  {name:28s} min {min(t) * 1e3:9.1f} ms/step  median {statistics.median(t) * 1e3:9.1f} ms/step"
        if name != "unpatched":
            over = 100 * (statistics.median(a / b for a, b in zip(t, base)) - 1)
            line += f"  overhead {over:+5.1f}%"
            if name in TARGETS:
                line += f" (target <= {TARGETS[name]:.0f}%)"
        print(line)


def recorded_calls(model, size: int) -> list[tuple]:
    """``(patch, q shape, k shape, dtype, device, extra_options)`` of every attn2 call of one sampling step."""
    patches = attn2(model)
    originals = dict(patches)
    calls = []

    def recorder(patch):
        def call(q, k, v, extra_options):
            calls.append((patch, q.shape, k.shape, q.dtype, q.device, dict(extra_options)))
            return patch(q, k, v, extra_options)

        return call

    patches.update({key: recorder(p) for key, p in originals.items()})
    try:
        sample(model, steps=1, size=size)
    finally:
        patches.update(originals)
    return calls


def call_costs(patch, q, k, v, options: dict, sync, repeat: int) -> tuple[float, float]:
    """Seconds one attn2 call of ``patch`` adds to the host's attention, with cached and with uncached K/V."""
    run = patch.run

    def timed(fn) -> float:
        return best_of(lambda: (fn(), sync()), repeat=repeat)

    host = timed(lambda: run.attention(q, k, v, options))
    cached = timed(lambda: patch(q, k, v, options))
    uncached = timed(lambda: (run._kv.clear(), patch(q, k, v, options)))
    return cached - host, uncached - host


def per_call(model, size: int, sync, repeat: int = 5) -> dict[str, float]:
    """Seconds per step the adapter adds on the default block, on all blocks, and on all blocks uncached."""
    extra = {"default block": 0.0, "all blocks": 0.0, "all blocks, K/V not cached": 0.0}
    g = torch.Generator().manual_seed(0)
    for patch, q_shape, k_shape, dtype, device, options in recorded_calls(model, size):
        q, k, v = (torch.randn(s, generator=g).to(device=device, dtype=dtype) for s in (q_shape, k_shape, k_shape))
        cached, uncached = call_costs(patch, q, k, v, options, sync, repeat)
        if patch.layer.startswith(DEFAULT_BLOCK + "."):
            extra["default block"] += cached
        extra["all blocks"] += cached
        extra["all blocks, K/V not cached"] += uncached
    return extra


def report_per_call(extra: dict[str, float], step: float) -> None:
    print("  per call, summed over one step's attn2 calls (best of 5 each), against the fastest unpatched step:")
    for name, t in extra.items():
        target = f" (target <= {TARGETS[name]:.0f}%)" if name in TARGETS else ""
        print(f"  {name:28s} +{t * 1e3:8.1f} ms/step  overhead {100 * t / step:+5.1f}%{target}")


def count_evaluations(host, model, steps: int, size: int) -> None:
    """UNet evaluations with and without a negative palette (the negative costs none)."""
    pal = host.pack.palette_core.palette.Palette.parse("#e63946:2, #f1faee")
    negative = run_node("NegativePalette", palette=host.pack.palette_core.palette.Palette.parse("#00ff00"), weight=0.3)
    layers = host.pack.nodes.model_family.attention_layers_of(model)
    adapter = host.pack.palette_core.adapter.init_adapter(layers.select([DEFAULT_BLOCK]).dims, seed=1)
    for name, neg in (("without negative", None), ("with negative", negative[0])):
        inputs = {"weight": 1.0, "start_percent": 0.0, "end_percent": 1.0, "blocks": "from file", "negative": neg}
        m = run_node("ApplyPaletteAdapter", model=model, adapter=adapter, condition=pal, **inputs)[0].clone()
        calls = []

        def wrapper(apply_model, a, calls=calls):
            calls.append(len(a["cond_or_uncond"]))
            return apply_model(a["input"], a["timestep"], **a["c"])

        m.set_model_unet_function_wrapper(wrapper)
        sample(m, steps=steps, size=size)
        print(f"UNet evaluations {name}: {len(calls)} for {steps} steps ({sum(calls)} batch chunks)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["tiny", "full", "both"], default="tiny")
    parser.add_argument("--size", type=int, default=None, help="image side in pixels (default: 256 tiny, 512 full)")
    parser.add_argument("--steps", type=int, default=2, help="sampling steps per timed run")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default: 5 tiny, 2 full)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 steadies a shared machine)")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    host = load_comfyui()
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for name in ("tiny", "full") if args.model == "both" else (args.model,):
        channels, size, rounds = MODELS[name]
        size, rounds = args.size or size, args.rounds or rounds
        t0 = time.perf_counter()
        model = build(channels)
        built = time.perf_counter() - t0
        models = variants(host, model)
        times = per_step(models, args.steps, size, rounds, sync)
        report(
            f"{name} SDXL UNet (model_channels {channels}, built in {built:.0f} s), {size}x{size}, cfg 5, "
            f"{args.steps} steps x {rounds} rounds, {device}, torch threads {torch.get_num_threads()}",
            times,
        )
        calls = per_call(models["all blocks"], size, sync)
        calls["all blocks, version 3"] = per_call(models["all blocks, version 3"], size, sync)["all blocks"]
        report_per_call(calls, min(times["unpatched"]))
        del models
        if name == "tiny":
            count_evaluations(host, model, args.steps, size)
        del model


if __name__ == "__main__":
    main()
