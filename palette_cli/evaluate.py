"""``palette evaluate``: score images against palettes (palette EMD, paper Table 1, and Quadratic-Chi)."""

from __future__ import annotations

import argparse
import csv
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from palette_core.errors import PaletteError

from .common import IMAGE_EXTENSIONS, CliError, load_image, progress, resolve_palette

if TYPE_CHECKING:
    import numpy as np
    from torch import Tensor

    from palette_core.palette import Palette

log = logging.getLogger(__name__)

PLOT_MAX_ROWS = 100  # matplotlib refuses figures taller than 2^16 pixels; 100 rows is already a long page


@dataclass
class Job:
    """One image to score and the palette to score it against."""

    image: Path
    palette: Palette
    palette_label: str


def _jobs_from_folder(folder: Path, palette_arg: str) -> list[Job]:
    if not folder.is_dir():
        raise CliError(f"--images {folder}: not a folder")
    palette = resolve_palette(palette_arg)
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not images:
        raise CliError(f"--images {folder}: no images ({', '.join(IMAGE_EXTENSIONS)})")
    return [Job(p, palette, palette_arg) for p in images]


def _jobs_from_csv(table: Path) -> list[Job]:
    base = table.parent
    from palette_core.image_file import ImageFileError, read_regular

    try:
        text = read_regular(table, "table").decode("utf-8-sig")  # a FIFO or a device is refused, not read forever
    except ImageFileError as e:
        raise CliError(f"--palettes {e}") from None
    except UnicodeDecodeError as e:
        raise CliError(f"--palettes {table}: cannot read: {e}") from None
    reader = csv.DictReader(text.splitlines())
    fields = [f.strip().lower() for f in reader.fieldnames or []]
    if "image" not in fields or "palette" not in fields:
        raise CliError(f"--palettes {table}: line 1: expected a header with the columns image,palette")
    reader.fieldnames = fields
    jobs = []
    for row in reader:
        line = reader.line_num
        image, palette = (row.get("image") or "").strip(), (row.get("palette") or "").strip()
        if not image or not palette:
            raise CliError(f"--palettes {table}: line {line}: expected an image path and a palette")
        try:
            jobs.append(Job(base / image, resolve_palette(palette, base), palette))
        except (PaletteError, CliError) as e:
            raise CliError(f"--palettes {table}: line {line}: {e}") from None
    if not jobs:
        raise CliError(f"--palettes {table}: no rows after the header")
    return jobs


@dataclass
class Scored:
    """An evaluated image: its scores and what the report plot needs."""

    job: Job
    emd: float
    qc: float
    thumbnail: np.ndarray | None
    histogram: Tensor | None


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Score images against palettes: palette EMD (paper Table 1) and Quadratic-Chi, per image and mean ± std."""
    import numpy as np
    import torch

    from palette_core.distance import palette_emd, quadratic_chi
    from palette_core.histogram import image_histogram

    from .plots import thumbnail

    if args.palettes:
        if args.images or args.palette:
            raise CliError("give either --images DIR --palette P, or --palettes FILE.csv, not both")
        jobs = _jobs_from_csv(Path(args.palettes))
    elif args.images and args.palette:
        jobs = _jobs_from_folder(Path(args.images), args.palette)
    else:
        raise CliError("give --images DIR with --palette P, or --palettes FILE.csv")

    scored: list[Scored] = []
    image_hists, palette_hists, skipped = [], [], []
    for job in progress(jobs, "evaluating"):
        try:
            image = load_image(job.image)
        except CliError as e:
            log.warning("skipped: %s", e)
            skipped.append(job.image)
            continue
        hist = image_histogram(image)
        emd = float(palette_emd(image, job.palette.colors, job.palette.weights))
        image_hists.append(hist)
        palette_hists.append(job.palette.histogram())
        keep = args.plot is not None and len(scored) < PLOT_MAX_ROWS
        scored.append(Scored(job, emd, math.nan, thumbnail(image) if keep else None, hist if keep else None))
    if not scored:
        raise CliError(f"none of the {len(jobs)} images could be read")
    qcs = quadratic_chi(torch.stack(image_hists), torch.stack(palette_hists)).tolist()
    for s, qc in zip(scored, qcs):
        s.qc = qc

    width = max(len(str(s.job.image.name)) for s in scored)
    print(f"{'image':<{width}}  palette_emd  quadratic_chi")
    for s in scored:
        print(f"{s.job.image.name:<{width}}  {s.emd:11.4f}  {s.qc:13.4f}")
    emd, qc = np.array([s.emd for s in scored]), np.array([s.qc for s in scored])
    print(f"palette_emd    {emd.mean():.4f} ± {emd.std():.4f}")
    print(f"quadratic_chi  {qc.mean():.4f} ± {qc.std():.4f}")
    print(f"({len(scored)} images" + (f", {len(skipped)} unreadable skipped)" if skipped else ")"))

    if args.out:
        _write_report(Path(args.out), scored)
        print(f"wrote {args.out}")
    if args.plot:
        from .plots import plot_report

        plot_report(Path(args.plot), scored)
        print(f"wrote {args.plot}")
    return 0


def _write_report(path: Path, scored: list[Scored]) -> None:
    try:
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["image", "palette", "palette_emd", "quadratic_chi"])
            for s in scored:
                w.writerow([str(s.job.image), s.job.palette.to_text(), f"{s.emd:.6f}", f"{s.qc:.6f}"])
    except OSError as e:
        raise CliError(f"{path}: cannot write: {e.strerror or e}") from None
