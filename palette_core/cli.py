"""The command line, ``palette <command>`` (issue 3): extract, histogram, distance, convert, evaluate.

Installed by ``pip install`` as ``palette``; ``python -m palette_core`` runs the same from the repository.
Exit status 0 on success and 2 on bad arguments or bad input, with a one-line message on stderr that
names the problem (no traceback). Images are read with Pillow as RGB (alpha is dropped). matplotlib
(for ``--plot``) and tqdm (for the progress bar) are optional and imported only when used. So that the
program starts fast, numpy, Pillow and torch are imported only by the commands that use them: ``--help``
needs none, ``distance`` only numpy and Pillow (:func:`.similarity.occupied_quadratic_chi`), and a
command that needs torch where it is not installed says so (exit status 2).
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from .errors import PaletteError, PaletteFormatError, is_missing_torch, torch_missing_message

if TYPE_CHECKING:
    import numpy as np
    from torch import Tensor

    from .palette import Palette

log = logging.getLogger(__name__)

PROG = "palette"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
TOP_BINS = 10
PLOT_MAX_ROWS = 100  # matplotlib refuses figures taller than 2^16 pixels; 100 rows is already a long page
OUTPUT_FORMATS = ("text", "json", "gpl", "ase")
_FORMAT_OF_EXTENSION = {".txt": "text", ".json": "json", ".gpl": "gpl", ".ase": "ase", ".hex": "hex"}


class CliError(Exception):
    """Bad arguments or bad input found after parsing: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage dump) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


# --------------------------------------------------------------------------------------------------
# Inputs


def load_image(path: str | Path, target: int | None = None) -> np.ndarray:
    """An image file as ``[H, W, 3]`` float32 sRGB in [0, 1] (EXIF rotation applied, alpha dropped).

    Regular files only; 16-bit grey is scaled, not clipped; with ``target`` (the side the command resamples
    to), a large image is decoded reduced (docs/extraction.md, "Image files").
    """
    from .image_file import ImageFileError, read_image

    try:
        return read_image(path, target)
    except ImageFileError as e:
        raise CliError(str(e)) from None


def _exists(path: Path, test: Callable[[Path], bool] = Path.exists) -> bool:
    """``test(path)``, False for names no file can have (too long for the OS, a NUL byte): those are text."""
    try:
        return test(path)
    except (OSError, ValueError):
        return False


def resolve_palette(arg: str, base: Path | None = None) -> Palette:
    """A palette from a palette file, a Coolors URL or palette text (docs/design.md §5)."""
    from .formats import READ_FORMATS, load_palette
    from .palette import _COOLORS_RE, Palette, quote

    path = Path(arg) if base is None or Path(arg).is_absolute() else base / arg
    if _COOLORS_RE.match(arg.strip()):
        return Palette.parse(arg)
    looks_like_a_path = not any(c in arg for c in ",\n")  # "#fff, a.json" is text, "a.json" a file
    if path.suffix.lower() in READ_FORMATS and (_exists(path) or looks_like_a_path):
        return load_palette(path)
    try:
        return Palette.parse(arg)
    except PaletteFormatError as e:
        raise CliError(f"{quote(arg)} is neither a palette file nor palette text: {e}") from None


@dataclass
class Operand:
    """One argument of ``distance``: an image or a palette, as a 4080-bin histogram (numpy, no torch)."""

    label: str
    kind: str
    histogram: np.ndarray


def resolve_operand(arg: str) -> Operand:
    """An image file, a palette file, a Coolors URL or palette text, as a 4080-bin histogram."""
    from .bins import pixel_counts
    from .formats import READ_FORMATS

    path = Path(arg)
    if _exists(path, Path.is_file) and path.suffix.lower() not in READ_FORMATS:
        counts = pixel_counts(load_image(path).reshape(-1, 3))
        return Operand(arg, "image", counts / counts.sum())
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        if _exists(path):  # a folder, a FIFO or a device: load_image says which, without reading it
            load_image(path)
        raise CliError(f"{path}: no such image file")
    return Operand(arg, "palette", resolve_palette(arg).histogram_array())


