"""The command line, ``palette <command>`` (issue 3): extract, histogram, distance, convert, evaluate, adapter init.

Installed by ``pip install`` as ``palette``; ``python -m palette_core`` runs the same from the repository.
Exit status 0 on success and 2 on bad arguments or bad input, with a one-line message on stderr that
names the problem (no traceback). Images are read with Pillow as RGB (alpha is dropped). matplotlib
(for ``--plot``) and tqdm (for the progress bar) are optional and imported only when used. So that the
program starts fast, numpy, Pillow and torch are imported only by the commands that use them: ``--help``
needs none, ``distance`` only numpy and Pillow (:func:`palette_core.similarity.occupied_quadratic_chi`),
and a command that needs torch where it is not installed says so (exit status 2).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from palette_core.errors import PaletteError, is_missing_torch, torch_missing_message

from .commands import OUTPUT_FORMATS, cmd_adapter_init, cmd_convert, cmd_distance, cmd_extract, cmd_histogram
from .common import CliError
from .evaluate import cmd_evaluate

PROG = "palette"


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage dump) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _whole_number(text: str) -> int:
    from palette_core.palette import quote

    # int() of more than 4300 digits raises a ValueError that names Python internals; no argument here
    # takes a number anywhere near 100 characters long.
    if len(text) > 100:
        raise argparse.ArgumentTypeError(f"{quote(text)} ({len(text)} characters) is too large")
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{quote(text)} is not a whole number") from None


def _size(text: str) -> int:
    from palette_core.palette import MAX_COLORS

    n = _whole_number(text)
    if not 1 <= n <= MAX_COLORS:
        raise argparse.ArgumentTypeError(f"{n} colours: a palette holds 1 to {MAX_COLORS}")
    return n


def _seed(text: str) -> int:
    n = _whole_number(text)
    if not -(2**63) <= n < 2**64:  # what torch.Generator.manual_seed takes
        raise argparse.ArgumentTypeError(f"{n} is out of range: expected a 64-bit seed, 0 to {2**64 - 1}")
    return n


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
