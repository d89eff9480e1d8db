"""nodes/routes.py, the palette widget's POST /palette_control/parse: the request logic without a server,
the aiohttp handler through aiohttp's test client, and the route inside a real ComfyUI (COMFYUI_PATH).
"""

from __future__ import annotations

import asyncio
import json
import re
import struct
import urllib.error
import urllib.request

import pytest
from comfyhost import requires_comfyui
from packimport import pack_module

from palette_core import formats as F
from palette_core.palette import Palette

routes = pack_module("nodes.routes")

SPEC_TEXT = "#e63946:2, #f1faee, #1d3557:0.5"
GPL = b"GIMP Palette\nName: Test\nColumns: 3\n#\n230  57  70\tred\n241 250 238 white\n 29  53  87\n"
JASC = b"JASC-PAL\r\n0100\r\n2\r\n255 0 0\r\n0 0 255\r\n"
LIMIT = routes.MAX_BODY_BYTES


def aco_v1(rgb: list[tuple[int, int, int]]) -> bytes:
    return struct.pack(">HH", 1, len(rgb)) + b"".join(
        struct.pack(">HHHHH", 0, r * 257, g * 257, b * 257, 0) for r, g, b in rgb
    )


# --------------------------------------------------------------------------------------------------
# Request logic (no server)


def test_text_reply_is_the_canonical_text_with_colours_and_weights():
    reply = routes.parse_text("  #E63946:4 #fff  #1d3557:1 ")
    assert reply.status == 200
    assert reply.body["text"] == "#e63946:4, #ffffff, #1d3557"
    assert reply.body["count"] == 3
    assert [c["hex"] for c in reply.body["colors"]] == ["#e63946", "#ffffff", "#1d3557"]
    assert [c["weight"] for c in reply.body["colors"]] == pytest.approx([4 / 6, 1 / 6, 1 / 6])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://coolors.co/264653-2a9d8f-e9c46a", "#264653, #2a9d8f, #e9c46a"),
        ('["#264653", "2a9d8f"]', "#264653, #2a9d8f"),
        ('[{"hex": "#264653", "weight": 3}, {"hex": "#2a9d8f", "weight": 1.5}]', "#264653:2, #2a9d8f"),
    ],
)
def test_text_the_widget_leaves_to_the_server_becomes_a_hex_list(text, expected):
    reply = routes.parse_text(text)
    assert reply.status == 200 and reply.body["text"] == expected
    assert Palette.parse(reply.body["text"]).equals(Palette.parse(text))


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("#e63946, oops", '"oops" is not a colour'),
        ("https://coolors.co/264653-zzzzzz", '"zzzzzz" is not a colour'),
        ('[{"hex": "#fff", "weight": -1}]', "JSON palette item 0: weight -1 must be finite and >= 0"),
        ("", "the palette is empty"),
        (12, '"text" must be a string of palette text, got int'),
    ],
)
def test_bad_text_is_a_400_naming_the_token(text, needle):
    reply = routes.parse_text(text)
    assert reply.status == 400 and needle in reply.body["error"]


def test_every_read_format_through_parse_file():
    p = Palette.parse("#264653, #2a9d8f, #e9c46a")
    cases = {
        "a.gpl": GPL,
        "b.pal": JASC,
        "c.ase": F.encode(p, "ase"),
        "d.aco": aco_v1([(38, 70, 83), (42, 157, 143)]),
        "e.hex": b"264653\n2a9d8f\ne9c46a\n",
        "f.txt": b"#e63946:2\n#f1faee\n",
        "g.json": F.encode(Palette.parse(SPEC_TEXT), "json"),
        "H.GPL": GPL,
    }
    expected = {
        "a.gpl": "#e63946, #f1faee, #1d3557",
        "b.pal": "#ff0000, #0000ff",
        "c.ase": "#264653, #2a9d8f, #e9c46a",
        "d.aco": "#264653, #2a9d8f",
        "e.hex": "#264653, #2a9d8f, #e9c46a",
        "f.txt": "#e63946:2, #f1faee",
        "g.json": SPEC_TEXT.replace("#e63946:2", "#e63946:4").replace("#f1faee", "#f1faee:2").replace(":0.5", ""),
        "H.GPL": "#e63946, #f1faee, #1d3557",
    }
    for name, data in cases.items():
        reply = routes.parse_file(data, name)
        assert reply.status == 200, (name, reply.body)
        assert reply.body["text"] == expected[name], name


