"""Palettes between packs and prompts, and adherence in the graph (palette_core only; the nodes: test_interop_comfyui).

The palette text forms other packs write (Python-style RGB tuples, 0-1 floats, quoted hex, JSON triples, hex
lines), Palette To Text's forms read back, colour names checked against colour-science's CIEDE2000, and the
adherence scores against palette_core's own metrics and an independent ΔE.
"""

from __future__ import annotations

import json
import math

import colour
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from palette_core.adherence import mark_off_palette, nearest_delta_e, palette_adherence
from palette_core.color import srgb_to_lab
from palette_core.color_names import (
    DATA_FILE,
    EXCLUDED_WORDS,
    is_excluded,
    name_palette,
    name_table,
    nearest_names,
    read_name_list,
    xkcd_names,
)
from palette_core.distance import palette_emd
from palette_core.errors import InputShapeError, PaletteError, PaletteFormatError
from palette_core.formats import decode
from palette_core.histogram import image_histogram
from palette_core.interchange import TEXT_FORMS, palette_to_text, weights_kept
from palette_core.palette import Palette
from palette_core.similarity import occupied_quadratic_chi

D65 = np.array([0.3127, 0.3290])


def hex_of(levels) -> str:
    return "#{:02x}{:02x}{:02x}".format(*levels)


