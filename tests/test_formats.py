"""palette_core.formats: golden files written by hand, round trips, limits, and fuzzed malformed files."""

from __future__ import annotations

import json
import random
import re
import struct
import tempfile
from pathlib import Path

import colour
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from palette_core import PaletteFormatError
from palette_core import formats as F
from palette_core.palette import MAX_COLORS, MAX_FILE_COLORS, Palette

# --------------------------------------------------------------------------------------------------
# Builders for binary files, byte by byte (big-endian as Adobe specifies; RIFF is little-endian)


def ase_block(kind: int, body: bytes) -> bytes:
    return struct.pack(">HI", kind, len(body)) + body


def ase_name(name: str) -> bytes:
    units = name.encode("utf-16-be") + b"\x00\x00"
    return struct.pack(">H", len(units) // 2) + units


def ase_colour(name: str, model: bytes, values: tuple[float, ...], colour_type: int = 2) -> bytes:
    return ase_block(0x0001, ase_name(name) + model + struct.pack(f">{len(values)}fH", *values, colour_type))


def ase_file(blocks: list[bytes], count: int | None = None) -> bytes:
    return b"ASEF" + struct.pack(">HHI", 1, 0, len(blocks) if count is None else count) + b"".join(blocks)


def aco_record(space: int, w: int, x: int = 0, y: int = 0, z: int = 0, signed: bool = False) -> bytes:
    return struct.pack(">HHhhH" if signed else ">HHHHH", space, w, x, y, z)


def aco_v1(records: list[bytes]) -> bytes:
    return struct.pack(">HH", 1, len(records)) + b"".join(records)


def aco_v2(records: list[bytes], names: list[str]) -> bytes:
    out = struct.pack(">HH", 2, len(records))
    for rec, name in zip(records, names):
        out += rec + struct.pack(">I", len(name) + 1) + name.encode("utf-16-be") + b"\x00\x00"
    return out


def riff_pal(rgb: list[tuple[int, int, int]], count: int | None = None) -> bytes:
    data = struct.pack("<HH", 0x0300, len(rgb) if count is None else count)
    data += b"".join(struct.pack("4B", *c, 0) for c in rgb)
    chunk = b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"PAL " + chunk


# Adobe's Lab is relative to D50 (the ICC white); colour-science computes it independently of palette_core.
ICC_D50 = colour.XYZ_to_xy(np.array(F.D50_XYZ))


def lab_of(hex_colour: str) -> list[float]:
    """The D50 CIE Lab of an 8-bit sRGB colour (Bradford adaptation), as Adobe writes it, by colour-science."""
    rgb = np.array([int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)])
    xyz = colour.sRGB_to_XYZ(rgb, illuminant=ICC_D50, chromatic_adaptation_transform="Bradford")
    return colour.XYZ_to_Lab(xyz, illuminant=ICC_D50).tolist()


def srgb_of_lab_d50(lab: list[float]) -> np.ndarray:
    """sRGB (unclipped) of a D50 Lab colour, by colour-science."""
    xyz = colour.Lab_to_XYZ(np.array(lab), illuminant=ICC_D50)
    return colour.XYZ_to_sRGB(xyz, illuminant=ICC_D50, chromatic_adaptation_transform="Bradford")


# --------------------------------------------------------------------------------------------------
# Golden files

GPL = (
    "GIMP Palette\r\n"
    "Name: Sunset  beach\r\n"
    "Columns: 4\r\n"
    "# a comment line\r\n"
    "\r\n"
    "230  57  70\tImperial red\r\n"
    "241 250 238  Honeydew (light)\r\n"
    " 29  53  87\r\n"
    "  0   0   0\tUntitled\r\n"
)
GPL_HEX = ["#e63946", "#f1faee", "#1d3557", "#000000"]

JASC = "JASC-PAL\r\n0100\r\n3\r\n255 0 0\r\n0 128 255\r\n17 34 51 255\r\n"
JASC_HEX = ["#ff0000", "#0080ff", "#112233"]


