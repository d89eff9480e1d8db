"""Colour-balanced data curation (paper §3.5, Fig. 13; docs/design.md §8): histograms, bin prior, rare bins, weights.

Computes the 4080-bin HSV histogram of every image of a manifest (images decoded in parallel worker
processes, histograms in batches), the global bin prior (the mean histogram), the *common* bins (the
fewest bins holding ``--common-mass`` of all colour, 87 % in 100 bins for LAION-Art in the paper) and the
*rare* rest, and a per-image sampling weight that favours images holding rare colours:

    w_i  proportional to  sum_b h_i(b) * (prior(b) + eps) ** -alpha,   clipped to [1/r, r] x median.

The weighted prior is the colour distribution the trainer then samples; the report says how many bins
are covered (mass >= ``--cover-threshold``) before and after, and plots the sorted bin mass.

    python train/curate_dataset.py --data raw.jsonl --output curated/
    python train/train_palette_adapter.py --data curated/manifest.jsonl ...
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a script: make the repository root importable
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from palette_core.histogram import NUM_BINS, bin_centers, entropy, image_histogram
from train.data import IMAGE_ERRORS, Record, read_manifest, write_manifest

log = logging.getLogger("curate_dataset")


class _Pixels(torch.utils.data.Dataset):
    """``(index, [S, S, 3] uint8 or None)``: each image resampled to a fixed square for batching."""

    def __init__(self, records: Sequence[Record], size: int, min_size: int) -> None:
        self.records, self.size, self.min_size = list(records), size, min_size

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[int, Tensor | None]:
        try:
            with Image.open(self.records[i].image) as im:
                if min(im.size) < self.min_size:
                    return i, None
                im = im.convert("RGB").resize((self.size, self.size), Image.Resampling.BOX)
                return i, torch.from_numpy(np.asarray(im, dtype=np.uint8).copy())
        except IMAGE_ERRORS:
            return i, None


def _collate(items):
    return items


def compute_histograms(
    records: Sequence[Record], size: int = 128, batch: int = 64, workers: int = 2, min_size: int = 32, progress=False
) -> tuple[Tensor, Tensor]:
    """Histograms ``[N, 4080]`` (zeros for skipped images) and the mask of usable images ``[N]``."""
    from tqdm.auto import tqdm

    loader = torch.utils.data.DataLoader(
        _Pixels(records, size, min_size), batch_size=batch, num_workers=workers, collate_fn=_collate
    )
    hists = torch.zeros(len(records), NUM_BINS)
    ok = torch.zeros(len(records), dtype=torch.bool)
    for items in tqdm(loader, disable=not progress, unit="batch"):
        good = [(i, x) for i, x in items if x is not None]
        if not good:
            continue
        idx = torch.tensor([i for i, _ in good])
        pixels = torch.stack([x for _, x in good]).float() / 255.0
        hists[idx] = image_histogram(pixels).float()
        ok[idx] = True
    return hists, ok


def bin_prior(hists: Tensor, weights: Tensor | None = None) -> Tensor:
    """The (weighted) mean histogram ``[4080]``: the colour distribution training samples (paper §3.5)."""
    w = torch.ones(hists.shape[0]) if weights is None else weights.float()
    total = w.sum()
    return (w[:, None] * hists).sum(0) / (total if total > 0 else 1.0)


def common_bins(prior: Tensor, common_mass: float = 0.87) -> Tensor:
    """Indices of the fewest bins holding ``common_mass`` of the prior (paper Fig. 13); the rest are rare."""
    order = torch.argsort(prior, descending=True, stable=True)
    cum = torch.cumsum(prior[order], 0)
    k = int(torch.searchsorted(cum, torch.tensor(common_mass * float(prior.sum())))) + 1
    return order[: min(k, NUM_BINS)]


def balance_weights(hists: Tensor, prior: Tensor, alpha: float = 0.5, max_ratio: float = 20.0) -> Tensor:
    """Per-image sampling weights favouring rare colours (inverse bin frequency to the power ``alpha``).

    Each image scores the prior-inverse of the bins it fills; scores are clipped to ``[1/r, r] x`` their
    median (one odd image must not dominate) and scaled to mean 1. Images with no histogram get 0.
    """
    eps = 1.0 / (NUM_BINS * 1000.0)
    score = hists @ (prior + eps).pow(-alpha)
    ok = hists.sum(-1) > 0
    if not bool(ok.any()):
        return torch.zeros(hists.shape[0])
    med = score[ok].median()
    score = torch.where(ok, score.clamp(med / max_ratio, med * max_ratio), torch.zeros_like(score))
    return score / score[ok].mean()


@dataclass(frozen=True)
class Summary:
    """Coverage figures of one bin distribution."""

    covered_bins: int
    effective_bins: float
    top100_share: float
    rare_share: float
    rarest30_share: float


def summarise(prior: Tensor, common: Tensor, threshold: float) -> Summary:
    """Bins covered (mass >= threshold), effective number of bins 2^H, top-100, rare and rarest-30 shares."""
    p = prior / prior.sum()
    rare = torch.ones(NUM_BINS, dtype=torch.bool)
    rare[common] = False
    nz = p[p > 0]
    return Summary(
        covered_bins=int((p >= threshold).sum()),
        effective_bins=float(2.0 ** entropy(p)),
        top100_share=float(torch.topk(p, 100).values.sum()),
        rare_share=float(p[rare].sum()),
        rarest30_share=float(torch.sort(nz).values[:30].sum()),
    )


def plot_bin_mass(before: Tensor, after: Tensor, path: Path) -> Path:
    """Bin mass sorted by the prior (log scale), before and after weighting, with each bin's colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = torch.argsort(before, descending=True, stable=True)
    fig, (ax, strip) = plt.subplots(2, 1, figsize=(9, 4.4), height_ratios=[5, 1], sharex=True)
    x = np.arange(NUM_BINS)
    tiny = 1e-9
    ax.semilogy(x, (before[order] + tiny).numpy(), label="before (uniform sampling)", color="C0")
    ax.semilogy(x, (after[order] + tiny).numpy(), label="after (balanced weights)", color="C1", alpha=0.85)
    ax.axhline(1.0 / NUM_BINS, color="0.5", ls=":", label="uniform over 4080 bins")
    ax.set(ylabel="bin mass", title="colour-bin mass, bins sorted by the original prior", ylim=(1e-8, 1))
    ax.legend(loc="upper right")
    colours = bin_centers()[order].numpy()[None]
    strip.imshow(colours, aspect="auto", extent=(0, NUM_BINS, 0, 1))
    strip.set(yticks=[], xlabel="bin rank")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def curate(
    records: Sequence[Record],
    out: Path,
    size: int = 128,
    batch: int = 64,
    workers: int = 2,
    min_size: int = 32,
    alpha: float = 0.5,
    max_ratio: float = 20.0,
    common_mass: float = 0.87,
    cover_threshold: float = 1e-5,
    progress: bool = False,
) -> dict:
    """Run the whole curation; writes manifest.jsonl, histograms.safetensors, report.json/.md, bin_mass.png."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    hists, ok = compute_histograms(records, size, batch, workers, min_size, progress)
    skipped = [str(records[i].image) for i in range(len(records)) if not ok[i]]
    for s in skipped:
        log.warning("skipped unreadable or too small image %s", s)
    prior = bin_prior(hists[ok])
    common = common_bins(prior, common_mass)
    weights = balance_weights(hists, prior, alpha, max_ratio)
    after = bin_prior(hists, weights)
    rare = torch.ones(NUM_BINS, dtype=torch.bool)
    rare[common] = False
    rare_mass = hists[:, rare].sum(-1)
    kept = [i for i in range(len(records)) if ok[i]]
    manifest = write_manifest(
        [replace(records[i], weight=round(float(weights[i]), 6)) for i in kept],
        out / "manifest.jsonl",
        [{"rare_mass": round(float(rare_mass[i]), 6)} for i in kept],
    )
    save_file(
        {"histograms": hists[kept].half().contiguous(), "prior": prior, "prior_balanced": after},
        str(out / "histograms.safetensors"),
        metadata={"images": json.dumps([str(records[i].image) for i in kept])},
    )
    b, a = summarise(prior, common, cover_threshold), summarise(after, common, cover_threshold)
    w = weights[ok]
    report = {
        "images": len(records),
        "usable": len(kept),
        "skipped": len(skipped),
        "skipped_files": skipped[:50],
        "common_bins": int(common.numel()),
        "common_mass": common_mass,
        "cover_threshold": cover_threshold,
        "alpha": alpha,
        "before": b.__dict__,
        "after": a.__dict__,
        "weight_min": float(w.min()) if w.numel() else math.nan,
        "weight_max": float(w.max()) if w.numel() else math.nan,
        "manifest": str(manifest),
        "plot": str(plot_bin_mass(prior, after, out / "bin_mass.png")),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(report_text(report))
    return report


def report_text(r: dict) -> str:
    """The human-readable report."""
    b, a = r["before"], r["after"]
    rows = [
        (f"bins covered (mass >= {r['cover_threshold']:.0e})", b["covered_bins"], a["covered_bins"]),
        ("effective bins (2^entropy)", f"{b['effective_bins']:.0f}", f"{a['effective_bins']:.0f}"),
        ("share of the top 100 bins", f"{b['top100_share']:.1%}", f"{a['top100_share']:.1%}"),
        (f"share of the {4080 - r['common_bins']} rare bins", f"{b['rare_share']:.2%}", f"{a['rare_share']:.2%}"),
        ("share of the 30 rarest non-empty bins", f"{b['rarest30_share']:.2e}", f"{a['rarest30_share']:.2e}"),
    ]
    lines = [
        "# Colour-balance curation report",
        "",
        f"{r['usable']} of {r['images']} images usable ({r['skipped']} unreadable or too small, skipped).",
        f"Common bins: the {r['common_bins']} bins holding {r['common_mass']:.0%} of all colour; the rest are rare.",
        f"Sampling weights (alpha {r['alpha']}): {r['weight_min']:.3f} to {r['weight_max']:.3f}, mean 1.",
        "",
        "| | before | after |",
        "|---|---|---|",
        *[f"| {name} | {x} | {y} |" for name, x, y in rows],
        "",
        f"Plot: {Path(r['plot']).name}. Manifest for the trainer: {Path(r['manifest']).name}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="manifest (JSONL/CSV) or folder of images + .txt")
    p.add_argument("--output", type=Path, required=True, help="folder for manifest.jsonl, report, plot")
    p.add_argument("--size", type=int, default=128, help="images are resampled to size x size for the histogram")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--workers", type=int, default=2, help="image-decoding worker processes")
    p.add_argument("--min-size", type=int, default=32, help="skip images whose shorter side is below this")
    p.add_argument("--alpha", type=float, default=0.5, help="0 = uniform weights, 1 = full inverse frequency")
    p.add_argument("--max-ratio", type=float, default=20.0, help="weights clipped to [1/r, r] x median")
    p.add_argument("--common-mass", type=float, default=0.87, help="mass held by the common bins")
    p.add_argument("--cover-threshold", type=float, default=1e-5, help="a bin with this much mass is covered")
    args = p.parse_args(argv)
    records = read_manifest(args.data)
    report = curate(
        records,
        args.output,
        args.size,
        args.batch,
        args.workers,
        args.min_size,
        args.alpha,
        args.max_ratio,
        args.common_mass,
        args.cover_threshold,
        progress=True,
    )
    print(report_text(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