@pytest.mark.parametrize(
    ("data", "name", "needle"),
    [
        (b"not a palette", "x.gpl", 'x.gpl: line 1: "not a palette": expected the header "GIMP Palette"'),
        (b"ASEF\x00\x01\x00\x00\x00\x00\x00\x05", "x.ase", "x.ase"),
        (b"\x00\x01\x00\x09", "x.aco", "x.aco"),
        (b"\xff\xfe\x00", "x.hex", "invalid UTF-8"),
        (GPL, "x.png", 'x.png: unknown palette extension ".png": expected one of .gpl, .pal, .ase, .aco, .hex'),
        (GPL, "noextension", 'unknown palette extension "(none)"'),
        (b"", "empty.gpl", "empty.gpl"),
    ],
)
def test_bad_files_are_a_400_naming_the_file_and_problem(data, name, needle):
    reply = routes.parse_file(data, name)
    assert reply.status == 400
    assert needle in reply.body["error"]


def test_truncated_binary_names_a_byte_offset():
    data = F.encode(Palette.parse("#264653, #2a9d8f"), "ase")[:-7]
    reply = routes.parse_file(data, "cut.ase")
    assert reply.status == 400 and re.search(r"cut.ase: .*(offset|byte) [0-9]+", reply.body["error"]), reply.body


def test_client_paths_are_reduced_to_a_name():
    assert routes.clean_filename("../../etc/x.gpl") == "x.gpl"
    assert routes.clean_filename("C:\\Users\\me\\y.ase") == "y.ase"
    reply = routes.parse_file(b"bad", "/tmp/secret/dir/z.gpl")
    assert reply.body["error"].startswith("z.gpl:")


def test_over_the_limit_is_413():
    reply = routes.parse_file(b" " * (LIMIT + 1), "big.gpl")
    assert reply.status == 413 and "big.gpl is larger than 10000000 bytes" in reply.body["error"]


def test_parse_request_dispatch():
    ok = routes.parse_request(json.dumps({"text": SPEC_TEXT}).encode(), "application/json", None)
    assert ok.status == 200 and ok.body["text"] == "#e63946:4, #f1faee:2, #1d3557"  # relative to the smallest
    # A .json file sent with its browser MIME type is still a file because the filename says so.
    as_file = routes.parse_request(b'["#000", "#fff"]', "application/json", "p.json")
    assert as_file.status == 200 and as_file.body["text"] == "#000000, #ffffff"
    not_json = routes.parse_request(b"#fff", "text/plain", None)
    assert not_json.status == 400 and "not JSON" in not_json.body["error"] and "?filename=" in not_json.body["error"]
    no_text = routes.parse_request(b'{"palette": "#fff"}', "application/json", None)
    assert no_text.status == 400 and '{"text"' in no_text.body["error"]
    multipart = routes.parse_request(b"--x\r\n", "multipart/form-data", "a.gpl")
    assert multipart.status == 400 and "--data-binary" in multipart.body["error"]


BIG = "9" * 5000
DEEP = b"[" * 200_000 + b"]" * 200_000


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (json.dumps({"text": f"#fff:{BIG}"}).encode(), "is too large: weights must be finite"),
        (json.dumps({"text": f'[{{"hex": "#fff", "weight": {BIG}}}]'}).encode(), "(5000 digits) is too large"),
        (f'{{"text": "#fff", "n": {BIG}}}'.encode(), "not usable JSON: the number"),
        (DEEP, "not usable JSON: it is nested too deeply"),
        (b'{"text": ' + DEEP + b"}", "nested too deeply"),
        (json.dumps({"text": "[" * 200_000}).encode(), "nested too deeply"),
    ],
)
def test_huge_numbers_and_deep_nesting_are_a_400(body, needle):
    reply = routes.parse_request(body, "application/json", None)
    assert reply.status == 400 and needle in reply.body["error"], reply.body
    assert len(reply.body["error"]) < 400


@pytest.mark.parametrize(
    ("data", "name", "needle"),
    [
        (f"GIMP Palette\n{BIG} 0 0\n".encode(), "big.gpl", 'big.gpl: line 2: RGB value "9999'),
        (f"JASC-PAL\n0100\n{BIG}\n".encode(), "big.pal", 'big.pal: line 3: "9999'),
        (f"#fff:{BIG}\n".encode(), "big.txt", "is too large"),
        (f'[{{"hex": "#fff", "weight": {BIG}}}]'.encode(), "big.json", "(5000 digits) is too large"),
        (json.dumps(["#fff"] * 20_000).encode(), "deck.json", "20000 colours: a palette holds 1 to 16384"),
    ],
)
def test_huge_numbers_in_files_are_a_400(data, name, needle):
    reply = routes.parse_file(data, name)
    assert reply.status == 400 and needle in reply.body["error"], reply.body
    assert len(reply.body["error"]) < 400


