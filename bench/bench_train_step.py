"""One Palette-Adapter training step against the frozen UNet's forward + backward alone, in one run.

The step is the trainer's own ``Trainer.train_step``: the docs/design.md §8 condition recipe (histograms, median-cut
palettes, Quadratic-Chi distances), the UNet forward with the adapter, backward, gradient clipping and the
AdamW update, with the recipe drawn as ``Trainer.train`` draws it by default: two micro-steps ahead in a
worker thread on a GPU, inside the step on the CPU; both ways and the recipe alone are reported. Both
timings use precomputed latents: the VAE encode is left out, as with the trainer's ``--latent-cache``.

Two floors, the same UNet on the same batch with no adapter:

* ``floor_s`` (the issue's floor): forward + backward through the whole network (the input requires
  grad), as when every layer trains;
* ``floor_matched_s``: forward + backward only as far back as the step's own backward must go (to the
  first adapted layer in execution order; for stage 1 that skips ``down_blocks.0`` and ``conv_in``).
  ``step_s - floor_matched_s`` is the adapter's own cost: its attention, its gradients, the optimizer.

Default (CPU): the tests' tiny SDXL-layout UNet (all 70 cross-attention layers, 2048-dim text) on 256 px
images, batch 4, float32. Its adapter is 64 % of the UNet's size (SDXL's is 15 %), so this setting weighs
the adapter's cost far more than SDXL does. ``--full``: a full-size random-weight SDXL UNet (2.57 B); on a
GPU at 512 x 512, batch 16, bf16, gradient checkpointing, with steps/s and peak memory; on the CPU at
256 x 256, batch 2, float32 (about 18 GB of memory and 5 minutes).

    python bench/bench_train_step.py            # CPU, target: step <= 1.15 x floor (GPU: <= 1.2 x)
    python bench/bench_train_step.py --full     # full-size SDXL UNet (CPU or one CUDA GPU)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from train.data import ConstantText  # noqa: E402
from train.models import build_unet, sdxl_unet_config, tiny_unet_config  # noqa: E402
from train.processor import time_ids  # noqa: E402
from train.recipe import Recipe  # noqa: E402
from train.toy.shapes import write_dataset  # noqa: E402
from train.train_palette_adapter import ModelParts, TrainConfig, Trainer  # noqa: E402


class PooledLatents:
    """Stand-in for cached VAE latents: 8x average pooling to 4 channels (RGB and their mean)."""

    factor = 8
    channels = 4

    def encode(self, images, generator=None):
        x = F.avg_pool2d(images * 2.0 - 1.0, 8)
        return torch.cat([x, x.mean(1, keepdim=True)], dim=1)

    def decode(self, latents):
        return ((F.interpolate(latents[:, :3].float(), scale_factor=8) + 1.0) / 2.0).clamp(0, 1)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def profile_steps(step, floor, device: torch.device, path: Path) -> None:
    """Profile three calls of ``step`` and of ``floor``; write the step's op table by self device (or CPU) time
    to ``path``, then each op's time per step beyond the floor's (where the step's extra time goes)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    tables = []
    for fn in (step, floor):
        with profile(activities=activities) as prof:
            for _ in range(3):
                fn()
            sync(device)
        tables.append(prof.key_averages())
    own = {e.key: e for e in tables[0]}
    base = {e.key: e for e in tables[1]}
    rows = []
    for name in own.keys() | base.keys():
        t = [getattr(d[name], key) / 3e3 if name in d else 0.0 for d in (own, base)]  # ms per call of fn
        n = [d[name].count // 3 if name in d else 0 for d in (own, base)]
        rows.append((t[0] - t[1], name, t[0], t[1], n[0], n[1]))
    rows.sort(reverse=True)
    lines = [tables[0].table(sort_by=key, row_limit=40), "", "Per step, beyond the matched floor (ms; calls):"]
    lines += [f"{'op':<60} {'step':>10} {'floor':>10} {'extra':>10} {'calls':>13}"]
    lines += [f"{n[:60]:<60} {a:>10.1f} {b:>10.1f} {d:>10.1f} {c0:>6}/{c1:<6}" for d, n, a, b, c0, c1 in rows[:30]]
    total = sum(r[0] for r in rows)
    lines.append(f"{'all ops':<60} {sum(r[2] for r in rows):>10.1f} {sum(r[3] for r in rows):>10.1f} {total:>10.1f}")
    path.write_text("\n".join(lines) + "\n")


def first_executed(unet: torch.nn.Module, layers, run) -> str:
    """The name of the first of ``layers`` that a forward pass (``run()``) of ``unet`` reaches."""
    modules = dict(unet.named_modules())
    order: list[str] = []
    handles = [modules[name].register_forward_hook(lambda m, a, o, name=name: order.append(name)) for name in layers]
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    return order[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="full-size SDXL UNet (GPU: 512 px, batch 16, bf16)")
    parser.add_argument("--steps", type=int, help="timed steps per measurement (default 5; 2 for --full on a CPU)")
    parser.add_argument("--repeat", type=int, help="interleaved rounds, best kept (default 3; 2 for --full on a CPU)")
    parser.add_argument("--size", type=int, help="image size (default 256, or 512 with --full on a GPU)")
    parser.add_argument("--batch", type=int, help="batch (default 4; --full: 16 on a GPU, 2 on a CPU)")
    parser.add_argument("--no-checkpointing", action="store_true", help="--full without gradient checkpointing")
    parser.add_argument("--stage2", action="store_true", help="train only up_blocks.0.attentions.1 (stage 2)")
    parser.add_argument(
        "--profile", type=Path, help="also profile 3 training steps and 3 matched floors; write the op tables here"
    )
    parser.add_argument("--json", type=Path, help="also write the result as JSON to this file")
    args = parser.parse_args()
    gpu = torch.cuda.is_available()
    size = args.size or (512 if args.full and gpu else 256)
    batch = args.batch or ((16 if gpu else 2) if args.full else 4)
    slow = args.full and not gpu
    args.steps = args.steps or (2 if slow else 5)
    args.repeat = args.repeat or (2 if slow else 3)

    unet_cfg = sdxl_unet_config() if args.full else tiny_unet_config(64, (1, 2, 10), sample_size=size // 8)
    unet = build_unet(unet_cfg, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = write_dataset(tmp, 32, size, seed=0)
        cfg = TrainConfig(
            output=Path(tmp) / "run",
            data=manifest,
            resolution=size,
            batch_size=batch,
            max_steps=10_000,
            validate_every=0,
            checkpoint_every=10**9,
            mixed_precision="bf16" if args.full and gpu else "no",
            gradient_checkpointing=args.full and gpu and not args.no_checkpointing,
            blocks=["up_blocks.0.attentions.1"] if args.stage2 else None,
            recipe=Recipe(),
            progress=False,
        )
        trainer = Trainer(cfg, ModelParts(unet, PooledLatents(), ConstantText(77, seed=0)))
        device = trainer.device
        batches = trainer.loader(0)
        fixed = next(batches)

        def repeat_batches():
            while True:
                yield fixed

        ahead = trainer.prepared(repeat_batches())  # as train() runs: the recipe drawn ahead in a thread
        inline = repeat_batches()  # the recipe drawn inside the step
        step_no = [0]

        def one_step(stream=ahead):
            trainer.train_step(step_no[0], stream)
            step_no[0] += 1

        latents = PooledLatents().encode(fixed[1]).to(device, trainer.weight_dtype)
        # contiguous: a batch of captions has one embedding each, and the step's text is per sample too (its
        # text dropout materialises it); the constant text's expanded view let the floor skip that work
        emb, pooled = (
            t.to(device, trainer.weight_dtype).contiguous() for t in trainer.text.embed([""] * latents.shape[0])
        )
        ids = time_ids(latents.shape[0], size, size, device)
        steps_t = torch.full((latents.shape[0],), 500, device=device)

        def floor(to_input: bool = True):
            trainer.palette_model.context.tokens = None  # the plain UNet: its attn2 processors add nothing
            x = latents.detach().requires_grad_(to_input)
            with trainer.accelerator.autocast():
                out = trainer.unet(x, steps_t, emb, added_cond_kwargs={"text_embeds": pooled, "time_ids": ids}).sample
            if torch.is_grad_enabled():
                if not out.requires_grad:
                    raise RuntimeError("the floor's output does not require grad: its backward would not run")
                F.mse_loss(out.float(), torch.zeros_like(out, dtype=torch.float32)).backward()

        # the matched floor's backward starts at the first adapted layer's output, as the step's must
        first = first_executed(trainer.unet, trainer.palette_model.adapter.layers, lambda: floor(False))
        cut = dict(trainer.unet.named_modules())[first]

        def matched_floor():
            hook = cut.register_forward_hook(lambda m, a, out: out.detach().requires_grad_(True))
            try:
                floor(False)
            finally:
                hook.remove()

        def peak(fn) -> float | None:
            if device.type != "cuda":
                return None
            torch.cuda.reset_peak_memory_stats()
            fn()
            sync(device)
            return torch.cuda.max_memory_allocated() / 2**30

        # interleaved rounds, best of each: a machine whose speed drifts during the run (shared cores, clocks)
        # then moves every measurement alike instead of skewing the ratios
        runs = {
            "ahead": one_step,
            "inline": lambda: one_step(inline),
            "floor": floor,
            "matched": matched_floor,
            "recipe": lambda: trainer.draw(0, fixed[1]),
        }
        peak_step, peak_floor = peak(one_step), peak(floor)  # also the warm-up of both
        for fn in runs.values():
            fn()
        sync(device)
        best = dict.fromkeys(runs, float("inf"))
        for _ in range(args.repeat):
            for name, fn in runs.items():
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    fn()
                sync(device)
                best[name] = min(best[name], (time.perf_counter() - t0) / args.steps)
        t_ahead, t_inline, t_floor, t_matched, t_recipe = (best[k] for k in runs)
        # the headline is what Trainer.train does on this device: ahead on a GPU, inline on the CPU (where a
        # thread would only compete with the step for the same cores)
        t_step = t_ahead if device.type != "cpu" else t_inline
        if args.profile:  # last: the profiler can leave overhead behind that would inflate later timings
            stream = inline if device.type == "cpu" else ahead  # as the headline: what Trainer.train does
            profile_steps(lambda: one_step(stream), matched_floor, device, args.profile)
        adapter = trainer.palette_model.adapter
        result = {
            "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(),
            "unet": "SDXL (2.57 B)" if args.full else "tiny SDXL layout (64 ch, 70 attn2 layers)",
            "unet_params_M": round(sum(p.numel() for p in trainer.unet.parameters()) / 1e6, 1),
            "size": size,
            "batch": batch,
            "precision": cfg.mixed_precision,
            "gradient_checkpointing": cfg.gradient_checkpointing,
            "adapter_layers": len(adapter.layers),
            "adapter_params_M": round(sum(p.numel() for p in adapter.parameters()) / 1e6, 1),
            "step_s": round(t_step, 4),
            "step_recipe_ahead_s": round(t_ahead, 4),
            "step_recipe_inline_s": round(t_inline, 4),
            "recipe_alone_s": round(t_recipe, 4),
            "floor_s": round(t_floor, 4),
            "ratio": round(t_step / t_floor, 3),
            "first_adapted_layer": first,
            "floor_matched_s": round(t_matched, 4),
            "ratio_matched": round(t_step / t_matched, 3),
            "steps_per_s": round(1.0 / t_step, 3),
        }
        if peak_step is not None:
            result["peak_memory_GiB_step"] = round(peak_step, 2)
            result["peak_memory_GiB_floor"] = round(peak_floor, 2)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print(
        f"training step {t_step * 1e3:.1f} ms, frozen UNet forward+backward {t_floor * 1e3:.1f} ms: "
        f"{t_step / t_floor:.2f}x the floor (target <= {1.15 if device.type == 'cpu' else 1.2}x); backward matched "
        f"to the step's ({first}): "
        f"{t_matched * 1e3:.1f} ms, {t_step / t_matched:.2f}x; recipe drawn ahead in a thread / in the step: "
        f"{t_ahead / t_floor:.2f}x / {t_inline / t_floor:.2f}x"
    )


if __name__ == "__main__":
    main()
