"""Toy-scale proof that Palette-Adapter training learns and its controls act (docs/training.md "Toy run").

1. synthetic 8 px images of two shapes in random 3-colour palettes, flat or shaded, with shape and colour
   captions (a few broken files);
2. colour-balance curation of that set (curate_dataset);
3. a small SDXL-layout base UNet trained from scratch on it (pixel space, word-vector captions with colours);
4. the Palette-Adapter trained on top with train_palette_adapter (stage 1, all 11 blocks, shape-only captions);
5. evaluation on held-out palettes at CFG 1 and 3, each claim beside the base's own bound: palette EMD with
   vs without the adapter, output entropy under low vs high entropy settings and the share of pixels far
   from the palette under low vs high distance settings (absolute and relative modes), and the share of
   pixels near a negative palette's colour with vs without it;
6. optionally the block analysis of the adapter (``--analyse``).

Every phase resumes: a finished phase is reused, an interrupted adapter run continues from its last
checkpoint. ``python train/toy/run_toy.py --out train/toy/out`` trains on the CPU (about 27 minutes on 2
quiet cores; ``--threads 1`` on a busy machine); ``--device cuda`` takes the GPU preset (under 8 minutes on
one H100-class GPU); ``--smoke`` checks every phase at tiny sizes. Flags override a preset's sizes.
``--palette-weights area`` weights every palette, trained on and evaluated, by the area its colours fill (an
ablation; the default is the paper's equal weights).
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a script: make the repository root importable
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import argparse
import csv
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from palette_core.adapter import (
    LAYOUTS,
    READABLE_VERSIONS,
    ColorCondition,
    apply_controls,
    image_scalars,
    negative_condition,
    palette_condition,
)
from palette_core.histogram import entropy, image_histogram
from palette_core.palette import Palette
from train.data import ManifestError, manifest_palettes, read_manifest
from train.models import PixelCodec
from train.processor import PaletteUNet, generate
from train.recipe import Recipe
from train.schedule import LR_SCHEDULES
from train.toy.parts import toy_base_parts
from train.toy.shapes import PALETTE_WEIGHTS, draw, random_palette, write_dataset
from train.toy.train_base import base_codec, load_images, train_base
from train.train_palette_adapter import TrainConfig, Trainer, mean_emd, save_grid

log = logging.getLogger("run_toy")

SIZE = 8
PATCH = 1  # 8 px images are the 8 x 8 latents: no patch grid for the base to leave in its samples
NEAR = 0.2  # RGB distance counted as "near" a negative colour
DRAWN = 0.15  # RGB distance within which some pixel must lie for a palette colour to count as drawn
FAR = 10.0  # CIE76 ΔE beyond which a pixel is far from every palette colour (the distance claim)


def held_out_palettes(n: int, seed: int = 12345) -> list[Palette]:
    """Palettes from a generator the training data never used."""
    rng = np.random.default_rng(seed)
    return [Palette.from_colors(torch.tensor(random_palette(rng), dtype=torch.float32)) for _ in range(n)]


def colour_captions(palettes: Sequence[Palette], seed: int = 54321) -> list[str]:
    """The base model's colour caption of a scene drawn in each palette (what the base learnt to follow)."""
    rng = np.random.default_rng(seed)
    return [draw(p.colors.double().numpy(), rng, SIZE).color_caption for p in palettes]


def weighted_by_area(palettes: Sequence[Palette], seed: int = 54321) -> list[Palette]:
    """Each palette weighted by the area its colours fill in the scene :func:`colour_captions` describes."""
    rng = np.random.default_rng(seed)
    return [Palette.from_colors(p.colors, draw(p.colors.double().numpy(), rng, SIZE).areas) for p in palettes]


def manifest_palette_weights(manifest: Path) -> str:
    """``area`` when a toy manifest's palettes carry weights (``{"hex", "weight"}`` objects), else ``equal``."""
    with Path(manifest).open(encoding="utf-8") as f:
        first = json.loads(f.readline())
    palette = first.get("palette")
    return "area" if isinstance(palette, list) and palette and isinstance(palette[0], dict) else "equal"