def test_files_over_256_colours_give_the_widget_the_heaviest_256_with_a_note(caplog):
    rows = [(i % 256, i // 256, 0) for i in range(300)]
    gpl = b"GIMP Palette\n" + b"".join(b"%d %d %d\n" % rgb for rgb in rows)
    with caplog.at_level("INFO", logger=routes.log.name):
        reply = routes.parse_file(gpl, "deck.gpl")
    assert reply.status == 200
    assert reply.body["count"] == 256 and reply.body["total"] == 300
    assert "deck.gpl has 300 colours" in reply.body["note"] and "kept the first 256" in reply.body["note"]
    assert "deck.gpl has 300 colours" in caplog.text
    kept = Palette.parse(reply.body["text"])  # the widget's text stays within palette text's 256 colours
    assert kept.hex == ["#{:02x}{:02x}{:02x}".format(*rgb) for rgb in rows[:256]]
    # with weights (a JSON file), the heaviest are kept, in file order
    weighted = [{"hex": "#{:02x}{:02x}{:02x}".format(*rgb), "weight": 1 + (i % 3 == 0)} for i, rgb in enumerate(rows)]
    reply = routes.parse_file(json.dumps(weighted).encode(), "w.json")
    assert reply.status == 200 and reply.body["count"] == 256 and "kept the heaviest 256" in reply.body["note"]
    heavy = [c["hex"] for c in weighted if c["weight"] == 2]  # 100 of them
    light = [c["hex"] for c in weighted if c["weight"] == 1]
    got = [c["hex"] for c in reply.body["colors"]]
    assert set(got) == set(heavy) | set(light[:156])  # all heavy ones, then the earliest light ones
    assert got == [c["hex"] for c in weighted if c["hex"] in set(got)]  # in file order
    small = routes.parse_file(GPL, "t.gpl")
    assert "note" not in small.body and "total" not in small.body


class Stream:
    """Stands in for aiohttp's StreamReader: yields chunks and counts how many were consumed."""

    def __init__(self, chunks):
        self.chunks, self.consumed = chunks, 0

    async def iter_any(self):
        for c in self.chunks:
            self.consumed += 1
            yield c


def test_read_body_limits():
    small = Stream([b"ab", b"cd"])
    assert asyncio.run(routes.read_body(small, 4, limit=4)) == b"abcd"
    declared = Stream([b"x"])
    assert asyncio.run(routes.read_body(declared, 5, limit=4)) is None
    assert declared.consumed == 0, "a declared length over the limit must be refused before reading"
    endless = Stream([b"abc"] * 1000)
    assert asyncio.run(routes.read_body(endless, None, limit=10)) is None
    assert endless.consumed == 4, "reading must stop at the first chunk past the limit"


def test_unexpected_failures_are_a_json_500(monkeypatch):
    def boom(*args):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(routes, "parse_request", boom)
    reply = asyncio.run(routes.reply_to(Stream([b"{}"]), 2, "application/json", None))
    assert reply.status == 500 and "RuntimeError: disk on fire" in reply.body["error"]


def test_importing_the_module_registers_nothing_without_comfyui():
    class Routes:
        def __init__(self):
            self.added = []

        def post(self, path):
            return lambda handler: self.added.append((path, handler))

    r = Routes()
    routes.register(r)
    assert r.added == [("/palette_control/parse", routes.handle_parse)]


# --------------------------------------------------------------------------------------------------
# The aiohttp handler (aiohttp's test client; ComfyUI uses aiohttp too)


def run_client(check):
    aiohttp = pytest.importorskip("aiohttp")
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    async def main():
        table = web.RouteTableDef()
        routes.register(table)
        app = web.Application(client_max_size=100 * 1024 * 1024)  # ComfyUI's default upload limit
        app.add_routes(table)
        async with TestClient(TestServer(app)) as client:
            await check(client, aiohttp)

    asyncio.run(main())


def test_handler_contract():
    async def check(client, aiohttp):
        r = await client.post(routes.ROUTE, json={"text": "https://coolors.co/264653-2a9d8f"})
        assert r.status == 200 and (await r.json())["text"] == "#264653, #2a9d8f"
        r = await client.post(routes.ROUTE, params={"filename": "t.gpl"}, data=GPL)
        assert r.status == 200 and (await r.json())["count"] == 3
        r = await client.post(routes.ROUTE, params={"filename": "t.gpl"}, data=b"GIMP Palette\n1 2\n")
        body = await r.json()
        assert r.status == 400 and r.content_type == "application/json"
        assert body["error"].startswith('t.gpl: line 2: "1 2" is not a colour row')
        r = await client.post(routes.ROUTE, data=b"\x00garbage")
        assert r.status == 400 and "not JSON" in (await r.json())["error"]

    run_client(check)


def test_handler_answers_hostile_json_with_a_400():
    async def check(client, aiohttp):
        r = await client.post(routes.ROUTE, data=DEEP, headers={"Content-Type": "application/json"})
        assert r.status == 400 and "nested too deeply" in (await r.json())["error"]
        body = f'{{"text": "#fff", "n": {BIG}}}'.encode()
        r = await client.post(routes.ROUTE, data=body, headers={"Content-Type": "application/json"})
        assert r.status == 400 and "(5000 digits) is too large" in (await r.json())["error"]

    run_client(check)


def test_handler_refuses_bodies_over_10_mb_with_and_without_a_length():
    async def check(client, aiohttp):
        r = await client.post(routes.ROUTE, params={"filename": "big.ase"}, data=b"\x00" * (LIMIT + 1))
        assert r.status == 413
        assert (await r.json())["error"] == "big.ase is larger than 10000000 bytes (10 MB), the limit for palette files"

        async def chunks():  # chunked transfer: no Content-Length to refuse up front
            for _ in range(11):
                yield b"\x00" * 1_000_000

        r = await client.post(routes.ROUTE, params={"filename": "big.aco"}, data=chunks())
        assert r.status == 413 and "big.aco is larger" in (await r.json())["error"]
        # Exactly at the limit is read (and then fails as a palette, not as a size).
        r = await client.post(routes.ROUTE, params={"filename": "max.aco"}, data=b"\x00" * LIMIT)
        assert r.status == 400 and "max.aco" in (await r.json())["error"]

    run_client(check)


# --------------------------------------------------------------------------------------------------
# Inside a real ComfyUI (no checkpoint needed)


def http_post(url: str, data: bytes, content_type: str) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=data, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@requires_comfyui
def test_route_and_widget_files_inside_comfyui(tmp_path):
    from comfyserver import ComfyServer

    with ComfyServer(tmp_path / "comfy") as server:
        for prefix in ("", "/api"):
            status, body = http_post(
                f"{server.url}{prefix}/palette_control/parse",
                json.dumps({"text": "coolors.co/264653-2a9d8f"}).encode(),
                "application/json",
            )
            assert (status, body["text"]) == (200, "#264653, #2a9d8f")
        status, body = http_post(f"{server.url}/palette_control/parse?filename=p.gpl", GPL, "application/octet-stream")
        assert status == 200 and body["text"] == "#e63946, #f1faee, #1d3557"
        status, body = http_post(f"{server.url}/palette_control/parse?filename=p.ase", b"ASEF\x00", "x/y")
        assert status == 400 and body["error"].startswith("p.ase")
        status, body = http_post(
            f"{server.url}/palette_control/parse?filename=p.gpl", b" " * (LIMIT + 1), "application/octet-stream"
        )
        assert status == 413 and "larger than 10000000 bytes" in body["error"]
        status, body = http_post(f"{server.url}/palette_control/parse", DEEP, "application/json")
        assert status == 400 and "nested too deeply" in body["error"]
        rows = b"".join(b"%d %d 0\n" % (i % 256, i // 256) for i in range(300))
        status, body = http_post(
            f"{server.url}/palette_control/parse?filename=deck.gpl", b"GIMP Palette\n" + rows, "x/y"
        )
        assert status == 200 and (body["count"], body["total"]) == (256, 300) and "deck.gpl has 300" in body["note"]
        # A huge weight in the Palette node's text is a validation error naming it, before anything runs.
        prompt = {
            "1": {"class_type": "PaletteInput", "inputs": {"palette": f'[{{"hex": "#fff", "weight": {BIG}}}]'}},
            "2": {"class_type": "PalettePreview", "inputs": {"palette": ["1", 0]}},
            "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
        }
        status, body = http_post(f"{server.url}/prompt", json.dumps({"prompt": prompt}).encode(), "application/json")
        assert status == 400 and "(5000 digits) is too large" in json.dumps(body["node_errors"]["1"]), body
        # The server is still fine after all that, and serves the widget's ES modules.
        assert server.get("/object_info/PaletteInput")["PaletteInput"]["input"]["required"]["palette"][0] == "STRING"
        extensions = server.get("/extensions")
        ours = sorted(e for e in extensions if "palette-control" in e)
        assert ours == ["/extensions/palette-control/palette_text.js", "/extensions/palette-control/palette_widget.js"]
        with urllib.request.urlopen(server.url + ours[0], timeout=30) as r:
            assert "export function parsePalette" in r.read().decode()
