"""Palette files as real tools write them (tests/wild_palettes.py), read by palette_core.formats and,
where PyPI has one, by an independent reader: Pillow's GIMP palette reader, ``swatch`` (ASE) and
``adobe-color-swatch`` (ACO); Lab maths against colour-science. Also files with more than 256 colours.
"""

from __future__ import annotations

import io
import struct

import colour
import numpy as np
import pytest
from PIL.GimpPaletteFile import GimpPaletteFile
from wild_palettes import (
    COLOURS,
    AseColour,
    AseGroup,
    aco_lab,
    aco_rgb,
    adobe_ase,
    aseprite_gpl_rgba,
    gimp_gpl,
    hexes,
    inkscape_gpl,
    krita_gpl,
    lospec_gpl,
    lospec_hex,
    lospec_paintnet_txt,
    photoshop_aco,
    photoshop_aco_v1,
    photoshop_groups_block,
)

from palette_core import formats as F
from palette_core.palette import MAX_COLORS, MAX_FILE_COLORS, Palette, to_hex

ICC_D50 = colour.XYZ_to_xy(np.array(F.D50_XYZ))


def pillow_gpl_hexes(data: bytes) -> list[str]:
    """The colours Pillow's GIMP palette reader (an independent implementation) finds in ``data``."""
    raw = GimpPaletteFile.frombytes(data).getpalette()[0]
    return ["#{:02x}{:02x}{:02x}".format(*raw[i : i + 3]) for i in range(0, len(raw), 3)]


def reference_srgb_of_d50_lab(lab) -> np.ndarray:
    """sRGB of D50 Lab by colour-science: Lab -> XYZ (D50) -> Bradford to D65 -> sRGB (unclipped)."""
    xyz = colour.Lab_to_XYZ(np.asarray(lab, dtype=np.float64), illuminant=ICC_D50)
    return colour.XYZ_to_sRGB(xyz, illuminant=ICC_D50, chromatic_adaptation_transform="Bradford")


def d50_lab_of(hex_colour: str) -> tuple[float, float, float]:
    """The D50 Lab Adobe would store for an sRGB colour, by colour-science."""
    rgb = np.array([int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)])
    xyz = colour.sRGB_to_XYZ(rgb, illuminant=ICC_D50, chromatic_adaptation_transform="Bradford")
    return tuple(colour.XYZ_to_Lab(xyz, illuminant=ICC_D50).tolist())


# --------------------------------------------------------------------------------------------------
# .gpl as GIMP, Inkscape, Krita, Aseprite and Lospec write it


@pytest.mark.parametrize(
    "data",
    [gimp_gpl(), inkscape_gpl(), krita_gpl(), aseprite_gpl_rgba(), lospec_gpl(), gimp_gpl().replace(b"\n", b"\r\n")],
    ids=["gimp", "inkscape", "krita", "aseprite-rgba", "lospec", "gimp-crlf"],
)
def test_gpl_as_tools_write_it(data):
    p = F.decode(data, "gpl", "wild.gpl")
    assert p.hex == hexes() and p.is_uniform
    if b"\r\n" not in data:  # Pillow's reader splits on "\n" only; the rows it reads must agree
        assert pillow_gpl_hexes(data) == hexes()


def test_lospec_hex_and_paintnet_txt():
    reference = ["#" + line.decode() for line in lospec_hex().splitlines()]  # bytes.fromhex-level parsing
    assert reference == hexes()
    for data in (lospec_hex(), lospec_hex(newline="\r\n"), lospec_hex().rstrip(b"\n")):
        assert F.decode(data, "hex", "lospec.hex").hex == hexes()
    assert F.decode(lospec_paintnet_txt(), "hex", "lospec.txt").hex == hexes()


# --------------------------------------------------------------------------------------------------
# Photoshop .aco

ACO_COLOURS = [aco_rgb(*rgb, name or "Untitled") for rgb, name in COLOURS]


