"""Palette files (docs/design.md §5): read GIMP ``.gpl``, JASC/Lospec (and RIFF) ``.pal``, Adobe ``.ase`` and ``.aco``,
``.hex``/``.txt`` lists, JSON and Coolors URLs; write ``.gpl``, ``.ase``, ``.hex`` and ``.json``.

The format comes from the file extension. Every error is a :class:`PaletteFormatError` that names the
file, the line or byte offset and the expected form. Files over :data:`MAX_FILE_BYTES` are refused
before they are read, and binary readers check every count and length field against the bytes
present, so a corrupt header never makes them allocate or loop on data that is not there. A file holds
up to :data:`~.palette.MAX_FILE_COLORS` colours (real palettes list thousands); palette text only 256.

Lab entries (ASE and ACO) are CIE Lab relative to D50, as Adobe writes them: they are adapted to
sRGB's D65 white with the Bradford transform (:func:`lab_d50_to_srgb`). Data after an ACO file's
colour records (newer Photoshop versions append blocks such as swatch groups) is skipped.

Weights: only JSON (and text-form ``.txt``/``.hex`` lines with ``:weight``) carry them; the other
formats give equal weights on reading and drop weights on writing.
"""

from __future__ import annotations

import colorsys
import json
import logging
import math
import os
import re
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .color import D65_XYZ, lab_to_xyz, linear_to_srgb, xyz_to_linear
from .errors import PaletteError, PaletteFormatError
from .palette import MAX_FILE_COLORS, Palette, coolors_hexes, parse_token, quote

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 10_000_000
READ_FORMATS = {
    ".gpl": "gpl",
    ".pal": "pal",
    ".ase": "ase",
    ".aco": "aco",
    ".hex": "hex",
    ".txt": "hex",
    ".json": "json",
}
WRITE_FORMATS = {".gpl": "gpl", ".ase": "ase", ".hex": "hex", ".json": "json"}

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_GPL_ROW = re.compile(r"\s*([0-9]+)\s+([0-9]+)\s+([0-9]+)(?:\s+(.*))?")
# Header fields: GIMP's "Name:" and "Columns:", Aseprite's "Channels: RGBA" (its rows then carry an alpha
# value, read as part of the name); a colour row starts with a digit, so it never matches.
_GPL_FIELD = re.compile(r"[A-Za-z][\w-]*:")
_PAL_ROW = re.compile(r"\s*([0-9]+)\s+([0-9]+)\s+([0-9]+)(?:\s+[0-9]+)?\s*")
_PAINTNET = re.compile(r"[0-9a-fA-F]{8}")  # Paint.NET .txt rows are AARRGGBB


# --------------------------------------------------------------------------------------------------
# Entry points


def load_palette(source: str | os.PathLike) -> Palette:
    """Read a palette file (format from its extension) or a Coolors URL (docs/design.md §5)."""
    if isinstance(source, str) and coolors_hexes(source) is not None:
        return Palette.parse(source)
    path = Path(source)
    fmt = READ_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise PaletteFormatError(
            f"{path}: unknown palette extension {quote(path.suffix or '(none)')}: "
            f"expected one of {', '.join(READ_FORMATS)} or a Coolors URL"
        )
    return decode(_read_limited(path), fmt, str(path))


def save_palette(palette: Palette, path: str | os.PathLike) -> None:
    """Write ``palette`` to ``path`` in the format of its extension (.gpl, .ase, .hex or .json)."""
    path = Path(path)
    fmt = WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise PaletteFormatError(
            f"{path}: cannot write {quote(path.suffix or '(no extension)')} files: "
            f"expected one of {', '.join(WRITE_FORMATS)}"
        )
    data = encode(palette, fmt, name=path.stem)
    # Write beside the target and rename, so an interrupted save never leaves half a file (a plain
    # open, unlike mkstemp's 0600, gives the file the user's usual permissions).
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def decode(data: bytes, fmt: str, source: str = "<palette>") -> Palette:
    """Parse the bytes of a palette file in format ``fmt`` (a value of :data:`READ_FORMATS`)."""
    if len(data) > MAX_FILE_BYTES:
        raise PaletteFormatError(f"{source}: {len(data)} bytes; palette files are limited to {MAX_FILE_BYTES} bytes")
    readers: dict[str, Callable[[bytes, str], Palette]] = {
        "gpl": lambda d, s: _read_gpl(_text(d, s), s),
        "pal": _read_pal,
        "ase": _read_ase,
        "aco": _read_aco,
        "hex": lambda d, s: _read_hex(_text(d, s), s),
        "json": lambda d, s: _read_json(_text(d, s), s),
    }
    if fmt not in readers:
        raise PaletteFormatError(f"unknown palette format {quote(fmt)}: expected one of {', '.join(readers)}")
    return readers[fmt](data, source)