def golden_ase() -> bytes:
    """An ASE file with a group holding RGB, Lab, CMYK and Gray entries, plus one entry outside it."""
    red_lab = lab_of("#ff0000")
    return ase_file(
        [
            ase_block(0xC001, ase_name("Warm")),
            ase_colour("rgb", b"RGB ", (1.0, 128 / 255, 0.0)),
            ase_colour("lab red", b"LAB ", (red_lab[0] / 100, red_lab[1], red_lab[2])),
            ase_colour("lab outside sRGB", b"LAB ", (0.5, 120.0, -120.0), colour_type=1),
            ase_colour("cmyk red", b"CMYK", (0.0, 1.0, 1.0, 0.0)),
            ase_block(0xC002, b""),
            ase_colour("grey", b"Gray", (0.2,), colour_type=0),
            ase_colour("cmyk black", b"CMYK", (0.3, 0.2, 0.1, 1.0)),
        ]
    )


ASE_HEX = ["#ff8000", "#ff0000", None, "#ff0000", "#333333", "#000000"]

ACO_RECORDS = [
    aco_record(0, 65535, 0, 32896),  # RGB -> #ff0080
    aco_record(1, 21845, 65535, 65535),  # HSB: hue 1/3 -> green
    aco_record(2, 65535, 0, 0, 65535),  # CMYK in inverted ink: C 0, M 100%, Y 100%, K 0 -> red
    aco_record(7, 10000, 0, 0, signed=True),  # Lab 100, 0, 0 -> white
    aco_record(8, 10000),  # gray, 100% ink -> black
    aco_record(8, 5000),  # gray 50% -> #808080
]
ACO_HEX = ["#ff0080", "#00ff00", "#ff0000", "#ffffff", "#000000", "#808080"]
ACO_NAMES = ["Hot pink", "Green", "Red ink", "Lab white", "Black", "Ünïcode grey"]


def golden_aco_v1v2() -> bytes:
    return aco_v1(ACO_RECORDS) + aco_v2(ACO_RECORDS, ACO_NAMES)


def write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    p = tmp_path / name
    p.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return p


def test_gpl_golden(tmp_path):
    p = F.load_palette(write(tmp_path, "sunset.gpl", GPL))
    assert p.hex == GPL_HEX and p.is_uniform


def test_jasc_pal_golden(tmp_path):
    p = F.load_palette(write(tmp_path, "lospec.pal", JASC))
    assert p.hex == JASC_HEX and p.is_uniform
    lf = F.load_palette(write(tmp_path, "unix.pal", JASC.replace("\r\n", "\n")))
    assert lf.hex == JASC_HEX


def test_riff_pal_golden(tmp_path):
    p = F.load_palette(write(tmp_path, "windows.pal", riff_pal([(255, 0, 0), (1, 2, 3)])))
    assert p.hex == ["#ff0000", "#010203"]


def test_ase_golden_every_colour_model(tmp_path):
    p = F.load_palette(write(tmp_path, "adobe.ase", golden_ase()))
    assert len(p) == 6 and p.is_uniform
    for got, want in zip(p.hex, ASE_HEX):
        if want is not None:
            assert got == want
    # Lab (50, 120, -120) (D50) is outside sRGB: converted as colour-science does and clipped to [0, 1]
    assert p.colors.min() >= 0 and p.colors.max() <= 1
    expected = np.clip(srgb_of_lab_d50([50.0, 120.0, -120.0]), 0, 1)
    assert np.allclose(p.colors_array[2], expected, atol=1e-6)


def test_ase_colour_model_names_are_case_insensitive():
    blocks = [ase_colour("a", b"gray", (1.0,)), ase_colour("b", b"rgb ", (0.0, 0.0, 1.0))]
    assert F.decode(ase_file(blocks), "ase").hex == ["#ffffff", "#0000ff"]