def reference_aco(data: bytes, tmp_path) -> list:
    """adobe-color-swatch's reader (version 1 then 2; RGB, HSB, CMYK, grayscale) on ``data``."""
    acs = pytest.importorskip("swatch.swatch", reason="adobe-color-swatch is in requirements-dev.txt")
    if not hasattr(acs, "load_aco_file"):
        pytest.skip("another package named swatch shadows adobe-color-swatch")
    path = tmp_path / "ref.aco"
    path.write_bytes(data)
    return acs.load_aco_file(path.open("rb"))


def test_photoshop_aco_version_1_only():
    assert F.decode(photoshop_aco_v1(ACO_COLOURS), "aco", "old.aco").hex == hexes()


def test_photoshop_aco_versions_1_and_2_with_a_groups_block(tmp_path):
    extra = photoshop_groups_block({"Warm": ["Brick", "Straw"], "Cool": ["Harbour blue"]})
    for data in (photoshop_aco(ACO_COLOURS), photoshop_aco(ACO_COLOURS, extra)):
        assert F.decode(data, "aco", "new.aco").hex == hexes()
        ref = reference_aco(data, tmp_path)
        assert [c.name for c in ref] == [name or "Untitled" for _, name in COLOURS]
        # 16-bit components, as the reference gives them, are 257 x the 8-bit levels
        assert [
            "#" + "".join(f"{int(c.color_hex[i : i + 4], 16) // 257:02x}" for i in (1, 5, 9)) for c in ref
        ] == hexes()


def test_our_aco_layout_is_byte_for_byte_what_an_independent_writer_writes(tmp_path):
    acs = pytest.importorskip("swatch.swatch", reason="adobe-color-swatch is in requirements-dev.txt")
    if not hasattr(acs, "save_aco_file"):
        pytest.skip("another package named swatch shadows adobe-color-swatch")
    raw = [acs.RawColor(c.name, acs.ColorSpace.RGB, c.w, c.x, c.y, c.z) for c in ACO_COLOURS]
    path = tmp_path / "written.aco"
    acs.save_aco_file(raw, path.open("wb"))
    assert path.read_bytes() == photoshop_aco(ACO_COLOURS)


def test_aco_other_colour_spaces_against_the_reference_reader(tmp_path):
    from wild_palettes import AcoColour

    records = [
        AcoColour(1, 0, 65535, 65535, 0, "HSB red"),
        AcoColour(2, 65535, 0, 65535, 65535, "CMYK magenta (0 = 100% ink)"),
        AcoColour(8, 2500, 0, 0, 0, "Gray 25% ink"),
    ]
    data = photoshop_aco(records)
    assert F.decode(data, "aco").hex == ["#ff0000", "#ff00ff", "#bfbfbf"]
    ref = reference_aco(data, tmp_path)
    assert [(c.name, c.color_space.value) for c in ref] == [(r.name, r.space) for r in records]


def test_aco_lab_is_d50():
    wanted = ["#d4403a", "#24588c", "#78b45a"]
    records = [aco_lab(d50_lab_of(h), h) for h in wanted]
    assert F.decode(photoshop_aco(records), "aco").hex == wanted


def test_aco_data_after_version_1_that_is_not_version_2_is_skipped():
    data = photoshop_aco_v1(ACO_COLOURS) + photoshop_groups_block({"Warm": ["Brick"]})
    assert F.decode(data, "aco").hex == hexes()


# --------------------------------------------------------------------------------------------------
# Illustrator / InDesign .ase

SPOT_LAB = d50_lab_of("#e4002b")  # a made-up spot colour stored as Lab, as swatch libraries store spots
ILLUSTRATOR = [
    AseColour("R=212 G=64 B=58", "RGB", (212 / 255, 64 / 255, 58 / 255), "Global"),
    AseGroup(
        "Print colours",
        (
            AseColour("C=0 M=100 Y=100 K=0", "CMYK", (0.0, 1.0, 1.0, 0.0)),
            AseColour("C=100 M=0 Y=0 K=0", "CMYK", (1.0, 0.0, 0.0, 0.0)),
            AseColour("Spot red", "LAB", (SPOT_LAB[0] / 100, SPOT_LAB[1], SPOT_LAB[2]), "Spot"),
        ),
    ),
    AseGroup("Greys", (AseColour("K=60", "Gray", (0.4,)), AseColour("White", "Gray", (1.0,)))),
    AseColour("Lab outside sRGB", "LAB", (0.6, -100.0, 90.0)),
]