# --------------------------------------------------------------------------------------------------
# Output helpers


def palette_bytes(palette: Palette, fmt: str, name: str) -> bytes:
    """The palette in an output format: the text form (with weights) or a file format."""
    from .formats import encode

    if fmt == "text":
        return (palette.to_text() + "\n").encode("utf-8")
    return encode(palette, fmt, name=name)


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``, turning OS errors into a one-line CLI error."""
    try:
        path.write_bytes(data)
    except OSError as e:
        raise CliError(f"{path}: cannot write: {e.strerror or e}") from None


def swatch(hex_colour: str) -> str:
    """Two full blocks in the colour (24-bit ANSI) when stdout is a terminal, else nothing."""
    if not sys.stdout.isatty():
        return ""
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"\x1b[38;2;{r};{g};{b}m\u2588\u2588\x1b[0m"


def progress(items: Sequence, desc: str) -> Iterable:
    """A tqdm progress bar on stderr when tqdm is installed, else a plain counter (both only on a terminal)."""
    try:
        from tqdm import tqdm
    except ImportError:
        return _plain_progress(items, desc)
    return tqdm(items, desc=desc, unit="image", file=sys.stderr, disable=None, leave=False)


def _plain_progress(items: Sequence, desc: str) -> Iterator:
    shown = sys.stderr.isatty()
    for i, item in enumerate(items, start=1):
        if shown:
            print(f"\r{desc}: {i}/{len(items)}", end="", file=sys.stderr, flush=True)
        yield item
    if shown:
        print(file=sys.stderr)


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


def _thumbnail(image: np.ndarray, size: int = 192) -> np.ndarray:
    h, w = image.shape[:2]
    step = max(1, math.ceil(max(h, w) / size))
    return image[::step, ::step]


def _strip(ax, pixels: Tensor, title: str) -> None:
    ax.imshow(pixels.numpy(), aspect="auto", interpolation="nearest")
    ax.set_title(title, fontsize=8, loc="left")
    ax.set_axis_off()


# --------------------------------------------------------------------------------------------------
# Commands


def _extract_palette() -> Callable[..., Palette]:
    try:
        from .extract import extract_palette
    except ImportError as e:
        if is_missing_torch(e):
            raise
        raise CliError(f"extract needs palette_core.extract, which is not available here ({e})") from None
    return extract_palette


def cmd_extract(args: argparse.Namespace) -> int:
    """Extract a palette from an image and print it or write it to a file."""
    from .palette import quote

    out = Path(args.out) if args.out else None
    fmt = args.format
    if fmt is None and out is not None:
        fmt = _FORMAT_OF_EXTENSION.get(out.suffix.lower())
        if fmt is None:
            known = ", ".join(_FORMAT_OF_EXTENSION)
            raise CliError(f"--out {out}: cannot tell the format from {quote(out.suffix)}: use {known} or --format")
    fmt = fmt or "text"
    if fmt == "ase" and out is None:
        raise CliError("--format ase is binary: give --out FILE.ase")
    extract_palette = _extract_palette()
    from .extract import DEFAULT_RESIZE

    image = load_image(args.image, DEFAULT_RESIZE)  # extraction resamples to 256 x 256: decode no more than it needs
    palette = extract_palette(image, size=args.size, method=args.method.replace("-", "_"))
    data = palette_bytes(palette, fmt, name=Path(args.image).stem)
    if out is None:
        sys.stdout.write(data.decode("utf-8"))
    else:
        write_bytes(out, data)
        print(f"wrote {out}: {len(palette)} colours ({fmt})")
    return 0


def cmd_histogram(args: argparse.Namespace) -> int:
    """Print entropy, occupied bins and the heaviest bins of an image's HSV histogram."""
    from .histogram import MAX_ENTROPY, NUM_BINS, S_BINS, V_BINS, bin_centers, entropy, image_histogram
    from .palette import to_hex

    image = load_image(args.image)
    hist = image_histogram(image)
    bits = float(entropy(hist))
    occupied = int((hist > 0).sum())
    mass, bins = hist.topk(min(TOP_BINS, occupied))
    centres = bin_centers()
    print(f"{args.image}: {image.shape[1]}x{image.shape[0]} pixels")
    print(f"entropy        {bits:.3f} bits (of at most {MAX_ENTROPY:.2f})")
    print(f"occupied bins  {occupied} of {NUM_BINS}")
    print(f"top {len(bins)} bins (bin index, h/s/v bin, centre colour, share of pixels):")
    for rank, (b, m) in enumerate(zip(bins.tolist(), mass.tolist()), start=1):
        h, rest = divmod(b, S_BINS * V_BINS)
        s, v = divmod(rest, V_BINS)
        hx = to_hex(centres[b].tolist())
        print(f"  {rank:2d}. bin {b:4d}  h {h:2d} s {s:2d} v {v}  {hx}  {100 * m:5.1f}%  {swatch(hx)}".rstrip())
    if args.plot:
        _plot_histogram(Path(args.plot), image, hist, bits, occupied, Path(args.image).name)
        print(f"wrote {args.plot}")
    return 0


