"""Which attention blocks carry colour? Ablate a stage-1 adapter block by block (paper §4.4, docs/design.md §8).

For fixed palettes, prompts and seeds the stage-1 adapter generates images with all its blocks, then
once with each block's adapter layers switched off. A block whose removal raises the palette EMD the
most matters the most. The ranking is printed, plotted and written to JSON with a recommendation (the
top blocks that together account for ``--coverage`` of the total increase, at most ``--max-blocks``)
that ``train_palette_adapter.py --stage 2 --blocks-from analysis.json`` reads.

    python train/analyse_blocks.py --adapter runs/stage1/palette_adapter.safetensors --model sdxl-base/ \
        --text-cache captions.safetensors --output runs/analysis
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a script: make the repository root importable
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from palette_core.adapter import ColorCondition, load_adapter, palette_condition
from palette_core.blocks import diffusers_unet_layers, select_layers
from palette_core.palette import Palette
from train.data import CachedText, ConstantText
from train.models import PixelCodec, VaeCodec, load_unet, load_vae, noise_scheduler
from train.processor import PaletteUNet, generate
from train.train_palette_adapter import DEFAULT_VAL_PALETTES, DEFAULT_VAL_PROMPTS, mean_emd

log = logging.getLogger("analyse_blocks")


def analyse(
    model: PaletteUNet,
    codec,
    scheduler_config,
    text,
    palettes: Sequence[Palette],
    prompts: Sequence[str],
    seeds: Sequence[int],
    size: int,
    steps: int = 20,
    guidance: float = 5.0,
) -> dict:
    """EMD with all blocks, without the adapter, and with each block ablated; blocks ranked by the EMD increase."""
    n = len(palettes)
    per = len(seeds)
    pos = ColorCondition.cat(
        [palette_condition(palettes[i].colors.float(), palettes[i].weights.float()) for i in range(n) for _ in seeds]
    )
    emb = text.embed([prompts[i % len(prompts)] for i in range(n) for _ in seeds])
    empty = text.empty(n * per)
    all_seeds = [1000 * i + s for i in range(n) for s in seeds]

    def run(positive, disabled=frozenset()) -> float:
        model.context.disabled = frozenset(disabled)
        try:
            images = generate(
                model, codec, scheduler_config, emb, empty, all_seeds, size, positive, guidance=guidance, steps=steps
            )
        finally:
            model.context.disabled = frozenset()
        return mean_emd(images, palettes, per)

    full = run(pos)
    base = run(None)
    ranking = []
    for block in model.adapter.blocks:
        layers = set(select_layers(model.adapter.layers, [block]))
        without = run(pos, layers)
        ranking.append({"block": block, "layers": len(layers), "emd_without": without, "delta": without - full})
    ranking.sort(key=lambda r: r["delta"], reverse=True)
    return {"emd_all_blocks": full, "emd_no_adapter": base, "ranking": ranking}


def recommend(ranking: Sequence[dict], coverage: float = 0.6, max_blocks: int = 3) -> list[str]:
    """The top blocks whose EMD increases add up to ``coverage`` of all positive increases (at least one)."""
    positive = [r for r in ranking if r["delta"] > 0]
    if not positive:
        return [ranking[0]["block"]] if ranking else []
    total = sum(r["delta"] for r in positive)
    chosen, acc = [], 0.0
    for r in positive[:max_blocks]:
        chosen.append(r["block"])
        acc += r["delta"]
        if acc >= coverage * total:
            break
    return chosen


def plot_ranking(result: dict, path: Path) -> Path:
    """Horizontal bars: the EMD increase when each block's adapter is switched off."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["ranking"][::-1]
    chosen = set(result.get("recommended", []))
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.4))
    ax.barh(
        [r["block"] for r in rows],
        [r["delta"] for r in rows],
        color=["C3" if r["block"] in chosen else "C0" for r in rows],
    )
    ax.axvline(0, color="0.3", lw=0.8)
    ax.set(xlabel="palette EMD increase without the block (higher = more colour control)", title="block ablation")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--adapter", type=Path, required=True, help="stage-1 adapter (.safetensors)")
    p.add_argument("--model", type=Path, required=True, help="the UNet it was trained on (folder or .safetensors)")
    p.add_argument("--vae", type=Path, help="VAE (default: from --model)")
    p.add_argument("--pixel-space", action="store_true", help="toy models: no VAE")
    p.add_argument("--pixel-patch", type=int, default=1, help="pixel space: f x f patches become channels")
    p.add_argument(
        "--pixel-scale",
        type=float,
        help="pixel space: latents = scale x pixels in [-1, 1] (default: the model's record, else 1)",
    )
    p.add_argument("--text-cache", type=Path, help="precomputed text embeddings holding the prompts")
    p.add_argument("--constant-text", choices=("zeros", "random"), help="fixed text embedding (toy runs)")
    p.add_argument("--text-tokens", type=int, default=77)
    p.add_argument("--palettes", type=Path, help="file: one palette per line (docs/design.md §5 text)")
    p.add_argument("--prompts", type=Path, help="file: one prompt per line")
    p.add_argument("--seeds", type=int, default=2, help="images per palette")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=5.0)
    p.add_argument("--coverage", type=float, default=0.6)
    p.add_argument("--max-blocks", type=int, default=3)
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    args = p.parse_args(argv)

    dtype = getattr(torch, args.dtype)
    unet = load_unet(args.model).to(args.device, dtype).eval().requires_grad_(False)
    context = int(unet.config.cross_attention_dim)
    adapter = load_adapter(args.adapter, model_layers=diffusers_unet_layers(unet, context), device=args.device)
    model = PaletteUNet(unet, adapter)
    codec = (
        PixelCodec.for_model(args.model, args.pixel_patch, args.pixel_scale)
        if args.pixel_space
        else VaeCodec(load_vae(args.vae or args.model, dtype), args.device)
    )
    if args.text_cache:
        text = CachedText(args.text_cache)
    else:
        text = ConstantText(args.text_tokens, None if args.constant_text != "random" else 0, context)
    lines = lambda f, default: [s.strip() for s in f.read_text().splitlines() if s.strip()] if f else list(default)  # noqa: E731
    palettes = [Palette.parse(t) for t in lines(args.palettes, DEFAULT_VAL_PALETTES)]
    prompts = lines(args.prompts, DEFAULT_VAL_PROMPTS)
    result = analyse(
        model,
        codec,
        noise_scheduler(args.model).config,
        text,
        palettes,
        prompts,
        list(range(args.seeds)),
        args.size,
        args.steps,
        args.guidance,
    )
    result["recommended"] = recommend(result["ranking"], args.coverage, args.max_blocks)
    args.output.mkdir(parents=True, exist_ok=True)
    result["plot"] = str(plot_ranking(result, args.output / "block_ranking.png"))
    (args.output / "analysis.json").write_text(json.dumps(result, indent=2))
    print(format_ranking(result))
    return 0


def format_ranking(result: dict) -> str:
    """The ranking as a text table."""
    lines = [
        f"palette EMD with all blocks {result['emd_all_blocks']:.4f}, "
        f"without the adapter {result['emd_no_adapter']:.4f}",
        f"{'block':32s} {'layers':>6s} {'EMD without':>12s} {'increase':>9s}",
    ]
    for r in result["ranking"]:
        lines.append(f"{r['block']:32s} {r['layers']:6d} {r['emd_without']:12.4f} {r['delta']:+9.4f}")
    lines.append(f"recommended stage-2 blocks: {', '.join(result.get('recommended', []))}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