def reference_emd(palettes: Sequence[Palette], per: int = 8, seed: int = 2718) -> dict:
    """Palette EMD of the data generator's own images in each palette and in other palettes (the best reachable).

    A model that draws exactly the training distribution scores the first when it follows the palette and
    the second when it ignores it. ``colour_breakdown_data`` breaks the first down as :func:`colour_breakdown`.
    """
    rng = np.random.default_rng(seed)

    def images(colours) -> torch.Tensor:
        return torch.stack([torch.from_numpy(draw(c, rng, SIZE).image).float() / 255.0 for c in colours])

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


def nearest_delta_e(images: torch.Tensor, palettes: Sequence[Palette], per: int) -> torch.Tensor:
    """``[N, pixels]``: each pixel's ΔE (CIE76) to the nearest colour of its image's palette (``per`` images each)."""
    from palette_core.color import srgb_to_lab

    rows = []
    for i in range(images.shape[0]):
        lab = srgb_to_lab(images[i].reshape(-1, 3).double().clamp(0, 1))
        colours = srgb_to_lab(palettes[i // per].colors.double())
        rows.append(torch.cdist(lab, colours).min(1).values)
    return torch.stack(rows)


def far_share(images: torch.Tensor, palettes: Sequence[Palette], per: int) -> float:
    """Mean share of pixels farther than ΔE FAR (CIE76) from every colour of their palette (``per`` images each)."""
    return float((nearest_delta_e(images, palettes, per) > FAR).double().mean())


def mean_delta_e(images: torch.Tensor, palettes: Sequence[Palette], per: int) -> float:
    """Mean ΔE (CIE76) from a pixel to its palette's nearest colour: the distance measure that does not saturate."""
    return float(nearest_delta_e(images, palettes, per).mean())


def mean_entropy(images: torch.Tensor) -> float:
    """Mean histogram entropy in bits (paper §3.4) of ``images [B, H, W, 3]``: the report's entropy measure."""
    return float(entropy(image_histogram(images.float().clamp(0, 1))).mean())


def training_palettes(manifest: Path, size: int) -> tuple[torch.Tensor, list[Palette]]:
    """The usable images ``[N, 3, S, S]`` of a curated toy manifest and the palettes each was drawn in."""
    images, _ = load_images(manifest, size)
    palettes = manifest_palettes(read_manifest(manifest))
    if len(palettes) != images.shape[0]:
        raise ManifestError(f"{manifest}: {len(palettes)} rows but {images.shape[0]} usable images; curate it first")
    return images, palettes


def training_scalars(images: torch.Tensor, palettes: Sequence[Palette], n: int = 256) -> dict[str, list[float] | float]:
    """10/50/90 % quantiles and mean of the entropy and palette distance of the first ``n`` images ``[N, 3, H, W]``.

    The distance is the recipe's with the manifest palette source: the Quadratic-Chi distance of each
    image's palette to its histogram (train/recipe.py), the values the adapter saw in training. The mean is
    relative mode's reference (paper §3.4: relative to the unconditioned state): the toy's images are half
    flat, half shaded, and the median of such a set falls inside whichever half happens to be larger.
    """
    x = images[:n].permute(0, 2, 3, 1).float()
    qc, ent = image_scalars(image_histogram(x), torch.stack([p.histogram().float() for p in palettes[:n]]))
    q = torch.tensor([0.1, 0.5, 0.9])
    return {
        "entropy": torch.quantile(ent, q).tolist(),
        "distance": torch.quantile(qc, q).tolist(),
        "entropy_mean": float(ent.mean()),
        "distance_mean": float(qc.mean()),
    }


def data_bounds(palettes: Sequence[Palette], per: int = 4, seed: int = 2718) -> dict[str, float]:
    """The data generator's own flat and textured images in these palettes: entropy and far share (the range)."""
    rng = np.random.default_rng(seed)
    out = {}
    for word, textured in (("flat", False), ("textured", True)):
        images = torch.stack(
            [
                torch.from_numpy(draw(p.colors.double().numpy(), rng, SIZE, textured).image).float() / 255.0
                for p in palettes
                for _ in range(per)
            ]
        )
        out[f"entropy_{word}"] = mean_entropy(images)
        out[f"far_share_{word}"] = far_share(images, palettes, per)
    return out


def scalar_attention(model: PaletteUNet, run: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """``run()``'s images and each adapter layer's mean share of the scalar token during it.

    In one softmax with the colour tokens (file versions 1-3, paper §3.2) its attention weight, which strong
    colour keys can take to zero; in version 4 its share of the adapter output's norm (docs/design.md §6).
    """
    model.context.probe = {}
    try:
        images = run()
        probe = model.context.probe
    finally:
        model.context.probe = None
    return images, {layer: float(torch.stack(w).mean(0)[-1]) for layer, w in probe.items()}


def evaluate(
    model: PaletteUNet,
    codec: PixelCodec,
    text,
    scheduler_config,
    palettes: Sequence[Palette],
    per: int,
    out: Path,
    scalars: dict[str, list[float]],
    guidances: Sequence[float] = (1.0, 3.0),
    steps: int = 25,
    seen: Sequence[Palette] = (),
) -> dict:
    """The toy's claims on held-out palettes, each at every CFG of ``guidances``, with the base's bounds.

    Same seeds for every setting. ``scalars``: the training images' entropy and distance quantiles
    (:func:`training_scalars`); the low and high settings are the 10 % and 90 % quantiles, the relative
    mode's reference the mean. At CFG 1 the uncond branch is not evaluated, so a relative setting equals
    the absolute one there; relative is measured at the other CFGs. With ``seen`` palettes (from training
    images) the EMD is also measured on them: conditions like those trained on, apart from new palettes.
    """
    b = len(palettes) * per
    emb, empty = text.embed([""] * b), text.empty(b)
    seeds = [7919 * i + s for i in range(len(palettes)) for s in range(per)]
    pos = _conditions(palettes, per)
    captions = [c for c in colour_captions(palettes) for _ in range(per)]
    grids: dict[str, torch.Tensor] = {}

    def gen(positive, negative=None, g=1.0, words=emb):
        return generate(model, codec, scheduler_config, words, empty, seeds, SIZE, positive, negative, g, steps)

    def told(word: str | None) -> tuple[torch.Tensor, torch.Tensor]:
        return text.embed([c if word is None else with_texture_word(c, word) for c in captions])

    base = gen(None)  # the empty caption: CFG changes nothing without the adapter
    grids["base"] = base
    r: dict = {
        "palettes": len(palettes),
        "images_per_setting": b,
        "guidances": list(guidances),
        "sampling_steps": steps,
        "emd_without_adapter": mean_emd(base, palettes, per),
        "output_entropy_without_adapter": mean_entropy(base),
        "training_scalars": scalars,
        "by_cfg": {},
    }
    (e_lo, _, e_hi), (d_lo, _, d_hi) = scalars["entropy"], scalars["distance"]
    e_mid, d_mid = scalars["entropy_mean"], scalars["distance_mean"]
    for g in guidances:
        tag = f"cfg{g:g}"
        adapted, attention = scalar_attention(model, lambda g=g: gen(pos, g=g))
        worded = gen(None, g=g, words=told(None))
        grids[f"adapter_{tag}"], grids[f"base_colour_captions_{tag}"] = adapted, worded
        c: dict = {
            "emd_with_adapter": mean_emd(adapted, palettes, per),
            "emd_base_colour_captions": mean_emd(worded, palettes, per),
            "colour_breakdown_adapter": colour_breakdown(adapted, palettes, per),
            "colour_breakdown_base_colour_captions": colour_breakdown(worded, palettes, per),
            "far_share_plain": far_share(adapted, palettes, per),
            "entropy_plain": mean_entropy(adapted),
            "scalar_token_attention": attention,
        }
        modes = ("absolute",) if g == 1.0 else ("absolute", "relative")
        controls = (
            ("entropy", "entropy", (e_lo, e_mid, e_hi), mean_entropy),
            ("distance", "far_share", (d_lo, d_mid, d_hi), lambda x: far_share(x, palettes, per)),
        )
        for mode in modes:
            for control, key, (lo, mid, hi), measure in controls:
                for level, value in (("low", lo), ("high", hi)):
                    setting = {
                        f"{control}_mode": mode,
                        control: value if mode == "absolute" else value - mid,
                        f"{control}_reference": mid,
                    }
                    imgs = gen(apply_controls(pos, **setting), g=g)
                    c[f"{key}_{mode}_{level}"] = measure(imgs)
                    if control == "distance":
                        c[f"delta_e_{mode}_{level}"] = mean_delta_e(imgs, palettes, per)
                    grids[f"{control}_{mode}_{level}_{tag}"] = imgs
        # the bound of both controls: does the base itself draw flat and textured apart when told in words?
        for word in ("flat", "textured"):
            imgs = gen(None, g=g, words=told(word))
            c[f"base_entropy_{word}"] = mean_entropy(imgs)
            c[f"base_far_share_{word}"] = far_share(imgs, palettes, per)
            c[f"base_delta_e_{word}"] = mean_delta_e(imgs, palettes, per)
        if g != 1.0:  # the negative palette acts through the uncond branch: only with guidance
            first = torch.stack([p.colors[0].float() for p in palettes for _ in range(per)])
            neg = ColorCondition.cat([negative_condition(col[None], weight=1.0) for col in first])
            negated = gen(pos, neg, g=g)
            grids[f"negative_{tag}"] = negated
            c["negative_near_share_without"] = float(
                torch.stack([near_share(adapted[i : i + 1], first[i : i + 1]) for i in range(b)]).mean()
            )
            c["negative_near_share_with"] = float(
                torch.stack([near_share(negated[i : i + 1], first[i : i + 1]) for i in range(b)]).mean()
            )
        if seen:
            on_seen = gen(_conditions(seen, per), g=g)
            grids[f"seen_palettes_{tag}"] = on_seen
            c["emd_seen_with_adapter"] = mean_emd(on_seen, seen, per)
        r["by_cfg"][tag] = c
    if seen:
        r["emd_seen_without_adapter"] = mean_emd(base, seen, per)
    r["colour_breakdown_base"] = colour_breakdown(base, palettes, per)
    for name, imgs in grids.items():
        save_grid(imgs, seen if name.startswith("seen_palettes") else palettes, per, out / f"eval_{name}.png")
    return {**r, **reference_emd(palettes), **data_bounds(palettes)}


LOSS_WINDOWS = ((1, 100), (201, 300))  # a fast run leaves its first loss by step 300; a slow one sits on it


def loss_path(log_csv: Path, last: int = 100) -> dict[str, float]:
    """Mean adapter loss over steps 1-100, 201-300 and the last ``last`` (docs/training.md "two regimes").

    A run whose second window is still near its first sat on the loss plateau that marks the slow path;
    windows the run did not reach are left out.
    """
    with Path(log_csv).open(newline="") as f:
        losses = {int(row["step"]): float(row["loss"]) for row in csv.DictReader(f)}
    if not losses:
        return {}
    end = max(losses)
    windows = [*LOSS_WINDOWS, (max(1, end - last + 1), end)]
    out = {}
    for lo, hi in windows:
        values = [losses[k] for k in range(lo, hi + 1) if k in losses]
        if values and hi <= end:
            out[f"steps {lo}-{hi}"] = sum(values) / len(values)
    return out


def _mark(ok: bool) -> str:
    return "✔" if ok else "✘"


def targets(e: dict) -> list[dict]:
    """Issue 27's targets, each with its measured figures, the base's bound and whether it is met."""
    rows = []
    none = e["emd_without_adapter"]
    for tag, c in e["by_cfg"].items():
        cfg = tag.removeprefix("cfg")
        adapter, bound = c["emd_with_adapter"], c["emd_base_colour_captions"]
        rows.append(
            {
                "claim": f"palette EMD with the adapter <= 1.1 x the base told the exact colours, CFG {cfg}",
                "measured": f"{adapter:.4f} vs {bound:.4f} (x {adapter / bound:.2f})",
                "bound": f"the base told the colours: {bound:.4f} (x {bound / none:.2f} of no adapter)",
                "met": adapter <= 1.1 * bound,
            }
        )
        rows.append(
            {
                "claim": f"palette EMD with the adapter <= 0.75 x without it, CFG {cfg}",
                "measured": f"{adapter:.4f} vs {none:.4f} (x {adapter / none:.2f})",
                "bound": f"x {bound / none:.2f} (the base told the colours); the data x "
                f"{e['emd_data_in_palette'] / e['emd_data_other_palettes']:.2f}",
                "met": adapter <= 0.75 * none,
            }
        )
        base_gap = c["base_entropy_textured"] - c["base_entropy_flat"]
        for mode in ("absolute", "relative"):
            if f"entropy_{mode}_low" not in c:
                continue
            lo, hi = c[f"entropy_{mode}_low"], c[f"entropy_{mode}_high"]
            rows.append(
                {
                    "claim": f"output entropy, low vs high {mode} entropy setting differ by >= 1 bit, CFG {cfg}",
                    "measured": f"{lo:.2f} vs {hi:.2f} bits ({hi - lo:+.2f})",
                    "bound": f"the base told 'flat' / 'textured': {c['base_entropy_flat']:.2f} / "
                    f"{c['base_entropy_textured']:.2f} ({base_gap:+.2f}); the data {e['entropy_flat']:.2f} / "
                    f"{e['entropy_textured']:.2f}",
                    "met": hi - lo >= 1.0,
                }
            )
        for mode in ("absolute", "relative"):
            if f"far_share_{mode}_low" not in c:
                continue
            lo, hi = c[f"far_share_{mode}_low"], c[f"far_share_{mode}_high"]
            rows.append(
                {
                    "claim": f"share of pixels > ΔE {FAR:g} from every palette colour, low vs high {mode} distance "
                    f"setting: >= 2 x, CFG {cfg}",
                    "measured": f"{lo:.3f} vs {hi:.3f} (x {hi / max(lo, 1e-9):.1f})",
                    "bound": f"the base told 'flat' / 'textured': {c['base_far_share_flat']:.3f} / "
                    f"{c['base_far_share_textured']:.3f}; the data {e['far_share_flat']:.3f} / "
                    f"{e['far_share_textured']:.3f}",
                    "met": hi >= 2.0 * lo,
                }
            )
        if "negative_near_share_with" in c:
            w, wo = c["negative_near_share_with"], c["negative_near_share_without"]
            rows.append(
                {
                    "claim": f"negative palette: >= 2 x fewer pixels within {NEAR} (RGB) of the negative colour, "
                    f"CFG {cfg}",
                    "measured": f"{wo:.3f} -> {w:.3f} ({f'/ {wo / w:.1f}' if w > 0 else 'none left'})",
                    "bound": "",
                    "met": w * 2.0 <= wo,
                }
            )
    return rows


def results_text(r: dict) -> str:
    """Markdown summary of the toy run."""
    e = r["eval"]
    s = e["training_scalars"]
    area = r.get("settings", {}).get("palette_weights") == "area"
    weights = (
        " weighted by the area each colour fills (as in training; EMD against the weighted palettes)" if area else ""
    )
    lines = [
        "# Toy run results",
        "",
        f"Held-out palettes: {e['palettes']}{weights}, {e['images_per_setting']} images per setting, "
        f"CFG {' and '.join(f'{g:g}' for g in e['guidances'])}, {e['sampling_steps']} DDIM steps. Settings from "
        f"the training images: entropy low / reference / high {s['entropy'][0]:.2f} / {s['entropy_mean']:.2f} / "
        f"{s['entropy'][2]:.2f} bits, distance {s['distance'][0]:.3f} / {s['distance_mean']:.3f} / "
        f"{s['distance'][2]:.3f} (10 % quantile / mean / 90 % quantile; relative mode: reference + change; "
        f"medians {s['entropy'][1]:.2f} bits, {s['distance'][1]:.3f}).",
        "",
        "| target | measured | bound (what the base / the data can do) | met |",
        "|---|---|---|---|",
        *(f"| {t['claim']} | {t['measured']} | {t['bound']} | {_mark(t['met'])} |" for t in targets(e)),
        "",
        "| figure | value |",
        "|---|---|",
        f"| palette EMD without the adapter (empty caption) | {e['emd_without_adapter']:.4f} |",
        f"| palette EMD of the data generator's own images in other palettes / in these palettes (the best "
        f"reachable) | {e['emd_data_other_palettes']:.4f} / {e['emd_data_in_palette']:.4f} (x "
        f"{e['emd_data_in_palette'] / e['emd_data_other_palettes']:.2f}) |",
        f"| output entropy: without the adapter / data flat / data textured | "
        f"{e['output_entropy_without_adapter']:.2f} / {e['entropy_flat']:.2f} / {e['entropy_textured']:.2f} bits |",
    ]
    for tag, c in e["by_cfg"].items():
        cfg = tag.removeprefix("cfg")
        lines.append(
            f"| CFG {cfg}: with the adapter, no control set: entropy / share > ΔE {FAR:g} | "
            f"{c['entropy_plain']:.2f} bits / {c['far_share_plain']:.3f} |"
        )
        if c.get("scalar_token_attention"):
            att = c["scalar_token_attention"]
            top = max(att, key=att.get)
            layout = LAYOUTS.get(r.get("adapter_version", ""))
            share = "of the output's norm" if layout is not None and layout.scalar_added else "attention weight"
            lines.append(
                f"| CFG {cfg}: the scalar token's share ({share}; mean over queries and steps): mean of the "
                f"{len(att)} layers / largest ({top}) / layers under 1 % | {sum(att.values()) / len(att):.3f} / "
                f"{att[top]:.3f} / {sum(v < 0.01 for v in att.values())} |"
            )
        if "delta_e_absolute_low" in c:
            lines.append(
                f"| CFG {cfg}: mean ΔE to the nearest palette colour, low / high distance setting (absolute); the "
                f"base told 'flat' / 'textured' | {c['delta_e_absolute_low']:.1f} / {c['delta_e_absolute_high']:.1f}; "
                f"{c['base_delta_e_flat']:.1f} / {c['base_delta_e_textured']:.1f} |"
            )
        if "emd_seen_with_adapter" in c:
            seen_ratio = c["emd_seen_with_adapter"] / e["emd_seen_without_adapter"]
            lines.append(
                f"| CFG {cfg}: palette EMD on training images' own palettes (conditions like those "
                f"trained on), without / with the adapter | {e['emd_seen_without_adapter']:.4f} / "
                f"{c['emd_seen_with_adapter']:.4f} (x {seen_ratio:.2f}) |"
            )
    parts = {
        "the data generator's images in these palettes": e["colour_breakdown_data"],
        "base, no caption": e["colour_breakdown_base"],
    }
    for tag, c in e["by_cfg"].items():
        cfg = tag.removeprefix("cfg")
        parts[f"base given the exact colours as words, CFG {cfg}"] = c["colour_breakdown_base_colour_captions"]
        parts[f"with the adapter, CFG {cfg}"] = c["colour_breakdown_adapter"]
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
        "Timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in r["seconds"].items()) + f" (device: {r['device']}).",
        f"Adapter steps {r['adapter_steps']}, base steps {r['base_steps']}, training images {r['train_images']} "
        f"({r['skipped_images']} broken files skipped by the trainer).",
    ]
    if r.get("adapter_loss"):
        windows = r["adapter_loss"]
        lines.append(
            f"Adapter loss, mean over {' / '.join(windows)}: {' / '.join(f'{v:.3f}' for v in windows.values())} "
            "(a second window still near the first marks the slow path, docs/training.md)."
        )
    if "analysis" in r:
        lines += ["", f"Block analysis: recommended {', '.join(r['analysis']['recommended'])}."]
    return "\n".join(lines) + "\n"


# The adapter's conditions: the palette each image was drawn in (the manifest's), never its full histogram
# or a median cut. Both carry the image's shading themselves (a cut of a shaded image has its darker,
# greyer shades), so the adapter drew shading from the palette, and the entropy and distance settings,
# telling it nothing new, had no effect at all (docs/training.md, "Toy run").
ADAPTER_RECIPE = Recipe(palette_resize=None, p_palette=0.9, p_histogram=0.0, palette_source="manifest")

PRESETS = {
    # 2 quiet CPU cores, about 27 minutes (docs/training.md "Toy run")
    "cpu": {
        "train_images": 2000,
        "base_steps": 4000,
        "base_batch": 32,
        "base_channels": 16,
        "adapter_steps": 2400,
        "adapter_batch": 32,
        "eval_palettes": 16,
        "validate_every": 200,
    },
    # one GPU, under 8 minutes: the base is launch-bound (a few steps/s whatever the batch), so it gets
    # 16 x the CPU's batch at the CPU's tested width and rate rather than more steps
    "gpu": {
        "train_images": 10000,
        "base_steps": 1200,
        "base_batch": 512,
        "base_channels": 16,
        "adapter_steps": 600,
        "adapter_batch": 128,
        "eval_palettes": 32,
        "validate_every": 0,
    },
}
SMOKE = {  # every phase at a size a test can afford; the figures mean nothing
    "train_images": 12,
    "base_steps": 3,
    "base_batch": 4,
    "base_channels": 16,
    "adapter_steps": 2,
    "adapter_batch": 4,
    "eval_palettes": 2,
    "eval_seeds": 1,
    "sampling_steps": 3,
    "validate_every": 0,
}


def resolve_device(device: str) -> str:
    """``auto``: CUDA when a GPU is visible, else the CPU; ``cuda`` without a GPU is refused."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("run_toy: --device cuda, but torch sees no CUDA GPU (use --device cpu)")
    return device


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line, sizes filled from the device's preset (or ``--smoke``) where not given."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where both trainings run")
    p.add_argument(
        "--preset", choices=tuple(PRESETS), help="sizes of a CPU or GPU run (default: the device's); flags override"
    )
    p.add_argument("--smoke", action="store_true", help="tiny sizes: checks that every phase runs (no figures)")
    p.add_argument("--train-images", type=int)
    p.add_argument("--base-steps", type=int)
    p.add_argument("--base-batch", type=int)
    p.add_argument("--base-channels", type=int, help="UNet width (levels c, 2c, 4c)")
    p.add_argument("--base-lr", type=float, default=2e-3)
    p.add_argument(
        "--base-prediction",
        choices=("sample", "v_prediction"),
        default="sample",
        help="what the base UNet predicts",
    )
    p.add_argument("--pixel-scale", type=float, default=1.0, help="latents = scale x [-1, 1] pixels")
    p.add_argument(
        "--base-lognormal-share", type=float, default=0.0, help="share of base timesteps at EDM-like noise levels"
    )
    p.add_argument(
        "--base-min-snr", type=float, default=20.0, help="Min-SNR gamma of the base's loss weights (0: none)"
    )
    p.add_argument("--adapter-steps", type=int)
    p.add_argument("--adapter-batch", type=int)
    p.add_argument("--adapter-lr", type=float, default=1e-3)
    p.add_argument(
        "--adapter-lr-schedule", choices=LR_SCHEDULES, default="constant", help="after warm-up: constant, or cosine"
    )
    p.add_argument("--adapter-seed", type=int, default=0, help="the adapter's initial weights and its training draws")
    p.add_argument(
        "--adapter-version",
        choices=READABLE_VERSIONS,
        help="adapter file version (default the newest; 3 attends the scalar token in the colour tokens' softmax)",
    )
    p.add_argument(
        "--palette-weights",
        choices=PALETTE_WEIGHTS,
        default="equal",
        help="the palettes' weights, trained on and evaluated: equal (the paper's), or the area each colour fills",
    )
    p.add_argument("--eval-palettes", type=int)
    p.add_argument("--eval-seeds", type=int, default=2)
    p.add_argument("--sampling-steps", type=int, default=25, help="DDIM steps of the evaluation")
    p.add_argument("--validate-every", type=int)
    p.add_argument("--analyse", action="store_true", help="also rank the blocks of the trained adapter")
    p.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (0 = torch's default; 1 on a busy machine)"
    )
    args = p.parse_args(argv)
    args.device = resolve_device(args.device)
    preset = args.preset or ("gpu" if args.device == "cuda" else "cpu")
    sizes = {**PRESETS[preset], **(SMOKE if args.smoke else {})}
    for key, value in sizes.items():
        if getattr(args, key) is None or (args.smoke and key in ("eval_seeds", "sampling_steps")):
            setattr(args, key, value)
    args.preset = preset
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    # the adapter trainer's Accelerator would take a visible GPU otherwise (for this run only)
    hide_gpu = args.device == "cpu" and torch.cuda.is_available()
    before = os.environ.get("ACCELERATE_USE_CPU")
    if hide_gpu:
        os.environ["ACCELERATE_USE_CPU"] = "true"
    try:
        return run(args)
    finally:
        if hide_gpu and before is None:
            del os.environ["ACCELERATE_USE_CPU"]
        elif hide_gpu:
            os.environ["ACCELERATE_USE_CPU"] = before


def run(args: argparse.Namespace) -> int:
    """Every phase of the toy run with the parsed ``args`` (each finished phase is reused)."""
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}

    t = time.perf_counter()
    manifest = out / "data" / "manifest.jsonl"
    curated = out / "curated" / "manifest.jsonl"
    if not manifest.is_file():
        write_dataset(out / "data", args.train_images, SIZE, seed=0, broken=4, palette_weights=args.palette_weights)
    for written in (m for m in (manifest, curated) if m.is_file()):
        if (found := manifest_palette_weights(written)) != args.palette_weights:
            raise SystemExit(
                f"run_toy: {written} holds palettes in {found} weights, this run asks for --palette-weights "
                f"{args.palette_weights}; use a new --out folder (copy base/ over: the images are the same)"
            )
    seconds["data"] = time.perf_counter() - t

    t = time.perf_counter()
    if not curated.is_file():
        from train.curate_dataset import curate

        report = curate(read_manifest(manifest), out / "curated", size=SIZE, workers=0, min_size=SIZE // 2)
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
            progress=not args.smoke,
            device=args.device,
        )
    else:
        log.info("reusing the base in %s with the settings it was trained with (delete it to train another)", base_dir)
    seconds["base"] = time.perf_counter() - t
    codec = base_codec(base_dir)

    t = time.perf_counter()
    weigh = weighted_by_area if args.palette_weights == "area" else list
    val = weigh(held_out_palettes(4, seed=999))
    cfg = TrainConfig(
        output=out / "adapter",
        data=manifest,
        model=base_dir,
        resolution=SIZE,
        min_size=SIZE // 2,
        batch_size=args.adapter_batch,
        max_steps=args.adapter_steps,
        lr=args.adapter_lr,
        lr_schedule=args.adapter_lr_schedule,
        seed=args.adapter_seed,
        adapter_version=args.adapter_version,
        warmup_steps=20,
        recipe=ADAPTER_RECIPE,
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
    train_images, train_palettes = training_palettes(curated, SIZE)
    result = {
        "eval": evaluate(
            model,
            codec,
            trainer.text,
            trainer.scheduler.config,
            weigh(held_out_palettes(args.eval_palettes)),
            args.eval_seeds,
            out,
            training_scalars(train_images, train_palettes),
            steps=args.sampling_steps,
            seen=train_palettes[: args.eval_palettes],
        ),
        "adapter_steps": trained["step"],
        "base_steps": args.base_steps,
        "device": args.device,
        "preset": args.preset,
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "train_images": int(train_images.shape[0]),
        "skipped_images": trained["skipped"],
        "adapter_file": trained.get("adapter"),
        "adapter_version": model.adapter.file_version,
        "adapter_loss": loss_path(out / "adapter" / "train_log.csv"),
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