def test_aco_golden_v1_v2_and_v2_only(tmp_path):
    both = F.load_palette(write(tmp_path, "both.aco", golden_aco_v1v2()))
    v1 = F.load_palette(write(tmp_path, "v1.aco", aco_v1(ACO_RECORDS)))
    v2 = F.load_palette(write(tmp_path, "v2.aco", aco_v2(ACO_RECORDS, ACO_NAMES)))
    for p in (both, v1, v2):
        assert p.hex == ACO_HEX and p.is_uniform


def test_aco_lab_signed_chroma():
    # a* = 80.83, b* = 69.91 at L* = 54.29 (D50) is sRGB red; negative a*/b* must be read as signed
    lab = lab_of("#ff0000")
    rec = aco_record(7, round(lab[0] * 100), round(lab[1] * 100), round(lab[2] * 100), signed=True)
    lab_b = lab_of("#0000ff")  # b* is negative for blue
    rec_b = aco_record(7, round(lab_b[0] * 100), round(lab_b[1] * 100), round(lab_b[2] * 100), signed=True)
    assert F.decode(aco_v1([rec, rec_b]), "aco").hex == ["#ff0000", "#0000ff"]


def test_hex_and_paintnet_txt_golden(tmp_path):
    lospec = F.load_palette(write(tmp_path, "lospec.hex", "e63946\nF1FAEE\n\n1d3557\n"))
    assert lospec.hex == ["#e63946", "#f1faee", "#1d3557"]
    paintnet = ";paint.net Palette File\n;Colors: 2\nFFE63946\nff1d3557\n"
    assert F.load_palette(write(tmp_path, "pdn.txt", paintnet)).hex == ["#e63946", "#1d3557"]
    weighted = F.load_palette(write(tmp_path, "w.txt", "#e63946:3\n#1d3557; #fff\n"))
    assert weighted.weights.tolist() == pytest.approx([0.6, 0.2, 0.2])


def test_json_file_keeps_weights(tmp_path):
    text = json.dumps([{"hex": "#e63946", "weight": 3}, "#f1faee", {"hex": "1d3557", "weight": 0}])
    p = F.load_palette(write(tmp_path, "p.json", text))
    assert p.hex == ["#e63946", "#f1faee", "#1d3557"] and p.weights.tolist() == [0.75, 0.25, 0.0]


def test_coolors_url():
    p = F.load_palette("https://coolors.co/264653-2a9d8f-e9c46a-f4a261-e76f51")
    assert p.hex == ["#264653", "#2a9d8f", "#e9c46a", "#f4a261", "#e76f51"]


def test_utf8_bom_and_extension_case(tmp_path):
    p = F.load_palette(write(tmp_path, "BOM.GPL", b"\xef\xbb\xbf" + GPL.encode()))
    assert p.hex == GPL_HEX


# --------------------------------------------------------------------------------------------------
# Writing and round trips


@st.composite
def palettes(draw, max_size: int = 40) -> Palette:
    n = draw(st.integers(1, max_size))
    rgb = draw(st.lists(st.integers(0, 0xFFFFFF), min_size=n, max_size=n))
    w = draw(st.none() | st.lists(st.integers(0, 50), min_size=n, max_size=n).filter(lambda ws: sum(ws) > 0))
    return Palette.from_hex([f"#{v:06x}" for v in rgb], w)


@given(p=palettes(), fmt=st.sampled_from(["gpl", "ase", "hex", "json"]))
@settings(max_examples=120, deadline=None)
def test_round_trip_every_writable_format(p, fmt):
    again = F.decode(F.encode(p, fmt, name="round trip"), fmt)
    assert again.hex == p.hex
    assert torch.equal(again.colors, p.colors)  # 8-bit colours survive exactly, also through ASE float32
    if fmt == "json":
        assert again.equals(p, atol=1e-7)
    else:
        assert again.is_uniform