def encode(palette: Palette, fmt: str, name: str = "palette") -> bytes:
    """The bytes of ``palette`` in format ``fmt`` ("gpl", "ase", "hex" or "json")."""
    writers: dict[str, Callable[[Palette, str], bytes]] = {
        "gpl": _write_gpl,
        "ase": _write_ase,
        "hex": _write_hex,
        "json": _write_json,
    }
    if fmt not in writers:
        raise PaletteFormatError(f"cannot write palette format {quote(fmt)}: expected one of {', '.join(writers)}")
    if fmt != "json" and not palette.is_uniform:
        log.info("%s files hold no weights: the palette's weights are not written", fmt)
    return writers[fmt](palette, name)


# --------------------------------------------------------------------------------------------------
# Shared helpers


def _read_limited(path: Path) -> bytes:
    """The file's bytes, refusing directories and anything over MAX_FILE_BYTES without reading it."""
    try:
        if path.is_dir():
            raise PaletteFormatError(f"{path}: is a folder: expected a palette file")
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise PaletteFormatError(
                f"{path}: {size} bytes is too large for a palette file (limit {MAX_FILE_BYTES} bytes)"
            )
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)  # the file may grow (or be a device) after stat
    except OSError as e:
        raise PaletteFormatError(f"{path}: cannot read: {e.strerror or e}") from e
    if len(data) > MAX_FILE_BYTES:
        raise PaletteFormatError(f"{path}: more than {MAX_FILE_BYTES} bytes is too large for a palette file")
    return data


def _text(data: bytes, source: str) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        msg = f"{source}: line {line}, byte {e.start}: invalid UTF-8 ({e.reason}): expected a UTF-8 text file"
        raise PaletteFormatError(msg) from None
    return text.removeprefix("\ufeff")


def _lines(text: str) -> list[str]:
    return _LINE_BREAK.split(text)


def _too_many(source: str, where: str) -> PaletteFormatError:
    return PaletteFormatError(
        f"{source}: {where}: more than {MAX_FILE_COLORS} colours: a palette file holds 1 to {MAX_FILE_COLORS}"
    )


def _no_colours(source: str, form: str) -> PaletteFormatError:
    return PaletteFormatError(f"{source}: no colours found: expected {form}")


def _from_rgb(rows: list[tuple[float, float, float]], source: str, form: str, weights: list[float] | None = None):
    if not rows:
        raise _no_colours(source, form)
    colors = np.clip(np.array(rows, dtype=np.float64), 0.0, 1.0)
    try:
        return Palette.from_colors(colors, weights)
    except PaletteError as e:
        raise PaletteFormatError(f"{source}: {e}") from None


def _level(text: str, source: str, line: int, what: str, top: int = 255) -> int:
    # Strip and measure the digits first: int() of a 5,000-digit field raises a bare ValueError.
    digits = text.lstrip("0") or "0"
    v = int(digits) if len(digits) <= len(str(top)) else top + 1
    if v > top:
        shown = text if len(text) <= 12 else quote(text)
        raise PaletteFormatError(f"{source}: line {line}: {what} value {shown} is out of range: expected 0 to {top}")
    return v


# --------------------------------------------------------------------------------------------------
# Text formats


def _read_gpl(text: str, source: str) -> Palette:
    lines = _lines(text)
    if not lines[0].startswith("GIMP Palette"):
        raise PaletteFormatError(f'{source}: line 1: {quote(lines[0])}: expected the header "GIMP Palette"')
    rows = []
    for n, line in enumerate(lines[1:], start=2):
        s = line.strip()
        if not s or s.startswith("#") or _GPL_FIELD.match(s):
            continue
        m = _GPL_ROW.fullmatch(line)
        if not m:
            raise PaletteFormatError(
                f'{source}: line {n}: {quote(s)} is not a colour row: expected "R G B [name]" with R, G, B in 0-255'
            )
        if len(rows) == MAX_FILE_COLORS:
            raise _too_many(source, f"line {n}")
        rows.append(tuple(_level(m.group(i), source, n, "RGB") / 255.0 for i in (1, 2, 3)))
    return _from_rgb(rows, source, 'colour rows "R G B [name]" after the "GIMP Palette" header')


