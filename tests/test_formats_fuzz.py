"""Hypothesis fuzzing of every palette reader and of the widget's parse route: files as real tools write
them (tests/wild_palettes.py) with generated colours and names, then mutated, truncated, spliced with
huge numbers and deep nesting. Readers only ever raise PaletteFormatError (one line, short); the route
only ever answers 200 or 400 (413 for size), never 500.
"""

from __future__ import annotations

import json
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from packimport import pack_module
from wild_palettes import (
    AcoColour,
    AseColour,
    AseGroup,
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

from palette_core import PaletteFormatError
from palette_core import formats as F
from palette_core.palette import MAX_FILE_COLORS

routes = pack_module("nodes.routes")


def fast(examples: int) -> settings:
    return settings(
        max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
    )


names = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=12)
levels = st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255))
colour_lists = st.lists(st.tuples(levels, names), min_size=1, max_size=12)

TEXT_TOOLS = {
    "gimp": (gimp_gpl, "gpl"),
    "inkscape": (inkscape_gpl, "gpl"),
    "krita": (krita_gpl, "gpl"),
    "aseprite": (aseprite_gpl_rgba, "gpl"),
    "lospec-gpl": (lospec_gpl, "gpl"),
    "lospec-hex": (lospec_hex, "hex"),
    "paintnet": (lospec_paintnet_txt, "hex"),
}


def file_as(tool: str, colours) -> tuple[bytes, str]:
    """The bytes ``tool`` writes for ``colours`` and the reader's format name."""
    if tool in TEXT_TOOLS:
        writer, fmt = TEXT_TOOLS[tool]
        return writer(colours=colours), fmt
    if tool.startswith("aco"):
        records = [aco_rgb(*rgb, name) for rgb, name in colours]
        if tool == "aco-v1":
            return photoshop_aco_v1(records), "aco"
        extra = photoshop_groups_block({"g": [n for _, n in colours]}) if tool == "aco-extra" else b""
        return photoshop_aco(records, extra), "aco"
    entries = [AseColour(name, "RGB", tuple(v / 255 for v in rgb)) for rgb, name in colours]
    return adobe_ase([AseGroup("group", tuple(entries[:2])), *entries[2:]]), "ase"


TOOLS = sorted(TEXT_TOOLS) + ["aco-v1", "aco-v1v2", "aco-extra", "ase"]


def check_outcome(data: bytes, fmt: str) -> None:
    try:
        p = F.decode(data, fmt, "fuzz")
    except PaletteFormatError as e:
        msg = str(e)
        assert msg.startswith("fuzz") and "\n" not in msg and len(msg) < 600, msg[:600]
    else:
        assert 1 <= len(p) <= MAX_FILE_COLORS
        assert 0 <= float(p.colors_array.min()) and float(p.colors_array.max()) <= 1


@given(tool=st.sampled_from(TOOLS), colours=colour_lists)
@fast(150)
def test_tool_layouts_with_any_colours_and_names_read_back_exactly(tool, colours):
    data, fmt = file_as(tool, colours)
    p = F.decode(data, fmt, "fuzz")
    assert p.hex == hexes(colours) and p.is_uniform


@given(tool=st.sampled_from(TOOLS), colours=colour_lists, data=st.data())
@fast(300)
def test_mutated_tool_files_raise_only_palette_format_error(tool, colours, data):
    raw, fmt = file_as(tool, colours)
    b = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        i = data.draw(st.integers(0, max(len(b) - 1, 0)), label="at")
        op = data.draw(st.sampled_from(["set", "word", "delete", "insert", "truncate"]), label="op")
        if op == "set" and b:
            b[i] = data.draw(st.integers(0, 255))
        elif op == "word":
            b[i : i + 4] = struct.pack(">I", data.draw(st.sampled_from([0, 1, 0xFFFF, 0x4000, 0x4001, 0xFFFFFFFF])))
        elif op == "delete":
            del b[i : i + data.draw(st.integers(1, 8))]
        elif op == "insert":
            b[i:i] = data.draw(st.binary(min_size=1, max_size=8))
        else:
            del b[i:]
    check_outcome(bytes(b), fmt)


