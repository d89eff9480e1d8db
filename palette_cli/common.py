"""What the commands share: images and palettes from arguments, output helpers and :class:`CliError`."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from palette_core.errors import PaletteFormatError

if TYPE_CHECKING:
    import numpy as np

    from palette_core.palette import Palette

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")


class CliError(Exception):
    """Bad arguments or bad input found after parsing: reported as one line, exit status 2."""


# --------------------------------------------------------------------------------------------------
# Inputs


def load_image(path: str | Path, target: int | None = None) -> np.ndarray:
    """An image file as ``[H, W, 3]`` float32 sRGB in [0, 1] (EXIF rotation applied, alpha dropped).

    Regular files only; 16-bit grey is scaled, not clipped; with ``target`` (the side the command resamples
    to), a large image is decoded reduced (docs/extraction.md, "Image files").
    """
    from palette_core.image_file import ImageFileError, read_image

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
    from palette_core.formats import READ_FORMATS, load_palette
    from palette_core.palette import Palette, coolors_hexes, quote

    path = Path(arg) if base is None or Path(arg).is_absolute() else base / arg
    if coolors_hexes(arg) is not None:
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
    from palette_core.bins import pixel_counts
    from palette_core.formats import READ_FORMATS

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
    from palette_core.formats import encode

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
