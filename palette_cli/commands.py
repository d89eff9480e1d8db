"""The commands ``extract``, ``histogram``, ``distance``, ``convert`` and ``adapter init`` (docs/palettes.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import CliError, load_image, palette_bytes, resolve_operand, resolve_palette, swatch, write_bytes

TOP_BINS = 10
OUTPUT_FORMATS = ("text", "json", "gpl", "ase")
_FORMAT_OF_EXTENSION = {".txt": "text", ".json": "json", ".gpl": "gpl", ".ase": "ase", ".hex": "hex"}


def cmd_extract(args: argparse.Namespace) -> int:
    """Extract a palette from an image and print it or write it to a file."""
    from palette_core.palette import quote

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
    from palette_core.extract import DEFAULT_RESIZE, extract_palette

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
    from palette_core.histogram import MAX_ENTROPY, NUM_BINS, S_BINS, V_BINS, bin_centers, entropy, image_histogram
    from palette_core.palette import to_hex

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
        from .plots import plot_histogram

        plot_histogram(Path(args.plot), image, hist, bits, occupied, Path(args.image).name)
        print(f"wrote {args.plot}")
    return 0


def cmd_distance(args: argparse.Namespace) -> int:
    """Print the Quadratic-Chi distance between two images or palettes."""
    from palette_core.similarity import occupied_quadratic_chi

    a, b = resolve_operand(args.a), resolve_operand(args.b)
    qc = float(occupied_quadratic_chi(a.histogram, b.histogram))
    print(f"{qc:.6f}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    """Convert a palette between file formats."""
    from palette_core.formats import save_palette

    palette = resolve_palette(args.input)
    save_palette(palette, args.output)
    print(f"wrote {args.output}: {len(palette)} colours")
    return 0


def cmd_adapter_init(args: argparse.Namespace) -> int:
    """Write an UNTRAINED Palette-Adapter for SDXL (random weights) so workflows can be built and tested.

    The file is large: about 344 MB for the default block, and more for each block added.
    """
    from palette_core.adapter import adapter_nbytes, save_untrained, untrained_sdxl

    adapter = untrained_sdxl(args.blocks, args.seed)
    print(f"writing {args.out}: {adapter_nbytes(adapter) / 1e6:.0f} MB of float32 weights", flush=True)
    path = save_untrained(adapter, args.out, args.seed)
    print(f"wrote {path} (untrained: random weights that change images but not toward the palette)")
    return 0