HOSTILE = [b"9" * 5000, b"-" + b"9" * 5000, b"0" * 5000 + b"7", b"1e99999", b"[" * 50_000, b"\x00" * 16, b"\xff\xfe"]


@given(tool=st.sampled_from(sorted(TEXT_TOOLS)), colours=colour_lists, splice=st.sampled_from(HOSTILE), data=st.data())
@fast(120)
def test_huge_numbers_spliced_into_text_files(tool, colours, splice, data):
    raw, fmt = file_as(tool, colours)
    i = data.draw(st.integers(0, len(raw)), label="at")
    replace = data.draw(st.integers(0, 3), label="replace")
    check_outcome(raw[:i] + splice + raw[i + replace :], fmt)


@given(count=st.integers(0, 2**16 - 1), version=st.sampled_from([1, 2]), body=st.binary(max_size=64))
@fast(150)
def test_aco_counts_never_allocate_or_loop_past_the_data(count, version, body):
    check_outcome(struct.pack(">HH", version, count) + body, "aco")
    check_outcome(photoshop_aco([AcoColour(0, 1, 2, 3)]) + struct.pack(">HH", 2, count) + body, "aco")


@given(blocks=st.integers(0, 2**32 - 1), body=st.binary(max_size=64))
@fast(100)
def test_ase_block_counts_never_allocate_or_loop_past_the_data(blocks, body):
    check_outcome(b"ASEF" + struct.pack(">HHI", 1, 0, blocks) + body, "ase")


# --------------------------------------------------------------------------------------------------
# The parse route

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=False)
    | st.text(max_size=10)
    | st.sampled_from(["#e63946", "#fff:2", "coolors.co/264653-2a9d8f"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["hex", "weight", "text"]), inner),
    max_leaves=12,
)


def assert_answer(reply) -> None:
    assert reply.status in (200, 400, 413), reply
    if reply.status == 200:
        assert 1 <= reply.body["count"] <= 256 and isinstance(reply.body["text"], str)
    else:
        assert "\n" not in reply.body["error"] and len(reply.body["error"]) < 1000, reply.body["error"][:1000]


@given(value=json_values, wrap=st.booleans())
@fast(200)
def test_route_answers_any_json_body(value, wrap):
    body = json.dumps({"text": json.dumps(value)} if wrap else value).encode()
    assert_answer(routes.parse_request(body, "application/json", None))


@given(
    prefix=st.sampled_from([b"", b'{"text": ', b'{"text": "#fff", "n": ', b'{"text": "[', b"["]),
    splice=st.sampled_from(HOSTILE + [b"[" * 200_000 + b"]" * 200_000, b'{"a":' * 100_000]),
    suffix=st.sampled_from([b"", b"}", b'"}', b"]"]),
)
@fast(60)
def test_route_answers_hostile_json_bodies(prefix, splice, suffix):
    assert_answer(routes.parse_request(prefix + splice + suffix, "application/json", None))


@given(
    tool=st.sampled_from(TOOLS),
    colours=colour_lists,
    cut=st.integers(0, 400),
    name=st.sampled_from(["p", "../../x", "C:\\a\\b", "", "a.b.c"]),
    ext=st.sampled_from(sorted(F.READ_FORMATS) + [".png", ""]),
)
@fast(150)
def test_route_answers_any_file_upload(tool, colours, cut, name, ext):
    raw, _ = file_as(tool, colours)
    assert_answer(routes.parse_request(raw[: len(raw) - cut], "application/octet-stream", name + ext))


def test_route_gives_more_than_256_colours_as_the_heaviest_256():
    colours = [((i % 256, i // 256, 3), f"c{i}") for i in range(700)]
    for tool in TOOLS:
        raw, fmt = file_as(tool, colours)
        ext = {"gpl": ".gpl", "hex": ".txt", "aco": ".aco", "ase": ".ase"}[fmt]
        reply = routes.parse_request(raw, "application/octet-stream", "deck" + ext)
        assert reply.status == 200 and (reply.body["count"], reply.body["total"]) == (256, 700), tool
        assert [c["hex"] for c in reply.body["colors"]] == hexes(colours[:256]), tool