def reference_ase(data: bytes) -> list[dict]:
    parser = pytest.importorskip("swatch.parser", reason="swatch is in requirements-dev.txt")
    fd = io.BytesIO(data)
    assert fd.read(4) == b"ASEF" and struct.unpack(">HHI", fd.read(8))[:2] == (1, 0)
    return list(parser.parse_chunk(fd))


def flatten(items: list[dict]) -> list[dict]:
    out = []
    for item in items:
        out += item["swatches"] if "swatches" in item else [item]
    return out


def test_illustrator_ase_every_colour_model_and_groups():
    data = adobe_ase(ILLUSTRATOR)
    p = F.decode(data, "ase", "illustrator.ase")
    assert len(p) == 7 and p.is_uniform
    assert p.hex[:3] == ["#d4403a", "#ff0000", "#00ffff"]  # CMYK through (1 - C)(1 - K)
    assert p.hex[3] == "#e4002b"  # D50 Lab of #e4002b, Bradford-adapted back
    assert p.hex[4:6] == ["#666666", "#ffffff"]
    expected = np.clip(reference_srgb_of_d50_lab([60.0, -100.0, 90.0]), 0, 1)
    assert np.allclose(p.colors_array[6], expected, atol=1e-6)

    ref = reference_ase(data)  # the independent reader sees the same groups, names, models and values
    assert [item["name"] for item in ref] == ["R=212 G=64 B=58", "Print colours", "Greys", "Lab outside sRGB"]
    swatches = flatten(ref)
    assert [s["data"]["mode"] for s in swatches] == ["RGB", "CMYK", "CMYK", "LAB", "Gray", "Gray", "LAB"]
    assert [s["type"] for s in swatches][:4] == ["Global", "Process", "Process", "Spot"]
    for s, rgb in zip(swatches, p.colors_array):
        if s["data"]["mode"] == "RGB":
            assert np.allclose(s["data"]["values"], rgb, atol=1e-7)
        if s["data"]["mode"] == "LAB":
            L, a, b = s["data"]["values"]
            assert np.allclose(np.clip(reference_srgb_of_d50_lab([100 * L, a, b]), 0, 1), rgb, atol=1e-6)


def test_our_ase_layout_is_byte_for_byte_what_an_independent_writer_writes():
    writer = pytest.importorskip("swatch.writer", reason="swatch is in requirements-dev.txt")
    kinds = {"RGB": "RGB", "CMYK": "CMYK", "LAB": "LAB", "Gray": "Gray"}

    def as_dict(c: AseColour) -> dict:
        return {"name": c.name, "type": c.kind, "data": {"mode": kinds[c.mode], "values": list(c.values)}}

    objects = [
        {"name": i.name, "type": "Color Group", "swatches": [as_dict(c) for c in i.colours]}
        if isinstance(i, AseGroup)
        else as_dict(i)
        for i in ILLUSTRATOR
    ]
    theirs = b"ASEF" + struct.pack(">HHI", 1, 0, writer.chunk_count(objects))
    theirs += b"".join(writer.chunk_for_object(o) for o in objects)
    assert theirs == adobe_ase(ILLUSTRATOR)


def test_ase_lab_matches_photoshops_colour_picker():
    # Photoshop's colour picker (sRGB working space) shows #ff0000, #00ff00 and #0000ff as Lab
    # 54/81/70, 88/-79/81 and 30/68/-112: D50 Lab (Bradford), rounded to whole numbers.
    picker = {"#ff0000": (54, 81, 70), "#00ff00": (88, -79, 81), "#0000ff": (30, 68, -112)}
    data = adobe_ase([AseColour(h, "LAB", (L / 100, a, b)) for h, (L, a, b) in picker.items()])
    got = F.decode(data, "ase").colors_array * 255
    want = np.array([[int(h[i : i + 2], 16) for i in (1, 3, 5)] for h in picker], dtype=np.float32)
    assert np.abs(got - want).max() < 16  # whole-number Lab is that coarse near the gamut corners
    # read as D65 (the old behaviour) green and blue would be far off
    from palette_core.color import lab_to_srgb

    d65 = np.clip(lab_to_srgb(np.array(list(picker.values()), dtype=np.float64)), 0, 1) * 255
    assert np.abs(d65 - want)[1:].max() > 30


