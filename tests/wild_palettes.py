"""Palette files laid out byte for byte as the tools that make them write them, written here from the
published format descriptions (no file is copied from anywhere): GIMP, Inkscape, Krita and Aseprite
``.gpl``; Lospec ``.gpl``, ``.hex`` and Paint.NET ``.txt``; Photoshop ``.aco`` (version 1 only, and
version 1 + 2 with an appended block); Illustrator/InDesign ``.ase`` (RGB, CMYK, Lab and Gray, groups).

Sources of the layouts: GIMP's ``gimp_palette_save`` (``%3d %3d %3d\\t<name>``), Krita's
``KoColorSet::saveGpl`` (``r g b\\t<name>``, "Untitled" when unnamed), Aseprite's GPL extension
(``Channels: RGBA`` and a fourth, alpha column), Lospec's downloads (``#Palette Name:`` comment header,
``R\\tG\\tB\\thex`` rows; ``rrggbb`` lines; ``FFrrggbb`` Paint.NET lines), Adobe's Photoshop File
Formats Specification (Color Swatches: big-endian words, version 2 adds ``0, len + 1, UTF-16 name, 0``)
and the published ASE layout (``ASEF``, 1.0, block count; 0x0001 colour, 0xC001 group start,
0xC002 group end blocks; UTF-16BE names with a terminating 0; ``RGB ``/``CMYK``/``LAB ``/``Gray``
big-endian float32 values; colour type 0 global, 1 spot, 2 normal).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# Colours and names made up for these tests.
COLOURS = [
    ((212, 64, 58), "Brick"),
    ((250, 210, 120), "Straw"),
    ((36, 88, 140), "Harbour blue"),
    ((0, 0, 0), ""),
    ((255, 255, 255), "Paper white"),
    ((120, 180, 90), "Fern"),
]


def hexes(colours=COLOURS) -> list[str]:
    return ["#{:02x}{:02x}{:02x}".format(*rgb) for rgb, _ in colours]


# --------------------------------------------------------------------------------------------------
# Text formats


def gimp_gpl(name: str = "Made up", columns: int = 4, colours=COLOURS) -> bytes:
    """GIMP 2.10 / 3.0 ``Export as GIMP palette``."""
    out = f"GIMP Palette\nName: {name}\nColumns: {columns}\n#\n"
    out += "".join("{:3d} {:3d} {:3d}\t{}\n".format(*rgb, n or "Untitled") for rgb, n in colours)
    return out.encode("utf-8")


def inkscape_gpl(name: str = "Made up (Inkscape)", colours=COLOURS) -> bytes:
    """An Inkscape palette: a comment line after Columns, two spaces before names that end in the hex code."""
    out = f"GIMP Palette\nName: {name}\nColumns: 3\n# a palette for the tests, laid out as Inkscape's own\n"
    for (r, g, b), n in colours:
        out += f"{r:3d} {g:3d} {b:3d}  {n or 'Unnamed'} (#{r:02X}{g:02X}{b:02X})\n"
    return out.encode("utf-8")


def krita_gpl(name: str = "Made up (Krita)", columns: int = 16, colours=COLOURS) -> bytes:
    """Krita's palette docker export: no padding, a tab before the name, "Untitled" when unnamed."""
    out = f"GIMP Palette\nName: {name}\nColumns: {columns}\n#\n"
    out += "".join(f"{r} {g} {b}\t{n or 'Untitled'}\n" for (r, g, b), n in colours)
    return out.encode("utf-8")


def aseprite_gpl_rgba(colours=COLOURS, alpha: int = 255) -> bytes:
    """Aseprite's GPL with alpha: a ``Channels: RGBA`` field and a fourth column."""
    out = "GIMP Palette\nChannels: RGBA\n#\n"
    out += "".join(f"{r:3d} {g:3d} {b:3d} {alpha:3d}\tUntitled\n" for (r, g, b), _ in colours)
    return out.encode("utf-8")


def lospec_gpl(name: str = "Made Up 6", colours=COLOURS) -> bytes:
    """Lospec's .gpl download: the header's fields as comments, tab-separated rows ending in the hex code."""
    out = f"GIMP Palette\n#Palette Name: {name}\n#Description: six colours for the tests\n#Colors: {len(colours)}\n"
    out += "".join(f"{r}\t{g}\t{b}\t{r:02x}{g:02x}{b:02x}\n" for (r, g, b), _ in colours)
    return out.encode("utf-8")


def lospec_hex(colours=COLOURS, newline: str = "\n") -> bytes:
    """Lospec's .hex download: one lowercase ``rrggbb`` per line."""
    return "".join(f"{r:02x}{g:02x}{b:02x}{newline}" for (r, g, b), _ in colours).encode("ascii")


