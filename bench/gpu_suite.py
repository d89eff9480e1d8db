"""Every GPU figure in one call: adapter overhead, training-free overhead per family, training step vs its floor.

Run on one CUDA GPU with a ComfyUI checkout (docs/performance.md says how the last run went)::

    COMFYUI_PATH=/path/to/ComfyUI python bench/gpu_suite.py --out gpu-figures

All models are full-size with random weights, built and initialised on the GPU:

* ``adapter``: Apply Palette Adapter on a full SDXL UNet at 1024^2 (cfg 5: cond and uncond in one batch),
  on its default block and on all blocks, each without and with a negative palette, and on all blocks with
  its attention through the host's attention function, against the unpatched step; variants interleaved
  round by round (targets: default block <= 2 %, all blocks <= 8 %);
* ``training_free``: Palette Align and Palette Guidance (fast decoder) per sampling step on SDXL, SD3 and
  Flux at 1024^2, against the unpatched step of the same model (bench/bench_families.py's step: one euler
  step through ``comfy.sample.sample``; target <= 5 %);
* ``train_step``: bench/bench_train_step.py ``--full`` (stage 1, 512^2, batch 16, bf16, gradient
  checkpointing) in a child process: the trainer's step against the frozen UNet's forward + backward,
  steps/s and peak memory (target <= 1.2x), and the op table of three profiled steps;
* ``profile`` (not in the default run): SDXL's step unpatched, with Palette Align, Palette Guidance and the
  adapter on all blocks, wall time against GPU-busy time, and the op tables in ``OUT/profile.txt``.

Each section's result is written to ``OUT/gpu_suite.json`` and ``OUT/gpu_suite.md`` as soon as it ends, so a
run stopped at its time limit keeps what it measured; a section that fails records its error and the next
one runs. ``--budget`` (seconds) skips sections that would not finish in time.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "tests", ROOT / "bench"):
    sys.path.insert(0, str(path))

import torch  # noqa: E402

DEFAULT_BLOCK = "up_blocks.0.attentions.1"
ESTIMATE_S = {"adapter": 90, "training_free": 240, "train_step": 150, "profile": 60}  # on an H100/H200, builds included
FAMILIES = ("SDXL", "SD3", "Flux")


SCALE = {"size": "full", "device": "cuda"}  # --smoke: the tests' tiny models on the CPU, to check the script


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def overhead(times: dict[str, list[float]], base: str = "unpatched") -> dict[str, dict[str, float]]:
    """Median and min ms per step and overhead % (median over rounds of variant / base of the same round)."""
    out = {}
    for name, ts in times.items():
        row = {"median_ms": round(statistics.median(ts) * 1e3, 2), "min_ms": round(min(ts) * 1e3, 2)}
        if name != base:
            ratios = [a / b for a, b in zip(ts, times[base])]
            row["overhead_pct"] = round(100 * (statistics.median(ratios) - 1), 2)
        out[name] = row
    return out


def release(*objs) -> None:
    """Drop the models of a section and give their memory back before the next one."""
    import comfy.model_management as mm

    del objs
    mm.unload_all_models()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def adapter_section(host, size: int, rounds: int, steps: int, dtype: torch.dtype) -> dict:
    """Apply Palette Adapter on a full SDXL UNet: default block and all blocks, without and with a negative."""
    from bench_adapter import attn2, per_step
    from comfyhost import run_node, sample
    from family_models import family_model

    model = family_model("SDXL", SCALE["size"], dtype, device=torch.device(SCALE["device"]))
    pack = host.pack
    comfy_attention = pack.nodes.adapter_patch.comfy_attention
    layers = pack.nodes.model_family.attention_layers_of(model)
    adapter = pack.palette_core.adapter.init_adapter(layers.dims, seed=1)
    parse = pack.palette_core.palette.Palette.parse
    palette = parse("#e63946:2, #f1faee, #a8dadc, #457b9d, #1d3557")
    (negative,) = run_node("NegativePalette", palette=parse("#00ff00, #ff00ff"), weight=0.3)
    every = ", ".join(dict.fromkeys(x.block for x in layers))

    def patched(blocks: str, neg=None):
        inputs = {"adapter": adapter, "condition": palette, "weight": 1.0, "start_percent": 0.0, "end_percent": 1.0}
        return run_node("ApplyPaletteAdapter", model=model, blocks=blocks, negative=neg, **inputs)[0]

    models = {
        "unpatched": model,
        "default block": patched(DEFAULT_BLOCK),
        "all blocks": patched(every),
        "default block + negative": patched(DEFAULT_BLOCK, negative),
        "all blocks + negative": patched(every, negative),
    }
    host_attention = patched(every)  # the adapter's attention through the host's function, as before the cache
    next(iter(attn2(host_attention).values())).run.attention = lambda *args: comfy_attention(*args)
    models["all blocks, host attention"] = host_attention
    times = per_step(models, steps=steps, size=size, rounds=rounds, sync=sync)
    # the same sampling through both forms of the adapter's attention: they must agree to the dtype's rounding
    direct, host = (sample(models[name], steps=2, size=size) for name in ("all blocks", "all blocks, host attention"))
    agreement = float((direct.float() - host.float()).abs().max() / host.float().abs().max())
    result = {
        "model": "SDXL UNet, full size, random weights",
        "image": f"{size}x{size}",
        "dtype": str(dtype).removeprefix("torch."),
        "cfg": 5,
        "rounds": rounds,
        "steps_per_round": steps,
        "layers": {"default block": len(layers.select([DEFAULT_BLOCK])), "all blocks": len(layers)},
        "targets_pct": {"default block": 2.0, "all blocks": 8.0},
        "variants": overhead(times),
        "direct_vs_host_attention_max_rel_diff": agreement,
    }
    release(models, model)
    return result


def training_free_section(host, families: list[str], side: int, rounds: int, dtype: torch.dtype) -> dict:
    """Palette Align and Palette Guidance (fast) per step on full-size models of each family."""
    from bench_families import time_interleaved, variants
    from family_models import family_model

    out = {
        "latent": f"{side}x{side}",
        "image": f"{side * 8}x{side * 8}",
        "dtype": str(dtype).removeprefix("torch."),
        "rounds": rounds,
        "target_pct": 5.0,
        "families": {},
    }
    for name in families:
        t0 = time.perf_counter()
        try:
            with torch.inference_mode():
                model = family_model(name, SCALE["size"], dtype, device=torch.device(SCALE["device"]))
            built = time.perf_counter() - t0
            models = variants(host, name, model, steps_per_sample=4, exact=False)
            times = time_interleaved(models, name, side, rounds)
            out["families"][name] = {"built_s": round(built, 1), "variants": overhead(times)}
            release(models, model)
        except Exception as exc:  # one family's failure must not cost the others' figures
            out["families"][name] = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:]}
            release()
        print(f"training-free {name}: {time.perf_counter() - t0:.0f} s", flush=True)
    return out


def profile_section(host, side: int, dtype: torch.dtype, out_dir: Path) -> dict:
    """Where the time of one step goes: GPU-busy time (profiled kernels) against wall time, per variant.

    A variant whose wall time grows while its GPU-busy time does not is bound by the host's Python and
    kernel launches, not by arithmetic; the op tables (``profile.txt``) say which calls cost what.
    """
    from bench_families import one_step, variants
    from comfyhost import run_node
    from family_models import family_model
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    model = family_model("SDXL", SCALE["size"], dtype, device=torch.device(SCALE["device"]))
    models = variants(host, "SDXL", model, steps_per_sample=4, exact=False)
    layers = host.pack.nodes.model_family.attention_layers_of(model)
    adapter = host.pack.palette_core.adapter.init_adapter(layers.dims, seed=1)
    palette = host.pack.palette_core.palette.Palette.parse("#e63946:2, #f1faee, #a8dadc, #457b9d, #1d3557")
    every = ", ".join(dict.fromkeys(x.block for x in layers))
    inputs = {"adapter": adapter, "condition": palette, "weight": 1.0, "start_percent": 0.0, "end_percent": 1.0}
    models["adapter, all blocks"] = run_node("ApplyPaletteAdapter", model=model, blocks=every, **inputs)[0]
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    steps, out, tables = 3, {}, []
    for name, m in models.items():
        one_step(m, "SDXL", side)  # warm-up
        t0 = time.perf_counter()
        for _ in range(steps):
            one_step(m, "SDXL", side)
        wall = (time.perf_counter() - t0) / steps
        with profile(activities=activities) as prof:
            for _ in range(steps):
                one_step(m, "SDXL", side)
            sync()
        kernels = [e for e in prof.events() if e.device_type == DeviceType.CUDA]  # one stream: no overlap
        busy = sum(e.time_range.elapsed_us() for e in kernels) / steps / 1e3
        events = prof.key_averages()
        out[name] = {"wall_ms": round(wall * 1e3, 2), "gpu_busy_ms": round(busy, 2)}
        for key in ("self_cuda_time_total", "self_cpu_time_total"):
            tables.append(f"== {name}, {steps} steps, by {key}\n{events.table(sort_by=key, row_limit=15)}")
    (out_dir / "profile.txt").write_text("\n\n".join(tables))
    release(models, model)
    return {"model": "SDXL", "image": f"{side * 8}x{side * 8}", "per_step": out}


def train_step_section(out_dir: Path, timeout: float) -> dict:
    """bench/bench_train_step.py --full in a child process (its own CUDA context and memory)."""
    path = out_dir / "train_step.json"
    cmd = [sys.executable, str(ROOT / "bench" / "bench_train_step.py"), "--json", str(path)]
    cmd += ["--full"] if SCALE["size"] == "full" else ["--steps", "1", "--repeat", "1", "--size", "64", "--batch", "1"]
    cmd += ["--profile", str(out_dir / "train_step_profile.txt")]  # the op table: where a step's time goes
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"bench_train_step exited {proc.returncode}: {proc.stderr[-3000:]}")
    result = json.loads(path.read_text())
    result["target_ratio"] = 1.2
    result["summary"] = proc.stdout.strip().splitlines()[-1]
    return result


def markdown(report: dict) -> str:
    """The report as the tables of docs/performance.md."""
    lines = [f"GPU suite, {report['date']}, {report['gpu']}, torch {report['torch']}, ComfyUI {report['comfyui']}", ""]
    sec = report["sections"]
    if "adapter" in sec and "variants" in sec["adapter"]:
        a = sec["adapter"]
        lines += [
            f"Apply Palette Adapter, full SDXL UNet, {a['image']}, {a['dtype']}, cfg {a['cfg']}, "
            f"{a['rounds']} interleaved rounds of {a['steps_per_round']} steps",
            "",
            "| variant | median ms/step | min ms/step | overhead | target |",
            "| --- | --- | --- | --- | --- |",
        ]
        agree = a["direct_vs_host_attention_max_rel_diff"]
        notes = f"Sampling with the adapter's own attention and with the host's agrees to {agree:.1e} (relative)."
        for name, row in a["variants"].items():
            over = f"{row['overhead_pct']:+.1f} %" if "overhead_pct" in row else ""
            target = a["targets_pct"].get(name.removesuffix(" + negative"))
            lines.append(
                f"| {name} | {row['median_ms']:.1f} | {row['min_ms']:.1f} | {over} | "
                f"{f'<= {target:.0f} %' if target else ''} |"
            )
        lines += ["", notes, ""]
    if "training_free" in sec and "families" in sec["training_free"]:
        t = sec["training_free"]
        lines += [
            f"Training-free nodes per sampling step, {t['image']}, {t['dtype']}, {t['rounds']} interleaved rounds "
            f"(target <= {t['target_pct']:.0f} %)",
            "",
            "| family | variant | median ms/step | overhead |",
            "| --- | --- | --- | --- |",
        ]
        for fam, res in t["families"].items():
            if "error" in res:
                lines.append(f"| {fam} | failed: {res['error'][:120]} | | |")
                continue
            for name, row in res["variants"].items():
                over = f"{row['overhead_pct']:+.1f} %" if "overhead_pct" in row else ""
                lines.append(f"| {fam} | {name} | {row['median_ms']:.1f} | {over} |")
        lines.append("")
    if "train_step" in sec and "step_s" in sec["train_step"]:
        s = sec["train_step"]
        lines += [
            f"Training step, {s['unet']}, {s['size']}^2, batch {s['batch']}, {s['precision']}, "
            f"checkpointing {s['gradient_checkpointing']}",
            "",
            "| step s | floor s | ratio (target <= 1.2) | matched floor s | ratio matched | steps/s "
            "| peak GiB step / floor |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            f"| {s['step_s']:.3f} | {s['floor_s']:.3f} | {s['ratio']:.2f} | {s['floor_matched_s']:.3f} | "
            f"{s['ratio_matched']:.2f} | {s['steps_per_s']:.2f} | "
            f"{s.get('peak_memory_GiB_step', '?')} / {s.get('peak_memory_GiB_floor', '?')} |",
            "",
        ]
    if "profile" in sec and "per_step" in sec["profile"]:
        lines += [
            f"Where a step's time goes, {sec['profile']['model']} at {sec['profile']['image']} "
            "(op tables in profile.txt)",
            "",
            "| variant | wall ms/step | GPU busy ms/step |",
            "| --- | --- | --- |",
        ]
        for name, row in sec["profile"]["per_step"].items():
            lines.append(f"| {name} | {row['wall_ms']:.1f} | {row['gpu_busy_ms']:.1f} |")
        lines.append("")
    for name, res in sec.items():
        if "error" in res:
            lines += [f"{name}: failed: {res['error']}", ""]
    for name in report["skipped"]:
        lines += [f"{name}: skipped (time budget)", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_suite.json and gpu_suite.md")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for the whole suite")
    parser.add_argument("--sections", default="adapter,training_free,train_step")
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--size", type=int, default=1024, help="image side for the sampling sections")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default="bfloat16")
    parser.add_argument("--smoke", action="store_true", help="tiny models on the CPU: checks the script, no figures")
    args = parser.parse_args()
    if args.smoke:
        SCALE.update(size="tiny", device="cpu")
    elif not torch.cuda.is_available():
        parser.error("no CUDA device: the suite measures GPU figures only (the CPU benches are bench/bench_*.py)")
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    dtype = getattr(torch, args.dtype)
    from bench_families import load

    host = load(SCALE["device"])
    import comfyui_version

    report = {
        "date": datetime.date.today().isoformat(),
        "gpu": torch.cuda.get_device_name() if SCALE["device"] == "cuda" else "none (--smoke, CPU)",
        "torch": torch.__version__,
        "comfyui": comfyui_version.__version__,
        "sections": {},
        "skipped": [],
    }
    runs = {
        "adapter": lambda: adapter_section(host, args.size, args.rounds, 4, dtype),
        "training_free": lambda: training_free_section(
            host, args.families.split(","), args.size // 8, args.rounds, dtype
        ),
        "train_step": lambda: train_step_section(args.out, args.budget - (time.perf_counter() - start)),
        "profile": lambda: profile_section(host, args.size // 8, dtype, args.out),
    }
    for name in args.sections.split(","):
        left = args.budget - (time.perf_counter() - start)
        if left < ESTIMATE_S[name]:
            report["skipped"].append(name)
            continue
        t0 = time.perf_counter()
        try:
            report["sections"][name] = runs[name]()
        except Exception as exc:  # keep the other sections' figures
            error = f"{type(exc).__name__}: {exc}"
            report["sections"][name] = {"error": error, "trace": traceback.format_exc()[-3000:]}
        report["sections"][name]["seconds"] = round(time.perf_counter() - t0, 1)
        (args.out / "gpu_suite.json").write_text(json.dumps(report, indent=2))
        (args.out / "gpu_suite.md").write_text(markdown(report))
        print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    sys.exit(main())