@given(p=palettes(max_size=MAX_COLORS))
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_save_and_load_files(p):
    with tempfile.TemporaryDirectory() as d:
        for ext in F.WRITE_FORMATS:
            path = Path(d) / f"my palette{ext}"
            F.save_palette(p, path)
            assert F.load_palette(path).hex == p.hex
        assert sorted(x.name for x in Path(d).iterdir()) == sorted(f"my palette{e}" for e in F.WRITE_FORMATS)


def test_written_files_look_like_their_formats():
    p = Palette.parse("#e63946:2, #f1faee")
    gpl = F.encode(p, "gpl", name="Sun\nset").decode()
    assert gpl.splitlines()[:3] == ["GIMP Palette", "Name: Sun set", "Columns: 0"]
    assert "230  57  70\t#e63946" in gpl
    assert F.encode(p, "hex") == b"e63946\nf1faee\n"
    ase = F.encode(p, "ase")
    assert ase[:12] == b"ASEF" + struct.pack(">HHI", 1, 0, 2)
    assert ase[12:14] == b"\x00\x01" and b"RGB " in ase
    assert json.loads(F.encode(p, "json")) == p.to_json()


def test_unwritable_and_unknown_extensions(tmp_path):
    p = Palette.parse("#fff")
    with pytest.raises(PaletteFormatError, match=r"cannot write \"\.aco\".*\.gpl, \.ase, \.hex, \.json"):
        F.save_palette(p, tmp_path / "x.aco")
    with pytest.raises(PaletteFormatError, match=r"unknown palette extension \"\.png\""):
        F.load_palette(write(tmp_path, "x.png", b"\x89PNG"))
    with pytest.raises(PaletteFormatError, match="cannot read"):
        F.load_palette(tmp_path / "missing.gpl")
    (tmp_path / "dir.gpl").mkdir()
    with pytest.raises(PaletteFormatError, match="is a folder"):
        F.load_palette(tmp_path / "dir.gpl")


# --------------------------------------------------------------------------------------------------
# Limits


def test_files_over_10_mb_are_refused_before_reading(tmp_path, monkeypatch):
    big = tmp_path / "huge.gpl"
    with big.open("wb") as f:
        f.truncate(F.MAX_FILE_BYTES + 1)  # sparse: no disk used

    def no_reading(*args, **kwargs):
        raise AssertionError("the file was opened")

    monkeypatch.setattr(Path, "open", no_reading)
    with pytest.raises(PaletteFormatError, match=r"huge\.gpl: 10000001 bytes is too large"):
        F.load_palette(big)


def test_files_hold_up_to_max_file_colours_and_no_more(tmp_path):
    n = MAX_FILE_COLORS
    rows = [f"{i % 256} {i // 256 % 256} 0\n" for i in range(n + 1)]
    with pytest.raises(PaletteFormatError, match=rf"line {n + 2}: more than {n} colours"):
        F.load_palette(write(tmp_path, "big.gpl", "GIMP Palette\n" + "".join(rows)))
    gpl = F.load_palette(write(tmp_path, "max.gpl", "GIMP Palette\n" + "".join(rows[:n])))
    assert len(gpl) == n and gpl.hex[257] == "#010100" and gpl.is_uniform
    with pytest.raises(PaletteFormatError, match=rf"line {n + 1}: more than {n} colours"):
        F.load_palette(write(tmp_path, "big.hex", "ffffff\n" * (n + 1)))
    assert len(F.load_palette(write(tmp_path, "max.hex", "ffffff\n" * n))) == n
    with pytest.raises(PaletteFormatError, match=rf"line 3: \"{n + 1}\" colours"):
        F.load_palette(write(tmp_path, "big.pal", f"JASC-PAL\n0100\n{n + 1}\n" + "0 0 0\n" * (n + 1)))
    assert len(F.load_palette(write(tmp_path, "max.pal", f"JASC-PAL\n0100\n{n}\n" + "0 0 0\n" * n))) == n
    with pytest.raises(PaletteFormatError, match=rf"byte 2: {n + 1} colours"):
        F.decode(aco_v1([aco_record(0, 0)] * (n + 1)), "aco")
    assert len(F.decode(aco_v1([aco_record(0, 0)] * n), "aco")) == n
    blocks = [ase_colour("c", b"Gray", (0.5,))] * (n + 1)
    with pytest.raises(PaletteFormatError, match=rf"more than {n} colours"):
        F.decode(ase_file(blocks), "ase")
    assert len(F.decode(ase_file(blocks[:n]), "ase")) == n
    big_json = json.dumps(["#fff"] * (n + 1))
    with pytest.raises(PaletteFormatError, match=rf"{n + 1} colours: a palette holds 1 to {n}"):
        F.decode(big_json.encode(), "json")
    assert len(F.decode(json.dumps(["#fff"] * n).encode(), "json")) == n
    # palette text (the widget, workflows) stays at 256 colours
    assert MAX_COLORS == 256 and n > MAX_COLORS
    with pytest.raises(PaletteFormatError, match="more than 256 colours"):
        Palette.parse(", ".join(gpl.hex[: MAX_COLORS + 1]))