def reference_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of sRGB floats by colour-science, independent of palette_core.color."""
    return colour.XYZ_to_Lab(colour.sRGB_to_XYZ(rgb), illuminant=D65)


# --------------------------------------------------------------------------------------------------
# Palette.parse: the forms other packs write


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[(230, 57, 70), (241, 250, 238)]", ["#e63946", "#f1faee"]),
        ("[(230,57,70),(241,250,238),]", ["#e63946", "#f1faee"]),
        ("[[230, 57, 70], (241, 250, 238,)]", ["#e63946", "#f1faee"]),
        ("[[230, 57, 70], [241, 250, 238]]", ["#e63946", "#f1faee"]),  # JSON
        ("[(1.0, 0.0, 0.0), (0.0, 0.5, 1.0)]", ["#ff0000", "#0080ff"]),
        ("[[1.0, 0.0, 0.0], [0, 0, 1]]", ["#ff0000", "#0000ff"]),  # JSON: one decimal makes it 0-1
        ("[(1e0, 0, 0)]", ["#ff0000"]),
        ("[(1, 0, 0)]", ["#010000"]),  # integers are 8-bit levels
        ("[(0.4, 0.4, 0.4), (255, 0, 0)]", ["#000000", "#ff0000"]),  # a value above 1: 0-255 for all
        ("[(1.6, 0.2, 0.1), (0.4, 2.0, 0.1)]", ["#020000", "#000200"]),
        ("['#e63946', '#f1faee']", ["#e63946", "#f1faee"]),
        ("['e63946', \"#FFF\", (0, 0, 0)]", ["#e63946", "#ffffff", "#000000"]),
        ("#e63946\n#f1faee\n#1d3557\n", ["#e63946", "#f1faee", "#1d3557"]),
        ("E63946\r\nf1faee\r\n1D3557", ["#e63946", "#f1faee", "#1d3557"]),
        ("https://coolors.co/e63946-f1faee", ["#e63946", "#f1faee"]),
    ],
)
def test_other_packs_forms(text, expected):
    p = Palette.parse(text)
    assert p.hex == expected
    assert p.is_uniform


def test_rgb_tuples_give_the_same_bits_as_hex():
    a = Palette.parse("[(230, 57, 70), (29, 53, 87)]")
    b = Palette.parse("#e63946, #1d3557")
    assert np.array_equal(a.colors_array, b.colors_array) and np.array_equal(a.weights_array, b.weights_array)
    floats = Palette.parse("[(0.9, 0.2235, 0.0)]")
    assert floats.colors_array.tolist() == [[np.float32(0.9), np.float32(0.2235), 0.0]]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[(230, 57)]", 'palette list item 0 "(230, 57)": 2 values; expected 3 numbers r, g, b'),
        ("[(1, 2, 3, 4)]", "4 values; expected 3 numbers r, g, b"),
        ("[(1, 2, 300)]", "300 is out of range: expected 0 to 255"),
        ("[(-1, 2, 3)]", "-1 is out of range"),
        ("[(1, 2, 3) (4, 5, 6)]", "column 12: missing comma between items"),
        ("[(1, 2, 3)", 'missing "]" at the end'),
        ("[(1, 2, 3]]", 'column 10: unmatched "]"'),
        ("[(1, 2, 3)]]", "column 12: text after the closing bracket"),
        ("[(1, 2, 3)] and more", "text after the closing bracket"),
        ("[((1, 2, 3))]", "nested too deeply"),
        ("[(red, 2, 3)]", 'column 3: unexpected "red, 2, 3)]"'),
        ("[(1,, 2, 3)]", "a comma where a value was expected"),
        ("[(1e999, 0, 0)]", "inf is out of range"),
        ("[[1, 2, 3], [4, 5]]", 'JSON palette item 1 "(4, 5)": 2 values'),
        ("[[1, 2, true]]", '"True" is not a number'),
        ("[(" + "9" * 401 + ", 0, 0)]", "is too long"),
        ("['#12345g']", '"#12345g" is not a colour'),
        ("[1, 2]", 'JSON palette item 0 ("1"): expected a hex string'),
    ],
)
def test_bad_lists_say_what_is_wrong(text, needle):
    with pytest.raises(PaletteFormatError) as info:
        Palette.parse(text)
    assert needle in str(info.value)


def test_too_many_tuples_are_refused():
    with pytest.raises(PaletteFormatError, match="more than 256 colours"):
        Palette.parse("[" + ", ".join(["(1, 2, 3)"] * 257) + "]")


triple = st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255))
space = st.sampled_from(["", " ", "  ", "\n", "\t"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(triple, st.sampled_from(["()", "[]"]), st.booleans(), space), min_size=1, max_size=20), space)
def test_property_python_rgb_tuples(items, pad):
    parts = []
    for (r, g, b), brackets, trailing, sp in items:
        parts.append(f"{brackets[0]}{sp}{r},{sp}{g},{sp}{b}{',' if trailing else ''}{brackets[1]}")
    text = f"{pad}[{pad}" + f",{pad}".join(parts) + f"{pad}]{pad}"
    p = Palette.parse(text)
    expected = [hex_of(t) for t, *_ in items]
    assert p.hex == expected
    assert np.array_equal(p.colors_array, Palette.from_hex(expected).colors_array)


unit = st.floats(0.0, 1.0, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(unit, unit, unit), min_size=1, max_size=20))
def test_property_unit_floats_as_python_prints_them(rows):
    text = str(rows)  # Python's own repr: "[(0.5, 1.0, 0.0), ...]"; every float has a "." or an exponent
    p = Palette.parse(text)
    assert np.array_equal(p.colors_array, np.array(rows, dtype=np.float32))
    assert Palette.parse(json.dumps([list(r) for r in rows])).hex == p.hex  # the JSON spelling agrees


@settings(max_examples=60, deadline=None)
@given(st.lists(triple, min_size=1, max_size=20), st.sampled_from(["\n", "\r\n"]), st.booleans(), st.booleans())
def test_property_hex_lines_and_quoted_hex(levels, newline, hashes, upper):
    hexes = [hex_of(t) for t in levels]
    written = [(h if hashes else h[1:]) for h in hexes]
    written = [w.upper() for w in written] if upper else written
    assert Palette.parse(newline.join(written) + newline).hex == hexes
    assert Palette.parse(str(written)).hex == hexes  # Python's repr of a list of str: single quotes
    assert Palette.parse(str([tuple(t) for t in levels])).hex == hexes


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet="[]()'\",. 0123456789abcdef#e-+x\n", max_size=40))
def test_property_any_bracketed_text_parses_or_is_a_format_error(tail):
    for text in ("[" + tail, "[(" + tail, "['" + tail):
        try:
            p = Palette.parse(text)
        except PaletteFormatError as e:
            assert str(e)
        else:
            assert 1 <= len(p) <= 256 and np.isfinite(p.colors_array).all()


# --------------------------------------------------------------------------------------------------
# Palette To Text: every form reads back


weights = st.one_of(st.none(), st.lists(st.floats(0.01, 100.0), min_size=20, max_size=20))


@settings(max_examples=40, deadline=None)
@given(st.lists(triple, min_size=1, max_size=20), weights)
def test_property_every_text_form_reads_back(levels, w):
    p = Palette.from_hex([hex_of(t) for t in levels], None if w is None else w[: len(levels)])
    for form in TEXT_FORMS:
        text = palette_to_text(p, form, name="sunset")
        back = decode(text.encode(), "gpl") if form == "gpl" else Palette.parse(text)
        assert back.hex == p.hex, form
        if form == "hex list":
            assert np.array_equal(back.weights_array, p.weights_array)  # bit for bit
        elif weights_kept(p, form):
            # JSON writes each weight's shortest float32 decimal; re-normalising moves it by float32 steps
            np.testing.assert_allclose(back.weights_array, p.weights_array, rtol=1e-5, atol=1e-7)
        else:
            assert back.is_uniform


def test_text_forms_examples():
    p = Palette.parse("#e63946:2, #f1faee, #1d3557")
    assert palette_to_text(p, "hex list") == "#e63946:2, #f1faee, #1d3557"
    assert json.loads(palette_to_text(p, "json")) == [
        {"hex": "#e63946", "weight": 0.5},
        {"hex": "#f1faee", "weight": 0.25},
        {"hex": "#1d3557", "weight": 0.25},
    ]
    assert palette_to_text(Palette.parse("#fff, #000"), "json") == '["#ffffff", "#000000"]'
    assert palette_to_text(p, "rgb tuples") == "[(230, 57, 70), (241, 250, 238), (29, 53, 87)]"
    assert palette_to_text(p, "coolors url") == "https://coolors.co/e63946-f1faee-1d3557"
    assert palette_to_text(p, "hex lines") == "#e63946\n#f1faee\n#1d3557"
    gpl = palette_to_text(p, "gpl", name="my  palette").splitlines()
    assert gpl[:2] == ["GIMP Palette", "Name: my palette"] and gpl[4] == "230  57  70\t#e63946"
    assert not weights_kept(p, "gpl") and weights_kept(p, "json") and weights_kept(Palette.parse("#fff"), "gpl")
    with pytest.raises(PaletteFormatError, match='unknown text form "svg": expected one of hex list'):
        palette_to_text(p, "svg")


# --------------------------------------------------------------------------------------------------
# Colour names


def test_the_data_file_is_the_published_list_with_its_licence():
    text = DATA_FILE.read_text(encoding="utf-8")
    assert "CC0" in text.splitlines()[3] and "https://xkcd.com/color/rgb.txt" in text
    readme = (DATA_FILE.parent / "README.md").read_text(encoding="utf-8")
    assert "CC0 1.0" in readme and "xkcd_colors.txt" in readme
    pairs = read_name_list(text)
    assert len(pairs) == 949 and len({n for n, _ in pairs}) == 949 and len({h for _, h in pairs}) == 949
    # Entries anyone can check on https://xkcd.com/color/rgb/
    table = dict(pairs)
    assert table["red"] == "#e50000" and table["blue"] == "#0343df" and table["cloudy blue"] == "#acc2d9"
    assert table["white"] == "#ffffff" and table["black"] == "#000000"


def test_unsuitable_names_are_left_out_by_whole_word():
    assert len(xkcd_names(include_all=True)) == 949
    kept = xkcd_names()
    assert len(kept) == 949 - sum(is_excluded(n) for n in xkcd_names(include_all=True).names)
    assert not any(is_excluded(n) for n in kept.names)
    assert is_excluded("baby poop green") and not is_excluded("pool blue") and not is_excluded("dirty pink")
    assert "dirty pink" in kept.names and "poop" not in kept.names and EXCLUDED_WORDS >= {"poop", "vomit"}


def test_every_listed_colour_is_named_by_its_own_name():
    table = xkcd_names()
    idx, de = nearest_names(table.rgb, table)
    assert np.array_equal(idx, np.arange(len(table)))
    assert np.all(de < 1e-9)


@pytest.mark.parametrize(
    ("hex_code", "name"),
    [
        ("#e50000", "red"),
        ("#e60101", "red"),  # one level off
        ("#0343df", "blue"),
        ("#0444de", "blue"),
        ("#ffffff", "white"),
        ("#fefefe", "white"),
        ("#000000", "black"),
        ("#010101", "black"),
        ("#acc2d9", "cloudy blue"),
        ("#adc3d8", "cloudy blue"),
    ],
)
def test_known_colours_and_near_ones(hex_code, name):
    rgb = Palette.from_hex([hex_code]).colors_array
    idx, _ = nearest_names(rgb)
    assert xkcd_names().names[int(idx[0])] == name


def test_excluded_name_colours_get_the_next_nearest_name():
    everything = xkcd_names(include_all=True)
    poop_rgb = everything.rgb[everything.names.index("poop")][None]
    idx_all, _ = nearest_names(poop_rgb, everything)
    assert everything.names[int(idx_all[0])] == "poop"
    idx, de = nearest_names(poop_rgb)
    assert not is_excluded(xkcd_names().names[int(idx[0])]) and 0 < float(de[0]) < 10


@settings(max_examples=25, deadline=None)
@given(st.lists(triple, min_size=1, max_size=4))
def test_property_nearest_name_is_the_minimum_of_colour_science_ciede2000(levels):
    table = xkcd_names()
    rgb = np.array(levels, dtype=np.float64) / 255.0
    idx, de = nearest_names(rgb, table)
    ref = colour.delta_E(reference_lab(rgb)[:, None, :], reference_lab(table.rgb)[None], method="CIE 2000")
    np.testing.assert_allclose(de, ref.min(axis=1), atol=2e-4)
    # the name chosen is one of the nearest (ties within the two implementations' rounding)
    assert np.all(ref[np.arange(len(levels)), idx] <= ref.min(axis=1) + 2e-4)


def test_torch_and_numpy_agree_and_batches_keep_their_shape():
    rgb = np.random.default_rng(0).random((2, 3, 3))
    i_np, d_np = nearest_names(rgb)
    i_t, d_t = nearest_names(torch.from_numpy(rgb))
    assert i_np.shape == (2, 3) and torch.equal(i_t, torch.from_numpy(i_np))
    np.testing.assert_allclose(d_t.numpy(), d_np, atol=1e-9)


def test_name_palette_merges_colours_with_the_same_name():
    p = Palette.parse("#e50000:3, #0343df, #e60101:2")
    merged = name_palette(p.colors_array, p.weights_array)
    assert [(n.name, n.hex) for n in merged] == [("red", "#e50000"), ("blue", "#0343df")]
    assert merged[0].weight == pytest.approx(5 / 6) and merged[0].delta_e == pytest.approx(0, abs=1e-5)
    assert merged[0].name_hex == "#e50000"
    separate = name_palette(p.colors_array, p.weights_array, merge=False)
    assert [n.name for n in separate] == ["red", "blue", "red"] and separate[2].delta_e > 0


def test_a_missing_name_list_is_a_clear_error(monkeypatch, tmp_path):
    import palette_core.color_names as names

    monkeypatch.setattr(names, "DATA_FILE", tmp_path / "xkcd_colors.txt")
    names.xkcd_names.cache_clear()
    try:
        with pytest.raises(PaletteError, match="xkcd_colors.txt is missing: it ships in palette_core/data/"):
            names.xkcd_names()
    finally:
        names.xkcd_names.cache_clear()


def test_name_list_errors():
    with pytest.raises(PaletteFormatError, match="line 2: expected name<TAB>#rrggbb"):
        read_name_list("# comment\nred #ff0000\n", "list.txt")
    with pytest.raises(PaletteFormatError, match='"#ff00" is not a colour'):
        read_name_list("red\t#ff00\n")
    with pytest.raises(PaletteFormatError, match="no names found"):
        read_name_list("# only a comment\n")
    with pytest.raises(InputShapeError, match="no names"):
        name_table([])
    with pytest.raises(InputShapeError, match="expected \\[N, 3\\]"):
        name_palette(np.zeros((0, 3)))


# --------------------------------------------------------------------------------------------------
# Adherence


@pytest.fixture(scope="module")
def scene() -> tuple[Palette, torch.Tensor]:
    """Two 32x48 images of a 3-colour palette's colours; the second has an 8x48 band of pure green."""
    p = Palette.parse("#e63946:2, #f1faee, #1d3557")
    g = torch.Generator().manual_seed(0)
    image = p.colors[torch.randint(0, 3, (2, 32, 48), generator=g)]
    image[1, :8] = torch.tensor([0.0, 1.0, 0.0])
    return p, image


