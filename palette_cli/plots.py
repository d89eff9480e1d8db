"""The ``--plot`` figures of ``histogram`` and ``evaluate`` (matplotlib, imported only when a plot is asked for)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

from .common import CliError

if TYPE_CHECKING:
    import numpy as np
    from torch import Tensor

    from .evaluate import Scored

log = logging.getLogger(__name__)


def _figure(width: float, height: float, dpi: int = 100):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise CliError("--plot needs matplotlib (pip install matplotlib)") from None
    return Figure(figsize=(width, height), dpi=dpi, layout="constrained")


def _save_figure(fig, path: Path) -> None:
    try:
        fig.savefig(path)
    except (OSError, ValueError) as e:  # ValueError: an extension matplotlib cannot write
        raise CliError(f"{path}: cannot write the plot: {e}") from None


def thumbnail(image: np.ndarray, size: int = 192) -> np.ndarray:
    """``image`` subsampled by a whole step so that its longer side is at most ``size`` pixels."""
    h, w = image.shape[:2]
    step = max(1, math.ceil(max(h, w) / size))
    return image[::step, ::step]


def _strip(ax, pixels: Tensor, title: str) -> None:
    ax.imshow(pixels.numpy(), aspect="auto", interpolation="nearest")
    ax.set_title(title, fontsize=8, loc="left")
    ax.set_axis_off()


def plot_histogram(path: Path, image: np.ndarray, hist: Tensor, bits: float, occupied: int, name: str) -> None:
    """Save the image beside a bar chart of its 32 heaviest HSV bins and those bins as swatches."""
    from palette_core.histogram import bin_centers
    from palette_core.render import histogram_bars

    fig = _figure(10, 5.5)
    grid = fig.add_gridspec(2, 2, width_ratios=[1, 1.6], height_ratios=[3, 1])
    ax = fig.add_subplot(grid[:, 0])
    ax.imshow(thumbnail(image, 512))
    ax.set_title(f"{name}\nentropy {bits:.2f} bits, {occupied} occupied bins", fontsize=9)
    ax.set_axis_off()
    top = min(32, occupied)
    mass, bins = hist.topk(top)
    bars = fig.add_subplot(grid[0, 1])
    bars.bar(range(top), mass.numpy() * 100, color=bin_centers()[bins].numpy(), edgecolor="0.3", linewidth=0.4)
    bars.set_xticks(range(top), [str(b) for b in bins.tolist()], rotation=90, fontsize=6)
    bars.set_ylabel("% of pixels")
    bars.set_title(f"the {top} heaviest of 4080 HSV bins (bin centre colours)", fontsize=9)
    _strip(fig.add_subplot(grid[1, 1]), histogram_bars(hist, top=top, height=16, width=512), "as swatches")
    _save_figure(fig, path)


def plot_report(path: Path, scored: list[Scored]) -> None:
    """Save one row per scored image (those with a thumbnail): the image, its palette and its histogram."""
    from palette_core.render import histogram_bars, palette_stripes

    rows = [s for s in scored if s.thumbnail is not None]
    if len(rows) < len(scored):
        log.warning("the plot shows the first %d of %d images", len(rows), len(scored))
    fig = _figure(10, 1.5 * len(rows) + 0.4, dpi=80)
    grid = fig.add_gridspec(len(rows), 3, width_ratios=[1, 2, 2])
    for i, s in enumerate(rows):
        ax = fig.add_subplot(grid[i, 0])
        ax.imshow(s.thumbnail)
        ax.set_title(s.job.image.name, fontsize=8, loc="left")
        ax.set_axis_off()
        stripes = palette_stripes(s.job.palette.colors, s.job.palette.weights, height=16, width=256)
        _strip(fig.add_subplot(grid[i, 1]), stripes, f"palette   EMD {s.emd:.3f}   QC {s.qc:.3f}")
        _strip(fig.add_subplot(grid[i, 2]), histogram_bars(s.histogram, top=32, height=16, width=256), "histogram")
    _save_figure(fig, path)
