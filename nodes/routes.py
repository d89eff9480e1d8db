"""The palette widget's HTTP route: palette text or a palette file in, canonical palette text out (docs/design.md §5).

``POST /palette_control/parse`` (also under ``/api``), two forms:

* JSON body ``{"text": "<any docs/design.md §5 text: hex list, JSON list, Coolors URL>"}``;
* a palette file's bytes as the body with ``?filename=<name>.gpl`` (``.pal``, ``.ase``, ``.aco``,
  ``.hex``, ``.txt``, ``.json``): the extension picks the reader in palette_core.formats.

200 → ``{"text": "<canonical hex-list text>", "colors": [{"hex", "weight"}], "count": n}``;
400 → ``{"error": "<what is wrong, naming the token, line or byte offset>"}``; 413 when the body is
over 10 MB (formats.MAX_FILE_BYTES). At most that many bytes are read into memory and nothing is
written to disk. The request logic (:func:`parse_request`, :func:`read_body`) needs no server and no
aiohttp; only :func:`handle_parse` and :func:`register` touch aiohttp, imported when called.

Palette files may hold up to 16384 colours, the widget's text 256 (palette text's limit): a larger file
is answered with its 256 heaviest colours (the first 256 when, as in most files, all weigh the same),
plus ``"total": <colours in the file>`` and a ``"note"`` saying so, which is also logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
from dataclasses import dataclass

from ..palette_core import formats
from ..palette_core.errors import PaletteError, PaletteFormatError
from ..palette_core.palette import MAX_COLORS, Palette, json_int, quote

log = logging.getLogger(__name__)

ROUTE = "/palette_control/parse"
MAX_BODY_BYTES = formats.MAX_FILE_BYTES
_NAME_CHARS = 120


@dataclass(frozen=True)
class Reply:
    """An HTTP status and the JSON body to send with it."""

    status: int
    body: dict


def error(status: int, message: str) -> Reply:
    """A JSON error reply ``{"error": message}``."""
    return Reply(status, {"error": message})


def palette_reply(palette: Palette) -> Reply:
    """200 with the palette's canonical text (what the widget stores) and its colours and weights."""
    return Reply(200, {"text": palette.to_text(), "colors": palette.to_json(), "count": len(palette)})


def widget_reply(palette: Palette, name: str) -> Reply:
    """:func:`palette_reply` for a file, reduced to the widget's 256 heaviest colours with a note if larger."""
    if len(palette) <= MAX_COLORS:
        return palette_reply(palette)
    which = "the first" if palette.is_uniform else "the heaviest"
    note = (
        f"{name} has {len(palette)} colours and palette text holds at most {MAX_COLORS}: "
        f"kept {which} {MAX_COLORS} (convert the whole file with the palette command, e.g. to .json)"
    )
    log.info("palette_control: %s", note)
    reply = palette_reply(palette.heaviest(MAX_COLORS))
    reply.body.update(total=len(palette), note=note)
    return reply


def too_large(what: str) -> Reply:
    """413: ``what`` is over the size limit for palette uploads."""
    return error(413, f"{what} is larger than {MAX_BODY_BYTES} bytes (10 MB), the limit for palette files")


def clean_filename(name: str) -> str:
    """The last path component of a client-supplied name, shortened, for extensions and messages only."""
    base = re.split(r"[/\\]", name)[-1].strip()
    return base[-_NAME_CHARS:] or "(no name)"


def parse_text(text: object) -> Reply:
    """Parse docs/design.md §5 palette text (hex list with weights, JSON list or Coolors URL)."""
    if not isinstance(text, str):
        return error(400, f'"text" must be a string of palette text, got {type(text).__name__}')
    try:
        return palette_reply(Palette.parse(text))
    except PaletteError as e:
        return error(400, str(e))


