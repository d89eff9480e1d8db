"""Data-parallel training on the CPU: two processes (DDP, gloo) against one, in one run (docs/scaling.md).

Each configuration runs in fresh processes (``accelerate launch`` for two) and times ``Trainer.train_step``
inside them after warm-up steps, so start-up is left out; the configurations alternate round by round
(this shared machine's speed drifts) and each keeps its best round. Per-process batch ``B``:

* the anchor, one process on one core (one thread), batch ``B``: the unit of work of one core;
* two processes on one core each, batch ``B`` each (global batch ``2B``): DDP. Scaling efficiency is the
  anchor's step time over this one's (1.0: two processes give twice the anchor's images per second);
* one process with two threads, batch ``2B``: the other way to use both cores, for comparison.

A step is the whole of ``Trainer.train_step``: loading and decoding the images, the condition recipe,
forward, backward (with DDP's gradient all-reduce), the loss all-reduce, clipping and AdamW. The
all-reduce of the adapter's gradients alone (gloo, two processes) is timed too.

    python bench/bench_train_ddp.py          # tests' ComfyUI tiny SDXL layout: all 70 attn2 layers, 2048-dim text
    python bench/bench_train_ddp.py --small  # the training tests' tiny UNet (11 layers, 32-dim text), 16 px
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402


def worker(args: argparse.Namespace) -> None:
    """One process of a configuration: warm up, time ``--steps`` training steps, print the result (main)."""
    torch.set_num_threads(args.threads)
    from train.data import ConstantText
    from train.models import PixelCodec, build_unet, tiny_unet_config
    from train.recipe import Recipe
    from train.toy.parts import toy_parts
    from train.toy.shapes import write_dataset
    from train.train_palette_adapter import ModelParts, TrainConfig, Trainer

    if args.small:
        unet_cfg = tiny_unet_config(32, (1, 1, 1), in_channels=3, sample_size=args.size, context_dim=32)
        parts = toy_parts(build_unet(unet_cfg, seed=0), PixelCodec(1), ConstantText(2, None, 32))
    else:
        from bench_train_step import PooledLatents

        unet_cfg = tiny_unet_config(64, (1, 2, 10), sample_size=args.size // 8)
        parts = ModelParts(build_unet(unet_cfg, seed=0), PooledLatents(), ConstantText(77, seed=0))
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(
            output=Path(tmp) / "run",
            data=write_dataset(tmp, 32, args.size, seed=0),
            resolution=args.size,
            batch_size=args.batch,
            max_steps=10**6,
            validate_every=0,
            checkpoint_every=10**9,
            mixed_precision="no",
            recipe=Recipe(),
            progress=False,
        )
        trainer = Trainer(cfg, parts)
        acc = trainer.accelerator
        batches = trainer.loader(0)
        for step in range(args.warmup):
            trainer.train_step(step, batches)
        times = []
        for step in range(args.warmup, args.warmup + args.steps):
            acc.wait_for_everyone()
            t0 = time.perf_counter()
            trainer.train_step(step, batches)
            acc.wait_for_everyone()
            times.append(time.perf_counter() - t0)
        allreduce = None
        if acc.num_processes > 1:
            import torch.distributed as dist

            grads = torch.zeros(sum(p.numel() for p in trainer.palette_model.adapter.parameters()))
            runs = []
            for _ in range(3):
                acc.wait_for_everyone()
                t0 = time.perf_counter()
                dist.all_reduce(grads)
                runs.append(time.perf_counter() - t0)
            allreduce = min(runs)
        if acc.is_main_process:
            adapter = trainer.palette_model.adapter
            result = {
                "processes": acc.num_processes,
                "threads": args.threads,
                "global_batch": trainer.global_batch,
                "step_s": statistics.median(times),
                "adapter_params_M": round(sum(p.numel() for p in adapter.parameters()) / 1e6, 1),
                "unet_params_M": round(sum(p.numel() for p in trainer.unet.parameters()) / 1e6, 1),
                "allreduce_s": allreduce,
            }
            print("RESULT " + json.dumps(result), flush=True)
        acc.end_training()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_config(args: argparse.Namespace, processes: int, threads: int, batch: int) -> dict:
    """Start one configuration in fresh processes and return its main process's result."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    flags = ["--worker", "--threads", str(threads), "--batch", str(batch), "--size", str(args.size)]
    flags += ["--steps", str(args.steps), "--warmup", str(args.warmup)] + (["--small"] if args.small else [])
    script = str(Path(__file__).resolve())
    if processes == 1:
        cmd = [sys.executable, script, *flags]
    else:  # accelerate's own launcher; ACCELERATE_USE_CPU makes its workers join with gloo on the CPU
        env.update(ACCELERATE_USE_CPU="true", HF_HOME=tempfile.mkdtemp(prefix="bench-ddp-hf-"))
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes)]
        cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
        cmd += ["--main_process_port", str(_free_port()), script, *flags]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(cmd[:6])} ... failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="the training tests' tiny UNet at 16 px")
    parser.add_argument("--size", type=int, help="image size (default 128, or 16 with --small)")
    parser.add_argument("--batch", type=int, help="per-process batch B (default 2, or 8 with --small)")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per configuration and round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds, best kept")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.size = args.size or (16 if args.small else 128)
    args.batch = args.batch or (8 if args.small else 2)
    if args.worker:
        worker(args)
        return
    b = args.batch
    configs = {
        "anchor: 1 process x 1 thread": (1, 1, b),
        "DDP: 2 processes x 1 thread": (2, 1, b),
        "1 process x 2 threads": (1, 2, 2 * b),
    }
    best: dict[str, dict] = {}
    for _ in range(args.rounds):
        for name, (procs, threads, batch) in configs.items():
            r = run_config(args, procs, threads, batch)
            if name not in best or r["step_s"] < best[name]["step_s"]:
                best[name] = r
    anchor, ddp, threads = (best[k] for k in configs)
    for name, r in best.items():
        r["images_per_s"] = round(r["global_batch"] / r["step_s"], 2)
        print(f"{name}, global batch {r['global_batch']}: step {r['step_s']:.3f} s, {r['images_per_s']} images/s")
    efficiency = anchor["step_s"] / ddp["step_s"]
    summary = {
        "unet_params_M": anchor["unet_params_M"],
        "adapter_params_M": anchor["adapter_params_M"],
        "size": args.size,
        "per_process_batch": b,
        "scaling_efficiency": round(efficiency, 3),
        "ddp_speedup_over_anchor": round(2 * efficiency, 3),
        "ddp_over_two_threads": round(threads["step_s"] / ddp["step_s"], 3),
        "gradient_allreduce_s": round(ddp["allreduce_s"], 4),
    }
    print(json.dumps({"configs": best, "summary": summary}, indent=2))
    print(
        f"2 processes: {2 * efficiency:.2f}x the anchor's images/s (scaling efficiency {efficiency:.2f}); "
        f"{threads['step_s'] / ddp['step_s']:.2f}x one process with two threads at the same global batch; "
        f"gradient all-reduce alone {ddp['allreduce_s'] * 1e3:.0f} ms of a {ddp['step_s']:.2f} s step"
    )


if __name__ == "__main__":
    main()
