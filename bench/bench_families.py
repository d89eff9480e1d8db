"""Palette Align and Palette Guidance per model family (SD1.5, SDXL, SD3, Flux): cost of one sampling step.

Run with a ComfyUI checkout and its Python::

    COMFYUI_PATH=/path/to/ComfyUI comfy-venv/bin/python bench/bench_families.py
    COMFYUI_PATH=... python bench/bench_families.py --full SD15,SDXL,SD3 --size 64      # full-size, CPU
    COMFYUI_PATH=... python bench/bench_families.py --device cuda --size 128 --full SDXL,SD3,Flux  # 1024^2

One step is ``comfy.sample.sample`` with 1 euler step (one model evaluation at the schedule's first sigma,
the patches' post-CFG hook included), Flux at cfg 1 (ComfyUI skips the unconditional pass) and the others
at cfg 4 (the cond + uncond batch). Each variant (unpatched, Palette Align, Palette Guidance fast and
exact) runs on the SAME model, interleaved round by round so that drift of the machine's speed hits all
alike; median and min per variant and their ratios to the unpatched step are printed.

* small models: the tests' tiny random-weight models of each family (tests/test_families_comfyui.py) and
  a small random VAE of the family's channel count (the exact decoder runs through it);
* ``--full``: full-size random-weight models of the listed families (SD1.5 UNet ~3.4 GB fp32, SDXL UNet
  ~10 GB, SD3-medium MMDiT ~8 GB, Flux ~48 GB), unpatched vs Palette Align and fast guidance, the
  overhead as a percentage of the step (target on a GPU at 1024^2: <= 5 %).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import torch  # noqa: E402
from family_models import FAMILY_NAMES, family_model  # noqa: E402

FULL_GB = {"SD15": 3.4, "SDXL": 10.3, "SD3": 8.3, "Flux": 47.6}  # fp32 weights


def load(device: str):
    """ComfyUI with this pack loaded, on ``device`` (the test host pins the CPU, so CUDA is set up first)."""
    if device == "cuda":
        path = str(Path(os.environ["COMFYUI_PATH"]).resolve())
        sys.path.insert(0, path)
        from comfy.cli_args import args

        args.cpu = False
        import comfy.model_management  # noqa: F401  (reads args.cpu once, at import)
    from comfyhost import load_comfyui

    return load_comfyui()


def variants(host, name: str, model, steps_per_sample: int, exact: bool) -> dict[str, object]:
    """The unpatched model and the node-patched clones of it, by label."""
    from comfyhost import run_node
    from family_models import tiny_vae
    from test_families_comfyui import palette

    channels = model.get_model_object("latent_format").latent_channels
    vae = tiny_vae(channels)  # the condition is encoded once and cached, so the VAE's size is off the step
    pal = palette(host)
    out = {"unpatched": model}
    (out["align"],) = run_node("PaletteAlign", model=model, vae=vae, palette=pal, stop_percent=0.0, strength=1.0)
    guide = {"palette": pal, "strength": 1.0, "steps_per_sample": steps_per_sample, "start_percent": 0.0}
    (out["fast"],) = run_node("PaletteGuidance", model=model, end_percent=1.0, decoder="fast", **guide)
    if exact:
        (out["exact"],) = run_node("PaletteGuidance", model=model, end_percent=1.0, decoder="exact", vae=vae, **guide)
    return out


def one_step(model, name: str, side: int, seed: int = 0) -> None:
    """One euler step of ComfyUI's KSampler path on a ``side x side`` latent (batch 1)."""
    from family_models import run_sample

    run_sample(model, name, seed=seed, steps=1, side=side)
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_interleaved(models: dict[str, object], name: str, side: int, rounds: int) -> dict[str, list[float]]:
    """Seconds per step for each variant: one warm-up each, then ``rounds`` rounds, order rotated per round."""
    labels = list(models)
    for label in labels:
        one_step(models[label], name, side)  # loads the model, encodes the alignment condition
    for label in labels[1:]:
        patch = models[label].model_options["sampler_post_cfg_function"][-1]
        if patch.calls < 1:  # the timed step must be one the patch acts on
            raise RuntimeError(f"{name} {label}: the patch did not run in the step")
    times: dict[str, list[float]] = {label: [] for label in labels}
    for r in range(rounds):
        for label in labels[r % len(labels) :] + labels[: r % len(labels)]:
            t0 = time.perf_counter()
            one_step(models[label], name, side)
            times[label].append(time.perf_counter() - t0)
    return times