def test_delta_e_map_matches_colour_science(scene):
    p, _ = scene
    rng = np.random.default_rng(1)
    image = np.round(rng.random((2, 24, 20, 3)) * 255) / 255
    ours = nearest_delta_e(torch.from_numpy(image).float(), p.colors, p.weights)
    ref = colour.delta_E(
        reference_lab(image)[..., None, :], reference_lab(p.colors_array.astype(np.float64)), method="CIE 2000"
    ).min(axis=-1)
    assert ours.shape == (2, 24, 20) and ours.dtype == torch.float32
    np.testing.assert_allclose(ours.numpy(), ref, atol=2e-3)


def test_colours_of_weight_zero_do_not_count():
    p = Palette.from_colors(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), [1.0, 0.0])
    green = torch.tensor([[[0.0, 1.0, 0.0]]])
    assert float(nearest_delta_e(green, p.colors, p.weights)[0, 0]) > 50
    assert float(nearest_delta_e(green, p.colors)[0, 0]) == pytest.approx(0, abs=1e-3)


def test_scores_are_the_packs_metrics_and_the_exact_off_share(scene):
    p, image = scene
    a = palette_adherence(image, p.colors, p.weights, threshold=10.0, samples=512)
    assert a.off_fraction.tolist() == [0.0, 8 / 32]
    assert torch.equal(a.emd, palette_emd(image, p.colors, p.weights, samples=512))
    hist = image_histogram(image)
    qc = occupied_quadratic_chi(hist.double().numpy(), p.histogram_array())  # the numpy-only path
    np.testing.assert_allclose(a.quadratic_chi.numpy(), qc, atol=1e-5)
    assert a.emd[1] > a.emd[0] and a.quadratic_chi[1] > a.quadratic_chi[0]
    assert a.delta_e.shape == (2, 32, 48) and float(a.delta_e[0].max()) < 1e-2
    lenient = palette_adherence(image, p.colors, p.weights, threshold=100.0)
    assert lenient.off_fraction.tolist() == [0.0, 0.0]