def _plot_histogram(path: Path, image: np.ndarray, hist: Tensor, bits: float, occupied: int, name: str) -> None:
    from .histogram import bin_centers
    from .render import histogram_bars

    fig = _figure(10, 5.5)
    grid = fig.add_gridspec(2, 2, width_ratios=[1, 1.6], height_ratios=[3, 1])
    ax = fig.add_subplot(grid[:, 0])
    ax.imshow(_thumbnail(image, 512))
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


def cmd_distance(args: argparse.Namespace) -> int:
    """Print the Quadratic-Chi distance between two images or palettes."""
    from .similarity import occupied_quadratic_chi

    a, b = resolve_operand(args.a), resolve_operand(args.b)
    qc = float(occupied_quadratic_chi(a.histogram, b.histogram))
    print(f"{qc:.6f}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    """Convert a palette between file formats."""
    from .formats import save_palette

    palette = resolve_palette(args.input)
    save_palette(palette, args.output)
    print(f"wrote {args.output}: {len(palette)} colours")
    return 0


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
    from .image_file import ImageFileError, read_regular

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

    from .distance import palette_emd, quadratic_chi
    from .histogram import image_histogram

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
        scored.append(Scored(job, emd, math.nan, _thumbnail(image) if keep else None, hist if keep else None))
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
        _plot_report(Path(args.plot), scored)
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


def _plot_report(path: Path, scored: list[Scored]) -> None:
    from .render import histogram_bars, palette_stripes

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


# --------------------------------------------------------------------------------------------------
# Parser


def _whole_number(text: str) -> int:
    from .palette import quote

    # int() of more than 4300 digits raises a ValueError that names Python internals; no argument here
    # takes a number anywhere near 100 characters long.
    if len(text) > 100:
        raise argparse.ArgumentTypeError(f"{quote(text)} ({len(text)} characters) is too large")
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{quote(text)} is not a whole number") from None


def _size(text: str) -> int:
    from .palette import MAX_COLORS

    n = _whole_number(text)
    if not 1 <= n <= MAX_COLORS:
        raise argparse.ArgumentTypeError(f"{n} colours: a palette holds 1 to {MAX_COLORS}")
    return n


def _seed(text: str) -> int:
    n = _whole_number(text)
    if not -(2**63) <= n < 2**64:  # what torch.Generator.manual_seed takes
        raise argparse.ArgumentTypeError(f"{n} is out of range: expected a 64-bit seed, 0 to {2**64 - 1}")
    return n


def cmd_adapter_init(args: argparse.Namespace) -> int:
    """Write an UNTRAINED Palette-Adapter for SDXL (random weights) so workflows can be built and tested.

    The file is large: about 344 MB for the default block, and more for each block added.
    """
    from .adapter import adapter_nbytes, save_untrained, untrained_sdxl

    adapter = untrained_sdxl(args.blocks, args.seed)
    print(f"writing {args.out}: {adapter_nbytes(adapter) / 1e6:.0f} MB of float32 weights", flush=True)
    path = save_untrained(adapter, args.out, args.seed)
    print(f"wrote {path} (untrained: random weights that change images but not toward the palette)")
    return 0


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The argparse parser of the commands; ``prog`` is the program name that usage and errors show."""
    parser = _Parser(prog=prog, description="Palettes: extract, inspect, compare, convert and score images.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    p = sub.add_parser("extract", help="extract a palette from an image", description=cmd_extract.__doc__)
    p.add_argument("image", help="an image file")
    p.add_argument("--size", type=_size, default=5, help="number of colours (default 5)")
    p.add_argument("--method", choices=("kmeans", "median-cut"), default="kmeans", help="default kmeans")
    p.add_argument("--format", choices=OUTPUT_FORMATS, help="output format (default: text, or from --out)")
    p.add_argument("--out", help="write to this file instead of stdout")
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("histogram", help="entropy and top bins of an image", description=cmd_histogram.__doc__)
    p.add_argument("image", help="an image file")
    p.add_argument("--plot", metavar="FILE.png", help="also save a plot of the image and its histogram")
    p.set_defaults(func=cmd_histogram)

    p = sub.add_parser("distance", help="Quadratic-Chi between images or palettes", description=cmd_distance.__doc__)
    for name in ("a", "b"):
        p.add_argument(name, metavar=name.upper(), help="an image file, a palette file, a Coolors URL or palette text")
    p.set_defaults(func=cmd_distance)

    p = sub.add_parser("convert", help="convert a palette file", description=cmd_convert.__doc__)
    p.add_argument("input", metavar="IN", help="a palette file (.gpl .pal .ase .aco .hex .txt .json) or Coolors URL")
    p.add_argument("output", metavar="OUT", help="the file to write (.gpl .ase .hex .json)")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("evaluate", help="score images against palettes", description=cmd_evaluate.__doc__)
    p.add_argument("--images", metavar="DIR", help="a folder of images, all scored against --palette")
    p.add_argument("--palette", metavar="P", help="a palette file, Coolors URL or palette text")
    p.add_argument("--palettes", metavar="FILE.csv", help="a CSV with columns image,palette (paths relative to it)")
    p.add_argument("--out", metavar="report.csv", help="write the per-image scores as CSV")
    p.add_argument("--plot", metavar="report.png", help="save each image beside its palette and histogram")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("adapter", help="Palette-Adapter files", description="Palette-Adapter files.")
    adapter_sub = p.add_subparsers(dest="adapter_command", required=True, metavar="adapter_command")
    q = adapter_sub.add_parser("init", help="write an untrained SDXL adapter", description=cmd_adapter_init.__doc__)
    q.add_argument("--out", required=True, metavar="FILE.safetensors", help="where to write the adapter")
    q.add_argument(
        "--blocks", nargs="+", metavar="NAME", help="diffusers block names (default up_blocks.0.attentions.1)"
    )
    q.add_argument("--seed", type=_seed, default=0, help="random seed, 0 to 2^64 - 1 (default 0)")
    q.set_defaults(func=cmd_adapter_init)
    return parser


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Run the command line as ``prog`` (the name the user typed); returns the exit status (0, or 2 on bad input)."""
    logging.basicConfig(level=logging.WARNING, format=f"{prog}: %(message)s")
    args = build_parser(prog).parse_args(argv)
    try:
        return args.func(args)
    except ModuleNotFoundError as e:
        if not is_missing_torch(e):
            raise
        print(f"{prog} {args.command}: error: {torch_missing_message('this command')}", file=sys.stderr)
        return 2
    except (CliError, PaletteError, OSError) as e:
        print(f"{prog} {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