def lospec_paintnet_txt(name: str = "Made Up 6", colours=COLOURS) -> bytes:
    """Lospec's Paint.NET .txt download: ``;`` comment lines, then ``FFrrggbb``."""
    out = f";paint.net Palette File\n;Palette Name: {name}\n;Description: six colours\n;Colors: {len(colours)}\n"
    out += "".join(f"FF{r:02x}{g:02x}{b:02x}\n" for (r, g, b), _ in colours)
    return out.encode("ascii")


# --------------------------------------------------------------------------------------------------
# Photoshop .aco


@dataclass(frozen=True)
class AcoColour:
    """One colour record: a colour space id and four 16-bit words (Photoshop File Formats, Color Swatches)."""

    space: int
    w: int
    x: int = 0
    y: int = 0
    z: int = 0
    name: str = ""

    def record(self) -> bytes:
        return struct.pack(">5H", self.space, self.w & 0xFFFF, self.x & 0xFFFF, self.y & 0xFFFF, self.z & 0xFFFF)


def aco_rgb(r: int, g: int, b: int, name: str = "") -> AcoColour:
    """An RGB record as Photoshop writes it: 8-bit levels times 257 (0-65535)."""
    return AcoColour(0, r * 257, g * 257, b * 257, 0, name)


def aco_lab(lab: tuple[float, float, float], name: str = "") -> AcoColour:
    """A Lab record: L in hundredths (0-10000), a and b in signed hundredths."""
    return AcoColour(7, round(lab[0] * 100), round(lab[1] * 100), round(lab[2] * 100), 0, name)


def aco_section(version: int, colours: list[AcoColour]) -> bytes:
    out = struct.pack(">HH", version, len(colours))
    for c in colours:
        out += c.record()
        if version == 2:  # a 0 word, the length including the terminator, UTF-16BE, a 0 word
            units = c.name.encode("utf-16-be")
            out += struct.pack(">I", len(units) // 2 + 1) + units + b"\x00\x00"
    return out


def photoshop_aco_v1(colours: list[AcoColour]) -> bytes:
    """Photoshop before 7.0: the version 1 section only."""
    return aco_section(1, colours)


def photoshop_groups_block(groups: dict[str, list[str]]) -> bytes:
    """A stand-in for the block newer Photoshop versions append after the colours.

    Its layout is not published (it holds the swatch groups in an ``8BIM`` tagged block); this one has
    the tagged-block framing (signature, key, 32-bit length) and a made-up body that names the groups.
    """
    body = b""
    for group, names in groups.items():
        body += b"Grup" + b"TEXT" + aco_name(group)
        body += b"".join(b"Objc" + b"preset" + aco_name(n) for n in names)
        body += b"groupEnd"
    body += b"\x00" * (-len(body) % 4)
    return b"8BIM" + b"phry" + struct.pack(">I", len(body)) + body


def aco_name(name: str) -> bytes:
    units = name.encode("utf-16-be")
    return struct.pack(">I", len(units) // 2 + 1) + units + b"\x00\x00"


def photoshop_aco(colours: list[AcoColour], extra: bytes = b"") -> bytes:
    """Photoshop 7 and later: version 1, then version 2 with names, then (newer versions) more blocks."""
    return aco_section(1, colours) + aco_section(2, colours) + extra


# --------------------------------------------------------------------------------------------------
# Adobe Swatch Exchange (Illustrator, InDesign, Photoshop, Adobe Color)

ASE_MODELS = {"RGB": b"RGB ", "CMYK": b"CMYK", "LAB": b"LAB ", "Gray": b"Gray"}
ASE_TYPES = {"Global": 0, "Spot": 1, "Process": 2}


@dataclass(frozen=True)
class AseColour:
    name: str
    mode: str  # RGB, CMYK, LAB (L in 0-1, a and b as is, D50) or Gray
    values: tuple[float, ...]
    kind: str = "Process"


@dataclass(frozen=True)
class AseGroup:
    name: str
    colours: tuple[AseColour, ...]


def ase_name(name: str) -> bytes:
    units = (name + "\x00").encode("utf-16-be")
    return struct.pack(">H", len(units) // 2) + units


def ase_block(kind: int, body: bytes) -> bytes:
    return struct.pack(">HI", kind, len(body)) + body


def ase_colour_block(c: AseColour) -> bytes:
    body = ase_name(c.name) + ASE_MODELS[c.mode] + struct.pack(f">{len(c.values)}f", *c.values)
    return ase_block(0x0001, body + struct.pack(">H", ASE_TYPES[c.kind]))


def adobe_ase(items: list[AseColour | AseGroup]) -> bytes:
    """An ASE file: the block count counts group starts, colours and group ends alike."""
    blocks = []
    for item in items:
        if isinstance(item, AseGroup):
            blocks.append(ase_block(0xC001, ase_name(item.name)))
            blocks += [ase_colour_block(c) for c in item.colours]
            blocks.append(ase_block(0xC002, b""))
        else:
            blocks.append(ase_colour_block(item))
    return b"ASEF" + struct.pack(">HHI", 1, 0, len(blocks)) + b"".join(blocks)