def _read_pal(data: bytes, source: str) -> Palette:
    if data[:4] == b"RIFF":
        return _read_riff_pal(data, source)
    lines = _lines(_text(data, source))
    expected_header = 'expected "JASC-PAL", "0100", a colour count, then one "R G B" row per colour'
    if lines[0].strip() != "JASC-PAL":
        raise PaletteFormatError(f"{source}: line 1: {quote(lines[0])}: {expected_header} (or a RIFF palette)")
    if len(lines) < 3 or lines[1].strip() != "0100":
        got = quote(lines[1]) if len(lines) > 1 else "end of file"
        raise PaletteFormatError(f"{source}: line 2: {got}: {expected_header}")
    count_text = lines[2].strip()
    if not count_text.isascii() or not count_text.isdigit():
        raise PaletteFormatError(f"{source}: line 3: {quote(lines[2])} is not a colour count: {expected_header}")
    digits = count_text.lstrip("0") or "0"  # measured first: int() of a 5,000-digit count raises
    count = int(digits) if len(digits) <= 6 else MAX_FILE_COLORS + 1
    if count > MAX_FILE_COLORS:
        raise PaletteFormatError(
            f"{source}: line 3: {quote(count_text)} colours: a palette file holds 1 to {MAX_FILE_COLORS}"
        )
    if count == 0:
        raise PaletteFormatError(
            f"{source}: line 3: the colour count is 0: a palette file holds 1 to {MAX_FILE_COLORS}"
        )
    rows = []
    for k in range(count):
        n = 4 + k
        if n > len(lines) or (n == len(lines) and not lines[n - 1].strip()):
            raise PaletteFormatError(
                f"{source}: line {n}: the file ends after {k} of the {count} colours the header announces"
            )
        m = _PAL_ROW.fullmatch(lines[n - 1])
        if not m:
            raise PaletteFormatError(
                f'{source}: line {n}: {quote(lines[n - 1])} is not a colour row: expected "R G B" with R, G, B in 0-255'
            )
        rows.append(tuple(_level(m.group(i), source, n, "RGB") / 255.0 for i in (1, 2, 3)))
    for n, extra in enumerate(lines[3 + count :], start=4 + count):
        if extra.strip():
            raise PaletteFormatError(
                f"{source}: line {n}: {quote(extra)}: the header announces {count} colours and this is one more"
            )
    return _from_rgb(rows, source, "JASC-PAL rows")


def _read_hex(text: str, source: str) -> Palette:
    rows, weights = [], []
    for n, line in enumerate(_lines(text), start=1):
        s = line.strip()
        if not s or s.startswith((";", "//")):  # Paint.NET and C-style comment lines
            continue
        for token in re.split(r"[\s,;]+", s):
            if not token:
                continue
            if len(rows) == MAX_FILE_COLORS:
                raise _too_many(source, f"line {n}")
            if _PAINTNET.fullmatch(token):
                rgb, w = (int(token[2:4], 16), int(token[4:6], 16), int(token[6:8], 16)), None
            else:
                try:
                    rgb, w = parse_token(token)
                except PaletteFormatError as e:
                    raise PaletteFormatError(f"{source}: line {n}: {e}") from None
            rows.append(tuple(c / 255.0 for c in rgb))
            weights.append(1.0 if w is None else w)
    if rows and not sum(weights) > 0:
        raise PaletteFormatError(f"{source}: the weights sum to 0: at least one colour needs a positive weight")
    return _from_rgb(rows, source, "one hex colour per line (#RRGGBB, RRGGBB or #RGB)", weights)


def _read_json(text: str, source: str) -> Palette:
    if not text.strip().startswith("["):
        raise PaletteFormatError(
            f'{source}: line 1: expected a JSON list of hex strings or {{"hex": ..., "weight": ...}} objects'
        )
    try:
        return Palette._parse_json(text, MAX_FILE_COLORS)
    except PaletteFormatError as e:
        raise PaletteFormatError(f"{source}: {e}") from None


def _write_gpl(palette: Palette, name: str) -> bytes:
    name = " ".join(name.split()) or "palette"
    lines = ["GIMP Palette", f"Name: {name}", "Columns: 0", "#"]
    for h, rgb in zip(palette.hex, _levels(palette)):
        lines.append(f"{rgb[0]:3d} {rgb[1]:3d} {rgb[2]:3d}\t{h}")
    return ("\n".join(lines) + "\n").encode("utf-8")


