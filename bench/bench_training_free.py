"""Training-free palette control: matching quality and speed, guidance cost, in one run.

Matching (host-independent: ``/work/venv/bin/python bench/bench_training_free.py``):
* total squared-distance cost against the exact optimum (POT's network simplex, identical targets merged)
  at n = 1024 and 2048, ours and the greedy reference (bench/greedy_match.py), x̂0-like sources against
  condition latents of random palettes (bench/synthetic_latents.py);
* time at n = 16,384 (a 1024x1024 SDXL latent) against the greedy reference (its faster, sequential
  form; the batched-rounds form is timed once); cold (clusters and duals from scratch) and warm
  (clusters cached, duals of the previous step), as the node runs after its first step.

Guidance and alignment against UNet steps (with a ComfyUI checkout: ``COMFYUI_PATH=... comfy-venv/bin/python
bench/bench_training_free.py --comfy``), on the tiny SDXL-layout UNet of the tests and a small VAE:
* fast guidance (steps_per_sample forward+backward passes of the linear preview map) per sampling step
  against one UNet evaluation (batch 2: cond + uncond);
* exact guidance (steps_per_sample VAE decoder forward+backward passes) against the original
  SW-Guidance's 8 UNet + VAE forward+backward passes per step, both counted and timed here;
* alignment (one match per image) per sampling step against one UNet evaluation.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402
import ot  # noqa: E402
import torch  # noqa: E402

from bench._timing import best_of  # noqa: E402
from bench.greedy_match import greedy_match, greedy_match_rounds  # noqa: E402
from bench.synthetic_latents import matching_problem  # noqa: E402
from palette_core import alignment as A  # noqa: E402
from palette_core import sw_guidance as S  # noqa: E402


def cost(s: torch.Tensor, t: torch.Tensor, perm: torch.Tensor) -> float:
    return float(((s.double() - t.double()[perm]) ** 2).sum())


def optimum(s: torch.Tensor, t: torch.Tensor) -> float:
    uniq, counts = torch.unique(t.double(), dim=0, return_counts=True)
    c = (torch.cdist(s.double(), uniq) ** 2).numpy()
    return float(ot.emd2(np.ones(s.shape[0]), counts.double().numpy(), c, numItermax=10**8))


def bench_quality(cases: list[tuple[int, int]]) -> None:
    print("== matching cost / exact optimum (x̂0-like sources, condition latents of k-colour palettes)")
    for shape in ((32, 32), (32, 64)):
        ours_r, greedy_r = [], []
        for seed, k in cases:
            s, t = matching_problem(shape[0], k=k, seed=seed) if shape[0] == shape[1] else _rect(shape, k, seed)
            opt = optimum(s, t)
            ours_r.append(cost(s, t, A.match(s, t)) / opt)
            greedy_r.append(cost(s, t, greedy_match(s, t, seed)[0]) / opt)
        n = shape[0] * shape[1]
        print(
            f"n={n}: ours median {statistics.median(ours_r):.4f} max {max(ours_r):.4f} | greedy median "
            f"{statistics.median(greedy_r):.3f} max {max(greedy_r):.3f}  ({len(cases)} problems; target ours <= 1.10)"
        )


def _rect(shape, k, seed):
    from bench.synthetic_latents import condition_like, patch_vae, x0_like

    enc = patch_vae(seed)
    s = x0_like(enc, 1, *shape, seed=seed)[0].flatten(1).T.contiguous()
    return s, condition_like(enc, *shape, k=k, seed=seed)


def bench_speed(side: int, cases: list[tuple[int, int]], rounds_cases: int) -> None:
    print(f"== matching time at n = {side * side} (ours cold: clusters + transport from scratch, as match() runs;")
    print("   ours warm: one sampling step of AlignmentCondition, clusters cached, previous step's duals)")
    cold_r, warm_r = [], []
    for i, (seed, k) in enumerate(cases):
        s, t = matching_problem(side, k=k, seed=seed)
        cold = best_of(lambda s=s, t=t: A.match(s, t), repeat=3, warmup=0)
        cond = A.AlignmentCondition(t)
        x0 = s.T.reshape(1, 4, side, side)
        cond.align(x0)
        x1 = x0 + 0.1 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))  # the next x̂0
        t0 = time.perf_counter()
        cond.align(x1)  # one call: a second would start from x1's own duals
        warm = time.perf_counter() - t0
        greedy = best_of(lambda s=s, t=t, seed=seed: greedy_match(s, t, seed), repeat=2, warmup=0)
        gperm = greedy_match(s, t, seed)[0]
        cold_r.append(greedy / cold)
        warm_r.append(greedy / warm)
        line = (
            f"k={k} seed={seed}: ours cold {cold * 1e3:.0f} ms, warm {warm * 1e3:.0f} ms | greedy {greedy * 1e3:.0f} ms"
            f" -> {greedy / cold:.1f}x cold, {greedy / warm:.1f}x warm; cost ours/greedy "
            f"{cost(s, t, A.match(s, t)) / cost(s, t, gperm):.3f}"
        )
        if i < rounds_cases:
            t0 = time.perf_counter()
            _, rounds = greedy_match_rounds(s, t, seed)
            line += f" | batched-rounds greedy {(time.perf_counter() - t0) * 1e3:.0f} ms ({rounds} NN rounds)"
        print(line)
    print(
        f"median speed-up over the greedy reference: {statistics.median(cold_r):.1f}x cold (min {min(cold_r):.1f}x), "
        f"{statistics.median(warm_r):.1f}x per warm step (target >= 5x)"
    )


# ---------------------------------------------------------------------------------------------- ComfyUI part


def tiny_vae(ch: int):
    import comfy.sd
    from comfy.ldm.models.autoencoder import AutoencoderKL
    from comfyhost import init_random_

    dd = {
        "double_z": True,
        "z_channels": 4,
        "resolution": 256,
        "in_channels": 3,
        "out_ch": 3,
        "ch": ch,
        "ch_mult": [1, 2, 4, 4],
        "num_res_blocks": 2 if ch >= 128 else 1,
        "attn_resolutions": [],
        "dropout": 0.0,
    }
    ae = AutoencoderKL(ddconfig=dd, embed_dim=4)
    init_random_(ae, 3)
    return comfy.sd.VAE(sd=ae.state_dict(), config={"params": {"ddconfig": dd, "embed_dim": 4}})


class Counted:
    """Wraps a callable and counts its calls."""

    def __init__(self, fn):
        self.fn, self.n = fn, 0

    def __call__(self, *a, **k):
        self.n += 1
        return self.fn(*a, **k)


def bench_comfy(size: int, steps_per_sample: int, vae_ch: int, repeat: int, channels: int, exact: bool) -> None:
    import comfyhost
    from comfyhost import load_comfyui, tiny_sdxl

    host = load_comfyui()
    comfyhost.TINY_SDXL_CHANNELS = channels
    nodes = sys.modules[f"{host.pack.__name__}.nodes.training_free_nodes"]
    model = tiny_sdxl(seed=0)
    bm = model.model
    h = size // 8
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, h, h, generator=g) * 3.0
    sigma = torch.full((2,), 3.0)
    ctx = torch.randn(2, 77, 2048, generator=g)
    y = torch.randn(2, 2816, generator=g)
    palette = host.pack.palette_core.palette.Palette.parse("#e63946:2, #f1faee, #a8dadc, #457b9d, #1d3557")
    colors, weights = palette.colors, palette.weights

    def unet(xx):
        return bm.apply_model(xx, sigma[: xx.shape[0]], c_crossattn=ctx[: xx.shape[0]], y=y[: xx.shape[0]])

    with torch.no_grad():
        t_unet = best_of(lambda: unet(x), repeat=repeat)
        x0 = unet(x)
    kind = "full-size random-weight SDXL UNet" if channels == 320 else f"SDXL-layout UNet with {channels} channels"
    print(f"== per sampling step, {kind} at {size}x{size} (latent {h}x{h}), {x.device}, batch 2 (cfg)")
    print(f"UNet evaluation (cond + uncond): {t_unet * 1e3:.0f} ms")

    t_fast = best_of(lambda: S.guide(x0, colors, weights, steps=steps_per_sample), repeat=repeat)
    print(
        f"fast guidance, {steps_per_sample} steps: {t_fast * 1e3:.1f} ms = {100 * t_fast / t_unet:.1f}% of the UNet "
        "evaluation (target on a GPU at 1024^2: <= 5%)"
    )
    vae = tiny_vae(vae_ch)
    encode = nodes.vae_encoder(vae)
    cond = A.AlignmentCondition(A.condition_latents(lambda img: encode(img, bm), colors, weights, h, h))
    t0 = time.perf_counter()
    cond.align(x0)
    t_cold = time.perf_counter() - t0
    t_align = best_of(lambda: cond.align(x0 + 0.01), repeat=repeat)
    print(
        f"alignment (match of {h * h} vectors x 2 images): first step {t_cold * 1e3:.1f} ms, then "
        f"{t_align * 1e3:.1f} ms = {100 * t_align / t_unet:.1f}% of the UNet evaluation"
    )
    if not exact:
        return

    decode = Counted(nodes.vae_decoder(vae))
    dec_model = Counted(lambda z: decode(z, bm))
    t0 = time.perf_counter()
    S.guide(x0, colors, weights, steps=steps_per_sample, decode=dec_model)
    t_exact = time.perf_counter() - t0
    n_exact = dec_model.n

    # the original SW-Guidance: per step, 8 times: x_t -> UNet -> x̂0 -> VAE decode -> SW loss -> backward to x_t
    unet_calls = Counted(unet)

    def original_step():
        xt = x.detach().clone()
        d = S.random_rotations(16, torch.Generator().manual_seed(1)).reshape(-1, 3)
        for _ in range(8):
            xt.requires_grad_(True)
            rgb = decode(unet_calls(xt), bm)
            loss = S.sliced_wasserstein(rgb.reshape(2, -1, 3), colors, weights, d, power=2).sum()
            (grad,) = torch.autograd.grad(loss, xt)
            xt = (xt - 0.1 * grad).detach()

    decode.n = 0
    t0 = time.perf_counter()
    with torch.enable_grad():
        original_step()
    t_orig = time.perf_counter() - t0
    print(
        f"exact guidance: {n_exact} VAE-decoder calls ({steps_per_sample} forward+backward, the rest a forward-only "
        f"overshoot check), {t_exact * 1e3:.0f} ms | original "
        f"SW-Guidance: {unet_calls.n} UNet + {decode.n} VAE forward+backward passes, {t_orig * 1e3:.0f} ms "
        f"-> exact costs {100 * t_exact / t_orig:.1f}% of the original ({t_orig / t_exact:.1f}x cheaper); "
        f"VAE ch={vae_ch}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comfy", action="store_true", help="also the guidance/alignment vs UNet part (ComfyUI)")
    parser.add_argument("--skip-matching", action="store_true")
    parser.add_argument("--rounds-cases", type=int, default=1, help="problems also timed with the batched greedy")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps-per-sample", type=int, default=4)
    parser.add_argument("--vae-ch", type=int, default=32, help="VAE base channels (128 = SDXL's VAE)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--channels", type=int, default=64, help="UNet model_channels (320 = full SDXL, ~10 GB)")
    parser.add_argument("--skip-exact", action="store_true", help="skip the exact-vs-original comparison")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpu count {os.cpu_count()}")
    cases = [(1, 3), (2, 5), (3, 8), (4, 4), (5, 6)]
    if not args.skip_matching:
        bench_quality(cases)
        bench_speed(128, cases, args.rounds_cases)
    if args.comfy:
        bench_comfy(args.size, args.steps_per_sample, args.vae_ch, args.repeat, args.channels, not args.skip_exact)


if __name__ == "__main__":
    main()