def test_huge_numbers_in_files_are_format_errors():
    big = "9" * 5000
    cases = [
        ("gpl", f"GIMP Palette\n{big} 0 0\n", 'line 2: RGB value "99999'),
        ("pal", f"JASC-PAL\n0100\n1\n0 {big} 0\n", 'line 4: RGB value "99999'),
        ("pal", f"JASC-PAL\n0100\n{big}\n", 'line 3: "99999'),
        ("hex", f"#fff:{big}\n", "is too large"),
        ("json", f'[{{"hex": "#fff", "weight": {big}}}]', "(5000 digits) is too large"),
        ("json", f'[{{"hex": "#fff", "weight": 1, "note": -{big}}}]', "(5001 digits) is too large"),
    ]
    for fmt, text, needle in cases:
        with pytest.raises(PaletteFormatError) as info:
            F.decode(text.encode(), fmt, source="f")
        assert needle in str(info.value) and len(str(info.value)) < 300, (fmt, str(info.value)[:300])
    # zero-padded levels are still levels
    assert F.decode(b"GIMP Palette\n" + b"0" * 5000 + b"255 0 0\n", "gpl").hex == ["#ff0000"]


# --------------------------------------------------------------------------------------------------
# Malformed files: only PaletteFormatError, naming the line or byte offset

OFFSET = re.compile(r"byte \d+")
LINE = re.compile(r"line \d+")