def _write_hex(palette: Palette, name: str) -> bytes:
    return ("".join(h[1:] + "\n" for h in palette.hex)).encode("ascii")


def _write_json(palette: Palette, name: str) -> bytes:
    return (json.dumps(palette.to_json(), indent=2) + "\n").encode("utf-8")


def _levels(palette: Palette) -> list[tuple[int, int, int]]:
    return [tuple(int(h[i : i + 2], 16) for i in (1, 3, 5)) for h in palette.hex]


# --------------------------------------------------------------------------------------------------
# Binary formats


class _Bytes:
    """A bounds-checked cursor over ``data`` (which starts at file offset ``base``); errors name file offsets."""

    def __init__(self, data: bytes, source: str, form: str, base: int = 0, scope: str = "the file"):
        self.data, self.pos, self.source, self.form, self.base, self.scope = data, 0, source, form, base, scope

    def left(self) -> int:
        return len(self.data) - self.pos

    def offset(self) -> int:
        return self.base + self.pos

    def error(self, msg: str, at: int | None = None) -> PaletteFormatError:
        where = self.offset() if at is None else at
        return PaletteFormatError(f"{self.source}: byte {where}: {msg}: expected {self.form}")

    def take(self, n: int, what: str) -> bytes:
        if n > self.left():
            raise self.error(f"{what} needs {n} bytes but only {self.left()} are left in {self.scope} (truncated)")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))

    def utf16(self, units: int, what: str) -> str:
        at = self.offset()
        raw = self.take(2 * units, what)
        try:
            return raw.decode("utf-16-be").rstrip("\x00")
        except UnicodeDecodeError as e:
            raise self.error(f"{what} is not valid UTF-16 ({e.reason})", at + e.start) from None


# Adobe's Lab (ASE, ACO) is relative to D50 as ICC profiles encode it (the PCS illuminant, X 0.9642,
# Y 1, Z 0.8249); the Bradford cone response matrix as Lindbloom and colour-science give it.
D50_XYZ = (0.9642, 1.0, 0.8249)
_BRADFORD = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]])


def bradford(source_white: tuple[float, ...], target_white: tuple[float, ...]) -> np.ndarray:
    """The 3x3 Bradford matrix ``M^-1 diag(M w_t / M w_s) M`` that adapts XYZ from one white to another (Lindbloom)."""
    gain = (_BRADFORD @ np.asarray(target_white)) / (_BRADFORD @ np.asarray(source_white))
    return np.linalg.solve(_BRADFORD, gain[:, None] * _BRADFORD)


# Lab -> XYZ relative to D65 (color.lab_to_xyz), rescaled to D50's white, then adapted back to D65.
_D50_LAB_XYZ_TO_D65 = bradford(D50_XYZ, D65_XYZ) * (np.asarray(D50_XYZ) / np.asarray(D65_XYZ))


def lab_d50_to_srgb(lab: np.ndarray) -> np.ndarray:
    """CIE Lab ``[..., 3]`` relative to D50 (Adobe) to unclipped sRGB, Bradford-adapted to D65 (docs/palettes.md)."""
    xyz = lab_to_xyz(np.asarray(lab, dtype=np.float64)) @ _D50_LAB_XYZ_TO_D65.T
    return linear_to_srgb(xyz_to_linear(xyz))


_ASE_FORM = 'an Adobe Swatch Exchange file ("ASEF", version 1.0, then colour and group blocks)'
_ASE_MODELS = {b"RGB ": 3, b"LAB ": 3, b"CMYK": 4, b"GRAY": 1}  # matched case-insensitively (Adobe writes "Gray")


def _ase_colour(model: bytes, values: tuple[float, ...]) -> tuple[float, float, float]:
    """One ASE colour entry's values to sRGB in [0, 1] (Lab: L stored in [0, 1], a and b as is, D50)."""
    if model == b"RGB ":
        return values
    if model == b"GRAY":
        return (values[0],) * 3
    if model == b"CMYK":
        c, m, y, k = values
        return ((1 - c) * (1 - k), (1 - m) * (1 - k), (1 - y) * (1 - k))
    lab = np.array([values[0] * 100.0, values[1], values[2]], dtype=np.float64)
    return tuple(np.clip(lab_d50_to_srgb(lab), 0.0, 1.0).tolist())