def test_lab_d50_to_srgb_matches_colour_science():
    rng = np.random.default_rng(5)
    lab = np.column_stack([rng.uniform(0, 100, 500), rng.uniform(-128, 127, 500), rng.uniform(-128, 127, 500)])
    assert np.allclose(F.lab_d50_to_srgb(lab), reference_srgb_of_d50_lab(lab), atol=1e-9)
    assert np.allclose(F.lab_d50_to_srgb(lab[:7].reshape(7, 1, 3)).reshape(7, 3), F.lab_d50_to_srgb(lab[:7]))
    # the Bradford matrix is colour-science's too, and D50 white goes to D65 white
    ours = F.bradford(F.D50_XYZ, colour.xy_to_XYZ(colour.CCS_ILLUMINANTS["CIE 1931 2 Degree Standard Observer"]["D65"]))
    theirs = colour.adaptation.matrix_chromatic_adaptation_VonKries(
        np.array(F.D50_XYZ),
        colour.xy_to_XYZ(colour.CCS_ILLUMINANTS["CIE 1931 2 Degree Standard Observer"]["D65"]),
        transform="Bradford",
    )
    assert np.allclose(ours, theirs, atol=1e-12)
    assert to_hex(np.clip(F.lab_d50_to_srgb(np.array([100.0, 0.0, 0.0])), 0, 1)) == "#ffffff"


# --------------------------------------------------------------------------------------------------
# More than 256 colours

FAN_DECK = [((i * 37) % 256, (i * 101) % 256, (i * 53) % 256) for i in range(3000)]


def test_a_3000_colour_fan_deck_loads_in_every_format(tmp_path):
    colours = [(rgb, f"Deck {i:04d}") for i, rgb in enumerate(FAN_DECK)]
    want = hexes(colours)
    files = {
        "deck.gpl": gimp_gpl(colours=colours),
        "deck.hex": lospec_hex(colours),
        "deck.aco": photoshop_aco([aco_rgb(*rgb, n) for rgb, n in colours]),
        "deck.ase": adobe_ase([AseColour(n, "RGB", tuple(v / 255 for v in rgb)) for rgb, n in colours]),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        p = F.load_palette(tmp_path / name)
        assert p.hex == want and len(p) == 3000 < MAX_FILE_COLORS, name
    assert len(pillow_gpl_hexes(files["deck.gpl"])) == 3000
    # written and read back through every writable format
    p = F.load_palette(tmp_path / "deck.gpl")
    for ext in F.WRITE_FORMATS:
        F.save_palette(p, tmp_path / f"again{ext}")
        assert F.load_palette(tmp_path / f"again{ext}").hex == want, ext


def test_heaviest_keeps_order_and_the_widget_limit():
    unique = np.array([(i % 256, i // 256, 7) for i in range(300)], dtype=np.float32) / 255
    p = Palette.from_colors(unique, np.arange(300, dtype=np.float64) % 7)
    kept = p.heaviest(MAX_COLORS)
    assert len(kept) == MAX_COLORS
    dropped = sorted(set(p.hex) - set(kept.hex))
    w = dict(zip(p.hex, p.weights_array.tolist()))
    assert min(w[h] for h in kept.hex) >= max(w[h] for h in dropped)
    assert kept.hex == [h for h in p.hex if h in set(kept.hex)]  # original order
    assert float(kept.weights_array.sum()) == pytest.approx(1.0, abs=1e-6)
    uniform = Palette.from_colors(unique)
    assert uniform.heaviest(MAX_COLORS).hex == uniform.hex[:MAX_COLORS]
    assert uniform.heaviest(1000) is uniform