def test_threshold_and_samples_are_checked(scene):
    p, image = scene
    for bad in (0.0, -1.0, math.nan, math.inf, True, "10"):
        with pytest.raises(PaletteError, match="threshold"):
            palette_adherence(image, p.colors, p.weights, threshold=bad)
    with pytest.raises(PaletteError, match="samples: 0 must be >= 1"):
        palette_adherence(image, p.colors, p.weights, samples=0)


def test_marked_image_is_magenta_over_a_faded_grey_of_the_same_lightness(scene):
    p, image = scene
    off = nearest_delta_e(image, p.colors, p.weights) > 10
    marked = mark_off_palette(image, off)
    assert marked.shape == image.shape
    magenta = torch.tensor([1.0, 0.0, 1.0])
    assert torch.all(marked[off] == magenta)
    rest = marked[~off]
    assert torch.all((rest.max(-1).values - rest.min(-1).values) < 1e-5)  # grey
    lab_in = srgb_to_lab(image[~off].double())[:, 0]
    lab_out = srgb_to_lab(rest.double())[:, 0]
    torch.testing.assert_close(lab_out, 20 + 0.6 * lab_in, atol=1e-3, rtol=0)
    with pytest.raises(InputShapeError, match="does not match the image"):
        mark_off_palette(image, off[:, :4])