@pytest.mark.parametrize(
    ("fmt", "data", "needle"),
    [
        ("ase", b"ASEX" + golden_ase()[4:], "byte 0: signature b'ASEX' is not b'ASEF' (wrong magic)"),
        ("ase", b"ASEF" + struct.pack(">HHI", 2, 0, 0), "byte 4: version 2.0 is not supported"),
        ("ase", ase_file([], count=0xFFFFFFFF), "byte 8: the block count 4294967295 needs at least"),
        ("ase", ase_file([struct.pack(">HI", 1, 0xFFFFFFF0)]), "byte 14: block 0 declares 4294967280 bytes"),
        ("ase", ase_file([ase_block(1, struct.pack(">H", 60000))]), "byte 20: colour block 0's name needs 120000"),
        ("ase", ase_file([ase_block(1, ase_name("x") + b"HSV " + b"\0" * 14)]), "colour model b'HSV '"),
        ("ase", ase_file([ase_colour("x", b"RGB ", (float("nan"), 0, 0))]), "are not finite"),
        ("ase", ase_file([ase_colour("x", b"RGB ", (255.0, 0, 0))]), "outside [0, 1]"),
        ("ase", ase_file([ase_block(1, struct.pack(">H", 1) + b"\xd8\x00")]), "name is not valid UTF-16"),
        ("ase", ase_file([ase_block(0xC001, ase_name("empty group"))]), "no colours found"),
        ("ase", golden_ase() + b"\0\0", "2 bytes follow the 8 blocks"),
        ("aco", b"\x00\x03\x00\x00", "byte 0: version 3 is not 1 or 2 (wrong magic)"),
        ("aco", struct.pack(">HH", 1, 200) + b"\0" * 10, "byte 2: the version 1 count 200 needs at least 2000 bytes"),
        ("aco", aco_v1([aco_record(5, 0)]), "byte 4: colour 0: colour space 5 is not"),
        ("aco", aco_v1(ACO_RECORDS) + b"\x00\x02\x00", "byte 66: the version 2 colour count needs 2 bytes"),
        ("aco", aco_v1(ACO_RECORDS[:2]) + aco_v2(ACO_RECORDS[:1], ["x"]), "version 2 section holds 1 colours"),
        ("aco", struct.pack(">HH", 2, 1) + aco_record(0, 0) + struct.pack(">I", 999), "name length 999 runs past"),
        ("aco", aco_v1([]), "no colours found"),
        ("pal", b"RIFF" + struct.pack("<I", 99) + b"PAL ", "byte 4: the RIFF size 99 runs past"),
        ("pal", riff_pal([(1, 2, 3)], count=300), "300 colours"),
        ("pal", riff_pal([(1, 2, 3)], count=2), "2 colours need 12 bytes but the data chunk holds 8"),
        ("pal", b"JASC-PAL\n0100\nmany\n", 'line 3: "many" is not a colour count'),
        ("pal", b"JASC-PAL\n0100\n4\n0 0 0\n1 1 1\n", "line 6: the file ends after 2 of the 4 colours"),
        ("pal", b"JASC-PAL\n0100\n1\n0 0 0\n1 1 1\n", 'line 5: "1 1 1": the header announces 1 colours'),
        ("pal", b"JASC-PAL\n0100\n1\n0 0 300\n", "line 4: RGB value 300 is out of range"),
        ("pal", b"JASC-PAL\n0100\n1\n0 0\n", 'line 4: "0 0" is not a colour row'),
        ("pal", b"PSP-PAL\n", 'line 1: "PSP-PAL": expected "JASC-PAL"'),
        ("pal", b"JASC-PAL\n0100\n1\n\xff\xfe\n", "line 4, byte 16: invalid UTF-8"),
        ("gpl", b"GIMP Pallete\n", 'line 1: "GIMP Pallete": expected the header "GIMP Palette"'),
        ("gpl", b"GIMP Palette\n1 2\n", 'line 2: "1 2" is not a colour row'),
        ("gpl", b"GIMP Palette\n1 2 256 too bright\n", "line 2: RGB value 256 is out of range"),
        ("gpl", b"GIMP Palette\n# only comments\n", "no colours found"),
        ("gpl", b"GIMP Palette\nName: caf\xe9\n", "line 2, byte 22: invalid UTF-8"),
        ("hex", b"e63946\nnot-a-colour\n", 'line 2: "not-a-colour" is not a colour'),
        ("hex", b"e63946\n\xc3\x28\n", "line 2, byte 7: invalid UTF-8"),
        ("hex", b"e63946:0\n", "the weights sum to 0"),
        ("json", b'{"colors": ["#fff"]}', "line 1: expected a JSON list"),
        ("json", b'["#fff",\n "#000"\n', "invalid JSON palette at line 3"),
        ("json", b'["#fff", "#00g"]', '"#00g" is not a colour'),
        ("json", b'["\xff"]', "line 1, byte 2: invalid UTF-8"),
    ],
)
def test_malformed_files_name_the_problem(fmt, data, needle):
    with pytest.raises(PaletteFormatError) as info:
        F.decode(data, fmt, source="f")
    msg = str(info.value)
    assert needle in msg, msg
    assert msg.startswith("f: ") and "\n" not in msg
    if fmt in ("ase", "aco") and "no colours" not in msg:
        assert OFFSET.search(msg) and "expected" in msg