def _read_ase(data: bytes, source: str) -> Palette:
    r = _Bytes(data, source, _ASE_FORM)
    if r.take(4, "the signature") != b"ASEF":
        raise r.error(f"signature {data[:4]!r} is not b'ASEF' (wrong magic)", 0)
    major, minor = r.unpack(">HH", "the version")
    if major != 1:
        raise r.error(f"version {major}.{minor} is not supported", 4)
    (blocks,) = r.unpack(">I", "the block count")
    if blocks > r.left() // 6:  # a block is at least 6 bytes (type and length)
        raise r.error(f"the block count {blocks} needs at least {6 * blocks} bytes but only {r.left()} follow", 8)
    rows = []
    for i in range(blocks):
        start = r.offset()
        kind, length = r.unpack(">HI", f"block {i}'s header")
        if length > r.left():
            raise r.error(f"block {i} declares {length} bytes but only {r.left()} follow (truncated)", start + 2)
        body = _Bytes(r.take(length, f"block {i}"), source, _ASE_FORM, base=start + 6, scope=f"block {i}")
        if kind == 0x0001:
            if len(rows) == MAX_FILE_COLORS:
                raise _too_many(source, f"byte {start}")
            rows.append(_ase_entry(body, i))
        elif kind not in (0xC001, 0xC002):
            log.debug("%s: skipping ASE block type 0x%04x at byte %d", source, kind, start)
    if r.left():
        raise r.error(f"{r.left()} bytes follow the {blocks} blocks the header announces")
    return _from_rgb(rows, source, _ASE_FORM)


def _ase_entry(body: _Bytes, i: int) -> tuple[float, float, float]:
    (units,) = body.unpack(">H", f"colour block {i}'s name length")
    body.utf16(units, f"colour block {i}'s name")
    at = body.offset()
    model = body.take(4, f"colour block {i}'s colour model").upper()
    if model not in _ASE_MODELS:
        raise body.error(f'colour block {i}: colour model {model!r} is not "RGB ", "LAB ", "CMYK" or "Gray"', at)
    at = body.offset()
    values = body.unpack(f">{_ASE_MODELS[model]}f", f"colour block {i}'s {model.decode().strip()} values")
    body.unpack(">H", f"colour block {i}'s colour type")
    if not all(math.isfinite(v) for v in values):
        raise body.error(f"colour block {i}: values {values} are not finite", at)
    if model != b"LAB " and not all(-1e-3 <= v <= 1 + 1e-3 for v in values):
        raise body.error(f"colour block {i}: {model.decode().strip()} values {values} are outside [0, 1]", at)
    return _ase_colour(model, values)


