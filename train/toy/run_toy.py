"""Toy-scale proof that Palette-Adapter training learns (docs/training.md "Toy run").

1. synthetic 16 px images of shapes in random palettes, with shape and colour captions (a few broken files);
2. colour-balance curation of that set (curate_dataset);
3. a small SDXL-layout base UNet trained from scratch on it (pixel space, word-vector captions with colours);
4. the Palette-Adapter trained on top with train_palette_adapter (stage 1, all 11 blocks, shape-only captions);
5. evaluation on held-out palettes: palette EMD with vs without the adapter, the share of pixels near a
   negative palette's colour with vs without it, and output entropy under a low vs high entropy setting;
6. optionally the block analysis of the adapter (``--analyse``).

Every phase resumes: a finished phase is reused, an interrupted adapter run continues from its last
checkpoint. ``python train/toy/run_toy.py --out train/toy/out --threads 2`` (CPU: about 30 minutes on 2 cores).
Both trainings use a CUDA GPU when one is visible (``CUDA_VISIBLE_DEVICES=`` keeps them on the CPU).
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a script: make the repository root importable
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import argparse
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from palette_core.adapter import ColorCondition, negative_condition, palette_condition
from palette_core.histogram import entropy, image_histogram
from palette_core.palette import Palette
from train.data import read_manifest
from train.models import PixelCodec
from train.processor import PaletteUNet, generate
from train.recipe import Recipe
from train.toy.parts import toy_base_parts
from train.toy.shapes import draw, random_palette, write_dataset
from train.toy.train_base import base_codec, load_images, train_base
from train.train_palette_adapter import TrainConfig, Trainer, mean_emd, save_grid

log = logging.getLogger("run_toy")

SIZE = 16
PATCH = 2  # 16 px images as 8 x 8 latents of 12 channels
NEAR = 0.2  # RGB distance counted as "near" a negative colour
DRAWN = 0.15  # RGB distance within which some pixel must lie for a palette colour to count as drawn


def held_out_palettes(n: int, seed: int = 12345) -> list[Palette]:
    """Palettes from a generator the training data never used."""
    rng = np.random.default_rng(seed)
    return [Palette.from_colors(torch.tensor(random_palette(rng), dtype=torch.float32)) for _ in range(n)]


def colour_captions(palettes: Sequence[Palette], seed: int = 54321) -> list[str]:
    """The base model's colour caption of a scene drawn in each palette (what the base learnt to follow)."""
    rng = np.random.default_rng(seed)
    return [draw(p.colors.double().numpy(), rng, SIZE)[2] for p in palettes]


def seen_palettes(images: torch.Tensor, n: int, size: int = 5) -> list[Palette]:
    """Median-cut palettes (uniform weights, as the recipe's) of the first ``n`` training images ``[N, 3, H, W]``."""
    from palette_core.extract import extract_palette

    return [
        Palette.from_colors(
            extract_palette(x.permute(1, 2, 0), size=size, method="median_cut", resize=None).colors.float()
        )
        for x in images[:n]
    ]


def reference_emd(palettes: Sequence[Palette], per: int = 8, seed: int = 2718) -> dict:
    """Palette EMD of the data generator's own images in each palette and in other palettes (the best reachable).

    A model that draws exactly the training distribution scores the first when it follows the palette and
    the second when it ignores it. ``colour_breakdown_data`` breaks the first down as :func:`colour_breakdown`.
    """
    rng = np.random.default_rng(seed)

    def images(colours) -> torch.Tensor:
        return torch.stack([torch.from_numpy(draw(c, rng, SIZE)[0]).float() / 255.0 for c in colours])

    own = images(p.colors.double().numpy() for p in palettes for _ in range(per))
    other = images(random_palette(rng) for _ in palettes for _ in range(per))
    return {
        "emd_data_in_palette": mean_emd(own, palettes, per),
        "emd_data_other_palettes": mean_emd(other, palettes, per),
        "colour_breakdown_data": colour_breakdown(own, palettes, per),
    }