def parse_file(data: bytes, filename: str) -> Reply:
    """Parse the bytes of a palette file; its extension picks the reader in palette_core.formats."""
    name = clean_filename(filename)
    suffix = name[name.rfind(".") :].lower() if "." in name else ""
    fmt = formats.READ_FORMATS.get(suffix)
    if fmt is None:
        return error(
            400,
            f"{name}: unknown palette extension {quote(suffix or '(none)')}: "
            f"expected one of {', '.join(formats.READ_FORMATS)}",
        )
    if len(data) > MAX_BODY_BYTES:
        return too_large(name)
    try:
        return widget_reply(formats.decode(data, fmt, name), name)
    except PaletteError as e:
        return error(400, str(e))


def parse_request(body: bytes, content_type: str, filename: str | None) -> Reply:
    """The reply to one request: a file upload when ``filename`` is given, else a JSON ``{"text"}`` body."""
    if content_type.startswith("multipart/"):
        return error(
            400,
            "multipart uploads are not read: send the file's bytes as the request body with "
            "?filename=<name> (e.g. curl --data-binary @palette.gpl '.../palette_control/parse?filename=palette.gpl')",
        )
    if filename is not None:
        return parse_file(body, filename)
    expected = 'expected {"text": "<palette text>"}, or a palette file\'s bytes with ?filename=<name>'
    try:
        payload = json.loads(body.decode("utf-8"), parse_int=json_int)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        return error(400, f"the request body is not JSON ({e}): {expected}")
    except RecursionError:  # json.loads recurses once per nesting level
        return error(400, f"the request body is not usable JSON: it is nested too deeply: {expected}")
    except PaletteFormatError as e:  # an integer literal too long to convert
        return error(400, f"the request body is not usable JSON: {e}: {expected}")
    if not isinstance(payload, dict) or "text" not in payload:
        return error(400, 'expected a JSON object {"text": "<palette text>"}')
    return parse_text(payload["text"])


async def read_body(stream, declared_length: int | None, limit: int = MAX_BODY_BYTES) -> bytes | None:
    """Read a request body of at most ``limit`` bytes from an aiohttp ``StreamReader``; None if it is longer.

    A declared Content-Length over the limit is refused before reading; otherwise reading stops at the
    first byte past the limit, so a lying or chunked client cannot make the server hold more.
    """
    if declared_length is not None and declared_length > limit:
        return None
    chunks, total = [], 0
    async for chunk in stream.iter_any():
        total += len(chunk)
        if total > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def reply_to(stream, declared_length: int | None, content_type: str, filename: str | None) -> Reply:
    """Read the body (size-limited) and parse it off the event loop; unexpected failures become a JSON 500."""
    try:
        body = await read_body(stream, declared_length)
        if body is None:
            return too_large(clean_filename(filename) if filename is not None else "the request body")
        return await asyncio.to_thread(parse_request, body, content_type, filename)
    except Exception as e:  # the route must answer, never take the server down: log it, tell the client
        log.exception("palette_control: parsing a palette request failed")
        return error(500, f"internal error while reading the palette ({type(e).__name__}: {e}); see the server log")


async def handle_parse(request):
    """aiohttp handler of ``POST /palette_control/parse``."""
    from aiohttp import web

    reply = await reply_to(request.content, request.content_length, request.content_type, request.query.get("filename"))
    return web.json_response(reply.body, status=reply.status)


def register(routes) -> None:
    """Add the route to an aiohttp ``RouteTableDef`` (ComfyUI mirrors it under ``/api``)."""
    routes.post(ROUTE)(handle_parse)


def _register_with_comfyui() -> None:
    """Register on ComfyUI's PromptServer if one exists (main.py creates it before loading custom nodes).

    Only an already imported ``server`` module is consulted: loading the pack without ComfyUI's server
    (tests, scripts) registers nothing and imports nothing.
    """
    server = sys.modules.get("server")
    instance = getattr(getattr(server, "PromptServer", None), "instance", None)
    if instance is not None:
        register(instance.routes)


_register_with_comfyui()