def _write_ase(palette: Palette, name: str) -> bytes:
    out = [b"ASEF", struct.pack(">HHI", 1, 0, len(palette))]
    for h, rgb in zip(palette.hex, palette.colors_array.tolist()):
        label = h.encode("utf-16-be") + b"\x00\x00"
        body = struct.pack(">H", len(label) // 2) + label + b"RGB " + struct.pack(">3fH", *rgb, 2)
        out.append(struct.pack(">HI", 0x0001, len(body)) + body)
    return b"".join(out)


_ACO_FORM = "a Photoshop .aco file (version 1 and/or 2: a version, a count, then 10-byte colour records)"
_ACO_V2 = b"\x00\x02"


def _aco_colour(space: int, w: int, x: int, y: int, z: int) -> tuple[float, float, float] | None:
    """One ACO colour record to sRGB in [0, 1], or None for an unknown colour space (Photoshop file spec)."""
    if space == 0:  # RGB, 0-65535
        return (w / 65535, x / 65535, y / 65535)
    if space == 1:  # HSB, all 0-65535 (hue a full turn)
        return colorsys.hsv_to_rgb((w / 65536) % 1.0, x / 65535, y / 65535)
    if space in (2, 9):  # CMYK, 0 = 100% ink (space 9: 0-10000, the same sense, as GIMP reads it)
        top = 65535 if space == 2 else 10000
        c, m, ye, k = (1 - min(v, top) / top for v in (w, x, y, z))
        return ((1 - c) * (1 - k), (1 - m) * (1 - k), (1 - ye) * (1 - k))
    if space == 7:  # Lab (D50, Photoshop's Lab): L 0-10000, a and b signed -12800..12700 (hundredths)
        a, b = struct.unpack(">hh", struct.pack(">HH", x, y))
        lab = np.array([min(w, 10000) / 100.0, a / 100.0, b / 100.0], dtype=np.float64)
        return tuple(np.clip(lab_d50_to_srgb(lab), 0.0, 1.0).tolist())
    if space == 8:  # grayscale 0-10000 in ink: 10000 is black (as GIMP reads it)
        g = 1 - min(w, 10000) / 10000
        return (g, g, g)
    return None


def _aco_section(r: _Bytes, version: int) -> list[tuple[float, float, float]]:
    (count,) = r.unpack(">H", f"the version {version} colour count")
    record = 10 if version == 1 else 14  # version 2 adds at least a 4-byte name length
    if count > MAX_FILE_COLORS:
        raise r.error(f"{count} colours: a palette file holds 1 to {MAX_FILE_COLORS}", r.offset() - 2)
    if count * record > r.left():
        raise r.error(
            f"the version {version} count {count} needs at least {count * record} bytes but only {r.left()} follow",
            r.offset() - 2,
        )
    rows = []
    for k in range(count):
        at = r.offset()
        space, w, x, y, z = r.unpack(">5H", f"colour {k}")
        rgb = _aco_colour(space, w, x, y, z)
        if rgb is None:
            known = "RGB (0), HSB (1), CMYK (2, 9), Lab (7) or gray (8)"
            raise r.error(f"colour {k}: colour space {space} is not {known}", at)
        if version == 2:
            (units,) = r.unpack(">I", f"colour {k}'s name length")
            if units > r.left() // 2:
                raise r.error(f"colour {k}'s name length {units} runs past the end of the file", r.offset() - 4)
            r.utf16(units, f"colour {k}'s name")
        rows.append(rgb)
    return rows


def _read_aco(data: bytes, source: str) -> Palette:
    r = _Bytes(data, source, _ACO_FORM)
    (version,) = r.unpack(">H", "the version")
    if version not in (1, 2):
        raise r.error(f"version {version} is not 1 or 2 (wrong magic)", 0)
    rows = _aco_section(r, version)
    if version == 1 and data[r.pos : r.pos + 2] == _ACO_V2:  # Photoshop 7+: version 1, then the same with names
        at = r.offset()
        r.take(2, "the version 2 header")
        named = _aco_section(r, 2)
        if len(named) != len(rows):
            raise r.error(f"the version 2 section holds {len(named)} colours, version 1 {len(rows)}", at + 2)
        rows = named
    if r.left():
        # Newer Photoshop versions append blocks after the colour records (e.g. an "8BIM" block with the
        # swatch groups); their layout is not published, and the colours are already read.
        log.debug("%s: skipping %d bytes after the colour records at byte %d", source, r.left(), r.offset())
    return _from_rgb(rows, source, _ACO_FORM)


_RIFF_FORM = 'a RIFF palette ("RIFF", size, "PAL ", a "data" chunk with version, count and RGBX entries)'


def _read_riff_pal(data: bytes, source: str) -> Palette:
    r = _Bytes(data, source, _RIFF_FORM)
    r.take(4, "the signature")
    (size,) = r.unpack("<I", "the RIFF size")
    if size > r.left():
        raise r.error(f"the RIFF size {size} runs past the end of the file ({r.left()} bytes follow)", 4)
    if r.take(4, "the form type") != b"PAL ":
        raise r.error('the form type is not "PAL "', 8)
    while True:
        at = r.offset()
        chunk, length = r.unpack("<4sI", "a chunk header")
        if length > r.left():
            raise r.error(f"chunk {chunk!r} declares {length} bytes but only {r.left()} follow (truncated)", at + 4)
        if chunk == b"data":
            break
        r.take(length + (length & 1), f"chunk {chunk!r}")
    _, count = r.unpack("<HH", "the palette version and count")
    if count > MAX_FILE_COLORS:
        raise r.error(f"{count} colours: a palette file holds 1 to {MAX_FILE_COLORS}", r.offset() - 2)
    if 4 + 4 * count > length:
        raise r.error(f"{count} colours need {4 + 4 * count} bytes but the data chunk holds {length}", r.offset() - 2)
    rows = []
    for k in range(count):
        red, green, blue, _flags = r.unpack("4B", f"colour {k}")
        rows.append((red / 255.0, green / 255.0, blue / 255.0))
    return _from_rgb(rows, source, _RIFF_FORM)
