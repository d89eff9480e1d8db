"""The batch queue's HTTP client against a small aiohttp stand-in server: what ComfyUI answers, and what it never does.

ComfyUI's server is aiohttp too; the stand-in answers each route with a fixed status, content type and body
and records the requests, so each test shows which answer leads to which error, and that an address that
is not ComfyUI is reported at once instead of being retried as an outage.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp import web

from palette_queue import cli
from palette_queue.client import ComfyClient
from palette_queue.errors import (
    NotComfyUI,
    PromptPartlyRejected,
    PromptRejected,
    QueueInputError,
    ServerError,
    ServerUnavailable,
)
from palette_queue.state import FAILED, State

NGINX = "<!DOCTYPE html>\n<html><head><title>Welcome to nginx!</title></head>\n<body><h1>It works</h1></body></html>"
STATS = {"system": {"comfyui_version": "0.3.64", "os": "posix"}, "devices": [{"name": "cpu", "type": "cpu"}]}
PREVIEW = {
    "1": {"class_type": "PaletteInput", "inputs": {"palette": "#ff0000"}},
    "2": {"class_type": "PalettePreview", "inputs": {"palette": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "q"}},
    "4": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "second"}},
}
NODE_ERRORS = {
    "4": {
        "errors": [{"type": "value_not_in_list", "message": "Value not in list", "details": "filename_prefix: 'x'"}],
        "dependent_outputs": ["4"],
        "class_type": "SaveImage",
    }
}

Answer = tuple[int, str, str]  # status, content type, body
Route = Callable[[dict], Answer] | Answer


def as_json(data, status: int = 200) -> Answer:
    return status, "application/json; charset=utf-8", json.dumps(data)


def html(status: int = 200, body: str = NGINX) -> Answer:
    return status, "text/html", body


def comfy_routes(**overrides: Route) -> dict[str, Route]:
    """The routes a ComfyUI answers, as a key 'METHOD /path' (a path prefix for object_info and history)."""
    routes: dict[str, Route] = {
        "GET /system_stats": as_json(STATS),
        "GET /object_info/": lambda req: as_json({req["name"]: {"output_node": req["name"] == "SaveImage"}}),
        "GET /queue": as_json({"queue_running": [], "queue_pending": []}),
        "GET /history/": as_json({}),
        "POST /queue": (200, "text/plain", ""),
        "POST /prompt": lambda req: as_json({"prompt_id": req["json"]["prompt_id"], "number": 0, "node_errors": {}}),
    }
    routes.update(overrides)
    return routes


class StandIn:
    """An aiohttp server on 127.0.0.1 in a thread; ``routes`` maps 'METHOD /path' (or a prefix ending in /)."""

    def __init__(self, routes: dict[str, Route], websocket: bool = True):
        self.routes, self.websocket = routes, websocket
        self.requests: list[tuple[str, str, object]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def _route(self, method: str, path: str) -> Route | None:
        exact = self.routes.get(f"{method} {path}")
        if exact is not None:
            return exact
        prefixes = [k for k in self.routes if k.endswith("/") and f"{method} {path}".startswith(k)]
        return self.routes[max(prefixes, key=len)] if prefixes else None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            parsed = json.loads(body) if body else None
        except json.JSONDecodeError:
            parsed = None
        self.requests.append((request.method, request.path, parsed))
        if request.path == "/ws" and self.websocket:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            async for _ in ws:
                pass
            return ws
        route = self._route(request.method, request.path)
        if route is None:
            return web.Response(status=404, text="404: Not Found")
        status, ctype, text = (
            route({"json": parsed, "name": request.path.rsplit("/", 1)[-1]}) if callable(route) else route
        )
        return web.Response(status=status, body=text.encode(), headers={"Content-Type": ctype})

    def __enter__(self) -> StandIn:
        self._thread.start()

        async def start():
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            return site._server.sockets[0].getsockname()[1]

        self.port = asyncio.run_coroutine_threadsafe(start(), self._loop).result(10)
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture
def jobs(tmp_path: Path) -> tuple[Path, Path]:
    workflow = tmp_path / "preview.api.json"
    workflow.write_text(json.dumps(PREVIEW))
    table = tmp_path / "jobs.csv"
    table.write_text("name,palette\nred,#ff0000\n")
    return workflow, table


def test_an_html_server_is_not_comfyui_at_once(tmp_path, jobs, capsys):
    with StandIn({"GET /system_stats": html(), "POST /prompt": html()}) as server:
        args = [*map(str, jobs), "--out", str(tmp_path / "out"), "--server", server.url, "--no-report"]
        assert cli.main([*args, "--retry-timeout", "600"]) == 3  # returns at once: no outage, nothing to wait for
    err = capsys.readouterr().err
    assert (
        f"error: not a ComfyUI server at {server.url}: GET /system_stats answered text/html 'Welcome to nginx!'" in err
    )
    assert "<html" not in err and "<title" not in err and "resume" not in err
    assert server.requests == [("GET", "/system_stats", None)]  # nothing uploaded or queued
    assert [js.status for js in State.load(tmp_path / "out").jobs.values()] == ["pending"]


@pytest.mark.parametrize(
    ("routes", "call", "error", "message"),
    [
        ({"GET /system_stats": as_json({"status": "ok"})}, "check", NotComfyUI, "JSON without ComfyUI's 'system'"),
        ({"GET /system_stats": as_json([1, 2])}, "check", NotComfyUI, "JSON without ComfyUI's 'system'"),
        ({"GET /system_stats": (404, "text/plain", "nope")}, "check", NotComfyUI, "GET /system_stats answered 404"),
        ({"GET /system_stats": html(503)}, "check", ServerUnavailable, "answered 503"),
        ({"GET /system_stats": (200, "text/plain", "\x00\x1b[31mok")}, "check", NotComfyUI, "text/plain '[31mok'"),
        ({"GET /queue": as_json([])}, "queue", NotComfyUI, "GET /queue answered JSON without ComfyUI's queue"),
        ({"GET /queue": as_json({"queue_running": [[0]], "queue_pending": []})}, "queue", NotComfyUI, "GET /queue"),
        ({"GET /history/": html()}, "history", NotComfyUI, "GET /history/p1 answered text/html 'Welcome to nginx!'"),
        ({"GET /history/": as_json({"p1": "done"})}, "history", NotComfyUI, "JSON without ComfyUI's history"),
        ({"GET /object_info/": as_json(["SaveImage"])}, "outputs", NotComfyUI, "GET /object_info/SaveImage"),
        ({"POST /prompt": html()}, "submit", NotComfyUI, "POST /prompt answered text/html 'Welcome to nginx!'"),
        ({"POST /prompt": html(400)}, "submit", NotComfyUI, "POST /prompt answered 400 Bad Request, text/html"),
        ({"POST /prompt": html(405)}, "submit", NotComfyUI, "POST /prompt answered 405 Method Not Allowed"),
        (
            {"POST /prompt": as_json({"ok": True})},
            "submit",
            NotComfyUI,
            "POST /prompt answered JSON without a prompt_id",
        ),
        ({"POST /prompt": as_json({"prompt_id": "other"})}, "submit", ServerError, "ignored our prompt id ('other')"),
        ({"POST /prompt": html(500, "<h1>500</h1> trouble")}, "submit", ServerError, "500 Internal Server Error"),
        ({"POST /prompt": html(502)}, "submit", ServerUnavailable, "answered 502"),
        (
            {
                "POST /prompt": as_json(
                    {"error": {"message": "Prompt outputs failed validation"}, "node_errors": {}}, 400
                )
            },
            "submit",
            PromptRejected,
            "Prompt outputs failed validation",
        ),
        (
            {"POST /prompt": lambda r: as_json({"prompt_id": r["json"]["prompt_id"], "node_errors": NODE_ERRORS})},
            "submit",
            PromptPartlyRejected,
            "without the outputs that failed validation\n  node 4 (SaveImage): Value not in list: filename_prefix: 'x'",
        ),
        (
            {"POST /prompt": lambda r: as_json({"prompt_id": "p1", "node_errors": [1]})},
            "submit",
            NotComfyUI,
            "node_errors",
        ),
    ],
)
def test_answers_no_comfyui_gives_are_named_and_not_retried(routes, call, error, message):
    with StandIn(comfy_routes(**routes), websocket=False) as server:
        client = ComfyClient(server.url, "cid", timeout=10)
        act = {
            "check": client.check_server,
            "queue": client.queue_ids,
            "history": lambda: client.history("p1"),
            "outputs": lambda: client.output_classes(["SaveImage"]),
            "submit": lambda: client.submit(PREVIEW, "p1"),
        }[call]
        with pytest.raises(error) as caught:
            act()
    text = str(caught.value)
    assert message in text
    assert "<html" not in text and "<h1>" not in text and "\x1b" not in text and "\x00" not in text
    if error is NotComfyUI:
        assert text.startswith(f"not a ComfyUI server at {server.url}: ")
    if error is PromptPartlyRejected:
        assert isinstance(caught.value, PromptRejected)  # the job fails; the batch goes on


def test_a_comfyui_answer_is_read_as_such():
    queue = {"queue_running": [[3, "a", {}, {}, ["9"]]], "queue_pending": [[4, "b", {}, {}, ["9"]]]}
    entry = {"prompt": [3, "a", {}, {}, ["9"]], "outputs": {}, "status": {"status_str": "success"}}
    with StandIn(comfy_routes(**{"GET /queue": as_json(queue), "GET /history/": as_json({"a": entry})})) as server:
        client = ComfyClient(server.url, "cid", timeout=10)
        assert client.check_server() == STATS
        assert client.output_classes(["SaveImage", "PaletteInput", "SaveImage"]) == {"SaveImage"}
        assert client.queue_ids() == {"a", "b"}
        assert client.history("a") == entry
        client.submit(PREVIEW, "p1")
        client.connect()
        client.close()
    assert ("GET", "/object_info/PaletteInput", None) in server.requests
    assert server.requests[-2][:2] == ("POST", "/prompt") and server.requests[-1][:2] == ("GET", "/ws")


def test_a_websocket_route_that_is_not_comfyuis_is_not_an_outage():
    with StandIn(comfy_routes(), websocket=False) as server:
        client = ComfyClient(server.url, "cid", timeout=10)
        with pytest.raises(NotComfyUI, match="the websocket /ws answered 404"):
            client.connect()


def test_a_prompt_queued_without_its_invalid_output_fails_the_job_and_leaves_the_queue(tmp_path, jobs, capsys):
    """ComfyUI's 200 with node_errors: the job fails with the server's message and is taken off the queue."""

    queued = {}

    def partly(req):
        queued[req["json"]["prompt_id"]] = req["json"]["prompt"]
        return as_json({"prompt_id": req["json"]["prompt_id"], "number": 0, "node_errors": NODE_ERRORS})

    def history(req):  # what ComfyUI would record had it run the prompt: output 3 only, no images
        prompt = queued.get(req["name"])
        entry = {"prompt": [0, req["name"], prompt, {}, ["3"]], "outputs": {}, "status": {"status_str": "success"}}
        return as_json({req["name"]: entry} if prompt else {})

    out = tmp_path / "out"
    with StandIn(comfy_routes(**{"POST /prompt": partly, "GET /history/": history})) as server:
        args = [*map(str, jobs), "--out", str(out), "--server", server.url, "--no-report"]
        assert cli.main(args) == 1
    js = next(iter(State.load(out).jobs.values()))
    assert js.status == FAILED and js.files == []
    assert js.error.startswith("the server dropped part of the workflow: the server queued the prompt without")
    assert "node 4 (SaveImage): Value not in list" in js.error
    assert ("POST", "/queue", {"delete": [js.prompt_id]}) in server.requests
    assert "0 done, 1 failed" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("version", "interrupts"),
    [("0.3.64", True), ("0.3.57", True), ("v1.0", True), ("0.3.56", False), ("nightly", False), (None, False)],
)
def test_cancel_interrupts_only_on_servers_that_interrupt_the_prompt_named(version, interrupts):
    """ComfyUI before 0.3.57 ignores the prompt id of POST /interrupt and would stop whatever runs."""
    stats = {"system": {"comfyui_version": version} if version else {}, "devices": []}
    routes = comfy_routes(**{"GET /system_stats": as_json(stats), "POST /interrupt": (200, "text/plain", "")})
    with StandIn(routes, websocket=False) as server:
        client = ComfyClient(server.url, "cid", timeout=10)
        client.check_server()
        client.cancel("p1")
    posts = [r for r in server.requests if r[0] == "POST"]
    assert posts == [("POST", "/queue", {"delete": ["p1"]})] + (
        [("POST", "/interrupt", {"prompt_id": "p1"})] if interrupts else []
    )


def test_server_addresses_are_normalised():
    from palette_queue.client import normalize_url, version_tuple

    assert normalize_url(" 127.0.0.1:8188/ ") == "http://127.0.0.1:8188"
    assert normalize_url("https://box/comfy/") == "https://box/comfy"
    with pytest.raises(QueueInputError, match="expected http://host:port"):
        normalize_url("ftp://box")
    assert version_tuple("0.3.64") == (0, 3, 64) and version_tuple("v0.4") == (0, 4) and version_tuple("x") is None