def colour_breakdown(images: torch.Tensor, palettes: Sequence[Palette], per: int) -> dict[str, float]:
    """What a palette EMD is made of, averaged over ``images [B, H, W, 3]`` (``per`` images a palette).

    ``colours_not_drawn``: the share of palette colours with no pixel within RGB distance DRAWN;
    ``pixel_distance``: a pixel's mean RGB distance to its nearest palette colour (how precisely colours
    are drawn); ``area_gap``: the total variation between the shares of pixels nearest each colour and the
    palette's weights (how the areas differ from the palette's proportions).
    """
    not_drawn, distance, gap = [], [], []
    for i in range(images.shape[0]):
        palette = palettes[i // per]
        colours, weights = palette.colors.float(), palette.weights.float()
        d = torch.cdist(images[i].reshape(-1, 3).float(), colours, compute_mode="donot_use_mm_for_euclid_dist")
        nearest = d.min(1)
        not_drawn.append((d.min(0).values > DRAWN).float().mean())
        distance.append(nearest.values.mean())
        shares = torch.bincount(nearest.indices, minlength=colours.shape[0]).float() / d.shape[0]
        gap.append((shares - weights).abs().sum() / 2)
    return {
        k: float(torch.stack(v).mean())
        for k, v in zip(("colours_not_drawn", "pixel_distance", "area_gap"), (not_drawn, distance, gap))
    }


def with_texture_word(caption: str, word: str) -> str:
    """A colour caption of :func:`~train.toy.shapes.draw` with its last word (``flat``/``textured``) set to ``word``."""
    return f"{caption.rsplit(' ', 1)[0]} {word}"


def palette_text(p: Palette) -> str:
    """docs/design.md §5 text of a palette (for the trainer's validation list)."""
    return p.to_text()


def _conditions(palettes: Sequence[Palette], per: int) -> ColorCondition:
    return ColorCondition.cat(
        [palette_condition(p.colors.float(), p.weights.float()) for p in palettes for _ in range(per)]
    )


def near_share(images: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """Per image: the share of pixels within RGB distance NEAR of any of ``colours [K, 3]``."""
    d = torch.cdist(
        images.reshape(images.shape[0], -1, 3).float(), colours.float()[None].expand(images.shape[0], -1, -1)
    )
    return (d.min(-1).values < NEAR).float().mean(-1)


def evaluate(
    model: PaletteUNet,
    codec: PixelCodec,
    text,
    scheduler_config,
    palettes: Sequence[Palette],
    per: int,
    out: Path,
    entropy_low: float,
    entropy_high: float,
    entropy_ref: float,
    guidance: float = 3.0,
    steps: int = 25,
    seen: Sequence[Palette] = (),
) -> dict:
    """The three toy claims on held-out palettes (same seeds for every setting).

    With ``seen`` palettes (from training images, as many as ``palettes``) the EMD is also measured on
    them: how well the adapter follows conditions like those it trained on, apart from new palettes.
    """
    b = len(palettes) * per
    emb, empty = text.embed([""] * b), text.empty(b)
    seeds = [7919 * i + s for i in range(len(palettes)) for s in range(per)]
    pos = _conditions(palettes, per)

    def gen(positive, negative=None, g=guidance, words=emb):
        return generate(model, codec, scheduler_config, words, empty, seeds, SIZE, positive, negative, g, steps)

    base = gen(None, g=1.0)
    adapted = gen(pos)
    emd_base, emd_adapter = mean_emd(base, palettes, per), mean_emd(adapted, palettes, per)
    captions = [c for c in colour_captions(palettes) for _ in range(per)]
    colour_words = text.embed(captions)
    worded = gen(None, words=colour_words)
    worded_cfg1 = gen(None, g=1.0, words=colour_words)
    adapted_cfg1 = gen(pos, g=1.0)
    emd_worded_cfg1, emd_adapter_cfg1 = mean_emd(worded_cfg1, palettes, per), mean_emd(adapted_cfg1, palettes, per)
    first = torch.stack([p.colors[0].float() for p in palettes for _ in range(per)])
    neg = ColorCondition.cat([negative_condition(c[None], weight=1.0) for c in first])
    negated = gen(pos, neg)
    share_plain = torch.stack([near_share(adapted[i : i + 1], first[i : i + 1]) for i in range(b)]).mean()
    share_neg = torch.stack([near_share(negated[i : i + 1], first[i : i + 1]) for i in range(b)]).mean()
    low = gen(pos.with_controls(entropy=entropy_low, null_entropy=entropy_ref))
    high = gen(pos.with_controls(entropy=entropy_high, null_entropy=entropy_ref))
    ent = {k: float(entropy(image_histogram(v)).mean()) for k, v in (("plain", adapted), ("low", low), ("high", high))}

    def base_entropy(word: str) -> float:
        told = text.embed([with_texture_word(c, word) for c in captions])
        return float(entropy(image_histogram(gen(None, words=told))).mean())

    # the entropy claim's bound: does the base itself draw flat and textured scenes apart when told in words?
    base_ent = {word: base_entropy(word) for word in ("flat", "textured")}
    grids = {"base": base, "base_colour_captions": worded, "adapter": adapted, "negative": negated}
    seen_result = {}
    if seen:
        seen_pos = _conditions(seen, per)
        on_seen = gen(seen_pos)
        grids["seen_palettes"] = on_seen
        seen_result = {
            "emd_seen_without_adapter": mean_emd(base, seen, per),
            "emd_seen_with_adapter": mean_emd(on_seen, seen, per),
            "emd_seen_with_adapter_cfg1": mean_emd(gen(seen_pos, g=1.0), seen, per),
        }
    for name, imgs in {**grids, "entropy_low": low, "entropy_high": high}.items():
        save_grid(imgs, seen if name == "seen_palettes" else palettes, per, out / f"eval_{name}.png")
    return {
        "palettes": len(palettes),
        "images_per_setting": b,
        "guidance": guidance,
        "sampling_steps": steps,
        "emd_without_adapter": emd_base,
        "emd_with_adapter": emd_adapter,
        "emd_ratio": emd_adapter / emd_base,
        "emd_with_adapter_cfg1": emd_adapter_cfg1,
        "emd_ratio_cfg1": emd_adapter_cfg1 / emd_base,
        "emd_base_colour_captions": mean_emd(worded, palettes, per),
        "emd_base_colour_captions_cfg1": emd_worded_cfg1,
        "negative_near_share_without": float(share_plain),
        "negative_near_share_with": float(share_neg),
        "entropy_setting": {"low": entropy_low, "high": entropy_high, "null_reference": entropy_ref},
        "output_entropy_bits": ent,
        "base_entropy_bits_by_texture_word": base_ent,
        "colour_breakdown": {
            "base": colour_breakdown(base, palettes, per),
            "base_colour_captions_cfg1": colour_breakdown(worded_cfg1, palettes, per),
            "adapter_cfg1": colour_breakdown(adapted_cfg1, palettes, per),
            "adapter": colour_breakdown(adapted, palettes, per),
        },
        **seen_result,
        **reference_emd(palettes),
    }


def results_text(r: dict) -> str:
    """Markdown summary of the toy run."""
    e = r["eval"]
    ent = e["output_entropy_bits"]
    s = e["entropy_setting"]
    base_ent = e["base_entropy_bits_by_texture_word"]
    worded_ratio = e["emd_base_colour_captions_cfg1"] / e["emd_without_adapter"]
    lines = [
        "# Toy run results",
        "",
        f"Held-out palettes: {e['palettes']}, {e['images_per_setting']} images per setting, "
        f"CFG {e['guidance']}, {e['sampling_steps']} DDIM steps.",
        "",
        "| claim | without | with | target |",
        "|---|---|---|---|",
        f"| palette EMD (lower = closer) | {e['emd_without_adapter']:.4f} | {e['emd_with_adapter']:.4f} "
        f"(ratio {e['emd_ratio']:.2f}) | ratio <= 0.6 |",
        f"| palette EMD at CFG 1 | {e['emd_without_adapter']:.4f} | {e['emd_with_adapter_cfg1']:.4f} "
        f"(ratio {e['emd_ratio_cfg1']:.2f}) | ratio <= 0.6 |",
        f"| palette EMD of the base model given the palette's exact colours as caption words, CFG {e['guidance']} / "
        f"CFG 1 | {e['emd_without_adapter']:.4f} | {e['emd_base_colour_captions']:.4f} / "
        f"{e['emd_base_colour_captions_cfg1']:.4f} (ratio {worded_ratio:.2f}) | (how well the base draws) |",
        f"| share of pixels within {NEAR} of a negative colour | {e['negative_near_share_without']:.3f} | "
        f"{e['negative_near_share_with']:.3f} | lower with |",
        f"| output entropy, setting {s['low']:.2f} vs {s['high']:.2f} bits (null {s['null_reference']:.2f}) | "
        f"{ent['high']:.2f} (high) | {ent['low']:.2f} (low) | low < high |",
        f"| output entropy of the base given its colour caption ending in 'textured' vs 'flat', CFG {e['guidance']} | "
        f"{base_ent['textured']:.2f} (textured) | {base_ent['flat']:.2f} (flat) | (what the base can draw) |",
        f"| palette EMD of the data generator's own images in other palettes / in these palettes (the best "
        f"reachable) | {e['emd_data_other_palettes']:.4f} | {e['emd_data_in_palette']:.4f} (ratio "
        f"{e['emd_data_in_palette'] / e['emd_data_other_palettes']:.2f}) | (what a perfect model scores) |",
    ]
    if "emd_seen_with_adapter" in e:
        ratio, ratio1 = (
            e[k] / e["emd_seen_without_adapter"] for k in ("emd_seen_with_adapter", "emd_seen_with_adapter_cfg1")
        )
        lines.append(
            f"| palette EMD on training images' own median-cut palettes (conditions like those trained on), "
            f"CFG {e['guidance']} / CFG 1 | {e['emd_seen_without_adapter']:.4f} | {e['emd_seen_with_adapter']:.4f} / "
            f"{e['emd_seen_with_adapter_cfg1']:.4f} (ratio {ratio:.2f} / {ratio1:.2f}) | (learnt vs generalised) |"
        )
    parts = {
        "the data generator's images in these palettes": e["colour_breakdown_data"],
        "base, no caption, CFG 1": e["colour_breakdown"]["base"],
        "base given the exact colours as words, CFG 1": e["colour_breakdown"]["base_colour_captions_cfg1"],
        "with the adapter, CFG 1": e["colour_breakdown"]["adapter_cfg1"],
        f"with the adapter, CFG {e['guidance']}": e["colour_breakdown"]["adapter"],
    }
    lines += [
        "",
        f"What the EMD is made of: palette colours with no pixel within {DRAWN}, a pixel's mean RGB distance to "
        "its nearest palette colour, and the gap between the areas nearest each colour and the palette's weights.",
        "",
        "| images | colours not drawn | pixel distance | area gap |",
        "|---|---|---|---|",
        *(
            f"| {name} | {b['colours_not_drawn']:.3f} | {b['pixel_distance']:.3f} | {b['area_gap']:.3f} |"
            for name, b in parts.items()
        ),
        "",
        f"Output entropy without an entropy setting: {ent['plain']:.2f} bits.",
        "",
        "Timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in r["seconds"].items()),
        f"Adapter steps {r['adapter_steps']}, base steps {r['base_steps']}, training images {r['train_images']} "
        f"({r['skipped_images']} broken files skipped by the trainer).",
    ]
    if "analysis" in r:
        lines += ["", f"Block analysis: recommended {', '.join(r['analysis']['recommended'])}."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    p.add_argument("--train-images", type=int, default=2000)
    p.add_argument("--base-steps", type=int, default=880)
    p.add_argument("--base-batch", type=int, default=128)
    p.add_argument("--base-channels", type=int, default=32, help="UNet width (levels c, 2c, 4c)")
    p.add_argument("--base-lr", type=float, default=5e-4)
    p.add_argument(
        "--base-prediction",
        choices=("sample", "v_prediction"),
        default="v_prediction",
        help="what the base UNet predicts",
    )
    p.add_argument("--pixel-scale", type=float, default=2.0, help="latents = scale x [-1, 1] pixels")
    p.add_argument(
        "--base-lognormal-share", type=float, default=0.0, help="share of base timesteps at EDM-like noise levels"
    )
    p.add_argument("--base-min-snr", type=float, default=5.0, help="Min-SNR gamma of the base's loss weights (0: none)")
    p.add_argument("--adapter-steps", type=int, default=600)
    p.add_argument("--adapter-batch", type=int, default=32)
    p.add_argument("--adapter-lr", type=float, default=1e-3)
    p.add_argument("--eval-palettes", type=int, default=16)
    p.add_argument("--eval-seeds", type=int, default=2)
    p.add_argument("--validate-every", type=int, default=200)
    p.add_argument("--analyse", action="store_true", help="also rank the blocks of the trained adapter")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}

    t = time.perf_counter()
    manifest = out / "data" / "manifest.jsonl"
    if not manifest.is_file():
        write_dataset(out / "data", args.train_images, SIZE, seed=0, broken=4)
    seconds["data"] = time.perf_counter() - t

    t = time.perf_counter()
    curated = out / "curated" / "manifest.jsonl"
    if not curated.is_file():
        from train.curate_dataset import curate

        report = curate(read_manifest(manifest), out / "curated", size=SIZE, workers=0, min_size=16)
        log.info("curation: %s", json.dumps({k: report[k] for k in ("usable", "skipped", "before", "after")}))
    seconds["curation"] = time.perf_counter() - t

    t = time.perf_counter()
    base_dir = out / "base"
    if not (base_dir / "config.json").is_file():
        train_base(
            manifest,
            base_dir,
            steps=args.base_steps,
            batch=args.base_batch,
            lr=args.base_lr,
            channels=args.base_channels,
            patch=PATCH,
            size=SIZE,
            prediction_type=args.base_prediction,
            lognormal_share=args.base_lognormal_share,
            snr_weight_max=args.base_min_snr or None,
            pixel_scale=args.pixel_scale,
            device="cuda" if torch.cuda.is_available() else "cpu",
        )
    else:
        log.info("reusing the base in %s with the settings it was trained with (delete it to train another)", base_dir)
    seconds["base"] = time.perf_counter() - t
    codec = base_codec(base_dir)

    t = time.perf_counter()
    val = held_out_palettes(4, seed=999)
    cfg = TrainConfig(
        output=out / "adapter",
        data=manifest,
        model=base_dir,
        resolution=SIZE,
        min_size=SIZE // 2,
        batch_size=args.adapter_batch,
        max_steps=args.adapter_steps,
        lr=args.adapter_lr,
        warmup_steps=20,
        recipe=Recipe(palette_resize=None),
        checkpoint_every=50,
        validate_every=args.validate_every,
        val_palettes=[palette_text(v) for v in val],
        val_seeds=2,
        val_steps=20,
        val_guidance=3.0,
    )
    cfg.data = curated  # sample by the curation's colour-balancing weights
    trainer = Trainer(cfg, toy_base_parts(base_dir, codec.factor, codec.scale, text="words", tokens=12))
    trained = trainer.train()
    seconds["adapter"] = time.perf_counter() - t

    t = time.perf_counter()
    model = trainer.palette_model.eval()
    train_images, _ = load_images(manifest, SIZE)
    ent = entropy(image_histogram(train_images.permute(0, 2, 3, 1)))
    q = torch.quantile(ent, torch.tensor([0.1, 0.5, 0.9]))
    result = {
        "eval": evaluate(
            model,
            codec,
            trainer.text,
            trainer.scheduler.config,
            held_out_palettes(args.eval_palettes),
            args.eval_seeds,
            out,
            float(q[0]),
            float(q[2]),
            float(q[1]),
            seen=seen_palettes(train_images, args.eval_palettes),
        ),
        "adapter_steps": trained["step"],
        "base_steps": args.base_steps,
        "train_images": int(train_images.shape[0]),
        "skipped_images": trained["skipped"],
        "adapter_file": trained.get("adapter"),
    }
    seconds["evaluation"] = time.perf_counter() - t
    if args.analyse:
        t = time.perf_counter()
        from train.analyse_blocks import analyse, plot_ranking, recommend

        pals = held_out_palettes(6, seed=4242)
        a = analyse(model, codec, trainer.scheduler.config, trainer.text, pals, [""], [0, 1], SIZE, 20, 3.0)
        a["recommended"] = recommend(a["ranking"])
        a["plot"] = str(plot_ranking(a, out / "block_ranking.png"))
        result["analysis"] = a
        seconds["analysis"] = time.perf_counter() - t
    result["seconds"] = seconds
    result["total_seconds"] = sum(seconds.values())
    (out / "results.json").write_text(json.dumps(result, indent=2))
    (out / "results.md").write_text(results_text(result))
    print(results_text(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