def test_truncated_binary_files_name_an_offset():
    goldens = {
        "ase": golden_ase(),
        "aco": golden_aco_v1v2(),
        "pal": riff_pal([(255, 0, 0), (0, 255, 0), (0, 0, 255)]),
    }
    v1_end = len(aco_v1(ACO_RECORDS))
    for fmt, data in goldens.items():
        for n in range(len(data)):
            if fmt == "aco" and n in (v1_end, v1_end + 1):
                # a complete version-1 file (one more byte is data after the colours, skipped)
                assert F.decode(data[:n], fmt).hex == ACO_HEX
                continue
            with pytest.raises(PaletteFormatError) as info:
                F.decode(data[:n], fmt, source="cut")
            msg = str(info.value)
            # a RIFF file cut inside its 4-byte magic no longer says RIFF and is read as JASC text
            assert OFFSET.search(msg) or "no colours" in msg or (fmt == "pal" and n < 4 and "line 1" in msg), msg


def test_truncated_text_files_fail_cleanly_or_parse_a_prefix():
    for fmt, text in (("gpl", GPL), ("pal", JASC)):
        data = text.encode()
        for n in range(len(data)):
            try:
                p = F.decode(data[:n], fmt)
            except PaletteFormatError as e:
                assert LINE.search(str(e)) or "no colours" in str(e), (fmt, n, str(e))
            else:  # a cut inside a number still reads as a (different) valid row: text has no lengths to check
                assert len(p) <= len(GPL_HEX if fmt == "gpl" else JASC_HEX)


def mutate(data: bytes, seed: int) -> bytes:
    rng = random.Random(seed)
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not b:
            break
        op = rng.random()
        i = rng.randrange(len(b))
        if op < 0.5:
            b[i] = rng.randrange(256)
        elif op < 0.75:
            b[i : i + 4] = struct.pack(">I", rng.choice([0, 1, 0xFFFF, 0xFFFFFFFF, rng.randrange(2**32)]))
        else:
            del b[i : i + rng.randint(1, 8)]
    return bytes(b)


FUZZ_SEEDS = {
    "ase": golden_ase(),
    "aco": golden_aco_v1v2(),
    "pal": riff_pal([(255, 0, 0), (0, 255, 0)]),
    "gpl": GPL.encode(),
    "hex": b"e63946\nf1faee\n",
    "json": b'[{"hex": "#e63946", "weight": 2}, "#f1faee"]',
}


@given(fmt=st.sampled_from(sorted(FUZZ_SEEDS)), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=400, deadline=None)
def test_mutated_files_raise_only_palette_format_error(fmt, seed):
    try:
        p = F.decode(mutate(FUZZ_SEEDS[fmt], seed), fmt)
    except PaletteFormatError as e:
        assert "\n" not in str(e)
    else:
        assert 1 <= len(p) <= MAX_FILE_COLORS and 0 <= float(p.colors.min()) and float(p.colors.max()) <= 1


@given(fmt=st.sampled_from(sorted(set(F.READ_FORMATS.values()))), data=st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_random_bytes_raise_only_palette_format_error(fmt, data):
    try:
        F.decode(data, fmt)
    except PaletteFormatError:
        pass


@given(data=st.binary(max_size=200))
@settings(max_examples=150, deadline=None)
def test_random_bytes_after_a_valid_magic(data):
    for fmt, head in (("ase", b"ASEF\x00\x01\x00\x00"), ("aco", b"\x00\x01"), ("pal", b"RIFF")):
        try:
            F.decode(head + data, fmt)
        except PaletteFormatError as e:
            assert OFFSET.search(str(e)) or "no colours" in str(e)