def print_table(title: str, rows: list[tuple[str, dict[str, list[float]]]], percent: bool) -> None:
    print(f"== {title}")
    head = f"{'family':<6} {'variant':<10} {'median ms':>10} {'min ms':>10} {'ratio med':>10} {'ratio min':>10}"
    print(head + (f" {'overhead':>9}" if percent else ""))
    for name, times in rows:
        base_med, base_min = statistics.median(times["unpatched"]), min(times["unpatched"])
        for label, ts in times.items():
            med, mn = statistics.median(ts), min(ts)
            line = f"{name:<6} {label:<10} {med * 1e3:>10.1f} {mn * 1e3:>10.1f}"
            line += f" {med / base_med:>10.3f} {mn / base_min:>10.3f}"
            if percent and label != "unpatched":
                line += f" {100 * (med - base_med) / base_med:>8.1f}%"
            print(line)


def bench_small(host, names, side, rounds, steps_per_sample) -> None:

    rows = []
    for name in names:
        with torch.inference_mode():
            model = family_model(name)
        t0 = time.perf_counter()
        rows.append((name, time_interleaved(variants(host, name, model, steps_per_sample, True), name, side, rounds)))
        print(f"{name}: timed in {time.perf_counter() - t0:.0f} s", flush=True)
    print_table(
        f"small random-weight models, latent {side}x{side}, {rounds} interleaved rounds, one step "
        "(ratio = patched / unpatched)",
        rows,
        percent=False,
    )


def bench_full(host, names, side, rounds, steps_per_sample, dtype, device) -> None:
    import comfy.model_management as mm

    if device == "cuda":
        free_gb = torch.cuda.get_device_properties(0).total_memory / 2**30
    else:
        free_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    scale = 0.5 if dtype in (torch.float16, torch.bfloat16) else 1.0
    rows = []
    for name in names:
        need = FULL_GB[name] * scale
        if need * 1.4 > free_gb:  # weights plus activations and the build's transient copies
            print(f"{name}: full-size model ({need:.0f} GB weights) does not fit in {free_gb:.0f} GB: not measured")
            continue
        t0 = time.perf_counter()
        with torch.inference_mode():
            model = family_model(name, "full", dtype)
        print(f"{name}: full-size model built in {time.perf_counter() - t0:.0f} s", flush=True)
        models = variants(host, name, model, steps_per_sample, False)
        rows.append((name, time_interleaved(models, name, side, rounds)))
        del models, model
        mm.unload_all_models()
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
    if rows:
        print_table(
            f"full-size random-weight models, latent {side}x{side} ({side * 8}^2 images), {dtype}, "
            f"{rounds} interleaved rounds, one step (target on a GPU at 1024^2: fast and align <= 5%)",
            rows,
            percent=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default=",".join(FAMILY_NAMES), help="small-model families, comma-separated")
    parser.add_argument("--small-size", type=int, default=16, help="latent side for the small models")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds, small models")
    parser.add_argument("--full", default="", help="full-size families, comma-separated (e.g. SD15,SDXL,SD3)")
    parser.add_argument("--size", type=int, default=64, help="latent side for full-size models (128 = 1024^2)")
    parser.add_argument("--full-rounds", type=int, default=3, help="interleaved rounds, full-size models")
    parser.add_argument("--steps-per-sample", type=int, default=4)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--skip-small", action="store_true")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device")
    host = load(args.device)
    print(f"torch {torch.__version__}, {args.device}, threads {torch.get_num_threads()}, cpu count {os.cpu_count()}")
    if not args.skip_small:
        bench_small(host, args.families.split(","), args.small_size, args.rounds, args.steps_per_sample)
    if args.full:
        full, dtype = args.full.split(","), getattr(torch, args.dtype)
        bench_full(host, full, args.size, args.full_rounds, args.steps_per_sample, dtype, args.device)
    if args.device != "cuda":
        print("no GPU: GPU target not measured")


if __name__ == "__main__":
    main()
