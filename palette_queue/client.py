"""A small client for ComfyUI's HTTP and websocket API (routes as in ComfyUI's server.py).

Connection trouble of any kind (refused, reset, timed out, a 502/503/504 from a proxy, the websocket
closing) is raised as ServerUnavailable, which the runner retries with backoff; a 400 from
``POST /prompt`` is PromptRejected, and a 200 with ``node_errors`` (ComfyUI queued the prompt without
the outputs that failed validation) PromptPartlyRejected: the job fails, the batch goes on. An answer
that no ComfyUI gives (an HTML page, JSON of another shape, a missing route) is NotComfyUI, at once and
never retried; anything else is ServerError.
"""

from __future__ import annotations

import http.client
import json
import logging
import mimetypes
import os
import re
import types
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterable
from pathlib import Path

from palette_core.image_file import read_regular

from .errors import (
    MissingDependency,
    NotComfyUI,
    PromptPartlyRejected,
    PromptRejected,
    QueueInputError,
    ServerError,
    ServerUnavailable,
)
from .state import write_atomic

log = logging.getLogger(__name__)

RETRY_STATUS = (502, 503, 504)
# websocket-client is optional (pyproject extra "queue"): only a run that queues follows the websocket.
WEBSOCKET_INSTALL = "pip install 'websocket-client>=1.6' (or, in the pack's folder, pip install '.[queue]')"
# Events that end a prompt; ``executing`` with node None is sent after the history entry is written.
END_EVENTS = ("execution_success", "execution_error", "execution_interrupted")


def format_rejection(body: dict, headline: str = "prompt rejected") -> str:
    """A ``POST /prompt`` answer's errors as readable lines: the error (or ``headline``), then each node's errors."""
    err = body.get("error") if isinstance(body.get("error"), dict) else {}
    lines = [f"{err.get('message', headline)}" + (f": {err['details']}" if err.get("details") else "")]
    node_errors = body.get("node_errors")
    for nid, node in (node_errors if isinstance(node_errors, dict) else {}).items():
        node = node if isinstance(node, dict) else {}
        errors = node.get("errors") if isinstance(node.get("errors"), list) else []
        for e in (e for e in errors if isinstance(e, dict)):
            detail = f": {e['details']}" if e.get("details") else ""
            lines.append(f"  node {nid} ({node.get('class_type', '?')}): {e.get('message', e.get('type'))}{detail}")
    return "\n".join(lines)


def describe_body(body: bytes, content_type: str) -> str:
    """A non-ComfyUI answer in a few words: its content type and its HTML title or first characters."""
    text = body[:4096].decode("utf-8", "replace")
    title = re.search(r"<title[^>]*>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
    snippet = title.group(1) if title else re.sub(r"<[^>]*>", " ", text)
    snippet = "".join(c for c in " ".join(snippet.split()) if c.isprintable())[:80]
    kind = content_type.split(";")[0].strip() or "no content type"
    return f"{kind} {snippet!r}" if snippet else f"{kind}, empty"


def _is_stats(data: object) -> bool:
    """``GET /system_stats`` as ComfyUI answers it: ``{"system": {...}, "devices": [...]}``."""
    return isinstance(data, dict) and isinstance(data.get("system"), dict) and isinstance(data.get("devices"), list)


# ComfyUI 0.3.57 and later interrupt only the prompt named in POST /interrupt; earlier ones ignore the id
# and interrupt whatever runs, perhaps another user's prompt, so they are never sent one.
TARGETED_INTERRUPT = (0, 3, 57)


def normalize_url(url: str) -> str:
    """A server address as the state file records it: ``http://`` added when missing, no trailing slash."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise QueueInputError(f"server URL {url!r}: expected http://host:port")
    return url


def version_tuple(version: object) -> tuple[int, ...] | None:
    """``"0.3.64"`` as ``(0, 3, 64)``; None when it is not dotted numbers."""
    match = re.fullmatch(r"v?(\d+(?:\.\d+)*)", str(version).strip())
    return tuple(int(n) for n in match.group(1).split(".")) if match else None


class ComfyClient:
    """HTTP calls and one websocket to a ComfyUI server, under one client id."""

    def __init__(self, url: str, client_id: str, timeout: float = 30.0):
        url = normalize_url(url)
        parts = urllib.parse.urlsplit(url)
        self.url = url
        self.version: str | None = None  # comfyui_version from /system_stats, once checked
        self.ws_url = (
            "wss" if parts.scheme == "https" else "ws"
        ) + f"://{parts.netloc}{parts.path}/ws?clientId={client_id}"
        self.client_id = client_id
        self.timeout = timeout
        self._ws = None

    # ----------------------------------------------------------------------------------------------
    # HTTP

    def _open(self, req: urllib.request.Request | str, timeout: float | None = None) -> tuple[bytes, str]:
        """The body and content type of a request; HTTPError for an error status, ServerUnavailable when gone."""
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as r:  # noqa: S310 (http(s) only)
                return r.read(), r.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            if e.code in RETRY_STATUS:
                raise ServerUnavailable(f"{self.url} answered {e.code} {e.reason}") from e
            raise
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            raise ServerUnavailable(f"cannot reach {self.url}: {getattr(e, 'reason', e)}") from e

    def _fetch(self, req: urllib.request.Request | str, timeout: float | None = None) -> bytes:
        """The body of a request (see :meth:`_open`)."""
        return self._open(req, timeout)[0]

    def not_comfyui(self, what: str, answer: str) -> NotComfyUI:
        """The error for an answer no ComfyUI gives: names the address and what came back instead."""
        return NotComfyUI(
            f"not a ComfyUI server at {self.url}: {what} answered {answer}; check --server (or $COMFYUI_URL)"
        )

    @staticmethod
    def _error_body(e: urllib.error.HTTPError) -> tuple[bytes, str]:
        try:
            return e.read(), e.headers.get("Content-Type", "") if e.headers else ""
        except (OSError, http.client.HTTPException):
            return b"", ""

    def _json(self, what: str, body: bytes, content_type: str):
        """``body`` parsed as JSON; NotComfyUI (naming ``what``) when it is not JSON."""
        try:
            return json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise self.not_comfyui(what, describe_body(body, content_type)) from None

    def get_json(self, path: str):
        """``GET path`` as JSON (NotComfyUI when the answer is not JSON or the route does not exist)."""
        try:
            body, ctype = self._open(self.url + path)
        except urllib.error.HTTPError as e:
            if e.code in (404, 405):
                raise self.not_comfyui(f"GET {path}", f"{e.code} {e.reason}") from None
            raise ServerError(f"GET {path}: {e.code} {e.reason}") from e
        return self._json(f"GET {path}", body, ctype)

    def check_server(self) -> dict:
        """``GET /system_stats``: the server's stats when it is ComfyUI, NotComfyUI at once when it is not."""
        stats = self.get_json("/system_stats")
        if not _is_stats(stats):
            raise self.not_comfyui("GET /system_stats", "JSON without ComfyUI's 'system' and 'devices'")
        version = stats["system"].get("comfyui_version")
        self.version = str(version) if version is not None else None
        return stats

    @property
    def targeted_interrupt(self) -> bool:
        """Whether the server interrupts only the prompt named in ``POST /interrupt`` (ComfyUI 0.3.57+)."""
        version = version_tuple(self.version) if self.version is not None else None
        return version is not None and version >= TARGETED_INTERRUPT

    def output_classes(self, class_types: Iterable[str]) -> set[str]:
        """Which of ``class_types`` are output nodes (``GET /object_info/<class>``: ``output_node``).

        Classes the server does not know are left out: a prompt using one is rejected with a clear error.
        """
        outputs = set()
        for name in sorted(set(class_types)):
            info = self.get_json(f"/object_info/{urllib.parse.quote(name, safe='')}")
            if not isinstance(info, dict) or not isinstance(info.get(name, {}), dict):
                raise self.not_comfyui(f"GET /object_info/{name}", "JSON without the node's description")
            if info.get(name, {}).get("output_node") is True:
                outputs.add(name)
        return outputs

    def queue_ids(self) -> set[str]:
        """Prompt ids running or waiting in the server's queue."""
        q = self.get_json("/queue")
        parts = [q.get(part) for part in ("queue_running", "queue_pending")] if isinstance(q, dict) else [None]
        items = [item for part in parts if isinstance(part, list) for item in part]
        if not all(isinstance(p, list) for p in parts) or not all(
            isinstance(item, list) and len(item) > 1 and isinstance(item[1], str) for item in items
        ):
            raise self.not_comfyui("GET /queue", "JSON without ComfyUI's queue_running and queue_pending lists")
        return {item[1] for item in items}

    def history(self, prompt_id: str) -> dict | None:
        """The history entry of one prompt, or None while it has none (unfinished, or unknown)."""
        path = f"/history/{urllib.parse.quote(prompt_id)}"
        answer = self.get_json(path)
        entry = answer.get(prompt_id) if isinstance(answer, dict) else None
        if not isinstance(answer, dict) or not (entry is None or isinstance(entry, dict)):
            raise self.not_comfyui(f"GET {path}", "JSON without ComfyUI's history entries")
        return entry

    def submit(self, prompt: dict, prompt_id: str) -> None:
        """``POST /prompt`` with our client id and a prompt id chosen by the caller.

        PromptRejected when the server refuses the prompt (400); PromptPartlyRejected when it queued it but
        dropped the outputs whose nodes failed validation (200 with ``node_errors``): the prompt would save
        only some of its images.
        """
        body = json.dumps({"prompt": prompt, "client_id": self.client_id, "prompt_id": prompt_id}).encode()
        req = urllib.request.Request(self.url + "/prompt", data=body, headers={"Content-Type": "application/json"})
        try:
            data, ctype = self._open(req)
        except urllib.error.HTTPError as e:
            data, ctype = self._error_body(e)
            try:
                parsed = json.loads(data)
            except (json.JSONDecodeError, UnicodeDecodeError):
                parsed = None
            if e.code == 400 and isinstance(parsed, dict) and ("error" in parsed or "node_errors" in parsed):
                raise PromptRejected(format_rejection(parsed)) from None
            if e.code in (400, 404, 405):
                raise self.not_comfyui("POST /prompt", f"{e.code} {e.reason}, {describe_body(data, ctype)}") from None
            raise ServerError(f"POST /prompt: {e.code} {e.reason}, {describe_body(data, ctype)}") from e
        answer = self._json("POST /prompt", data, ctype)
        if not isinstance(answer, dict) or "prompt_id" not in answer:
            raise self.not_comfyui("POST /prompt", "JSON without a prompt_id")
        if answer["prompt_id"] != prompt_id:
            raise ServerError(f"POST /prompt: the server ignored our prompt id ({answer['prompt_id']!r})")
        node_errors = answer.get("node_errors")
        if node_errors and not isinstance(node_errors, dict):
            raise self.not_comfyui("POST /prompt", "node_errors that are not an object")
        if node_errors:
            raise PromptPartlyRejected(
                format_rejection(answer, "the server queued the prompt without the outputs that failed validation")
            )

    def cancel(self, prompt_id: str) -> None:
        """Take a prompt off the server: ``POST /queue {"delete": [id]}``, then ``POST /interrupt {"prompt_id": id}``.

        The delete removes it while it waits; the interrupt stops it if it already runs, and only it: it is
        sent only to servers that interrupt the prompt named (ComfyUI 0.3.57+); on older ones a running
        prompt finishes. Either call is harmless when the prompt is not in that state.
        """
        for path, body in (("/queue", {"delete": [prompt_id]}), ("/interrupt", {"prompt_id": prompt_id})):
            if path == "/interrupt" and not self.targeted_interrupt:
                continue
            data = json.dumps(body).encode()
            req = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": "application/json"})
            try:
                self._fetch(req)
            except urllib.error.HTTPError as e:
                raise ServerError(f"POST {path} ({prompt_id}): {e.code} {e.reason}") from e

    def upload(self, local: Path, name: str) -> None:
        """``POST /upload/image`` a local file into the server's input folder as ``name`` (overwriting)."""
        boundary = uuid.uuid4().hex
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="overwrite"\r\n\r\ntrue\r\n'.encode(),
            f'--{boundary}\r\nContent-Disposition: form-data; name="type"\r\n\r\ninput\r\n'.encode(),
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
                f"Content-Type: {ctype}\r\n\r\n"
            ).encode()
            + read_regular(local, "image")
            + b"\r\n",
            f"--{boundary}--\r\n".encode(),
        ]
        req = urllib.request.Request(
            self.url + "/upload/image",
            data=b"".join(parts),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        try:
            data, ctype = self._open(req)
        except urllib.error.HTTPError as e:
            if e.code in (404, 405):
                raise self.not_comfyui("POST /upload/image", f"{e.code} {e.reason}") from None
            raise ServerError(f"uploading {local}: {e.code} {e.reason}") from e
        answer = self._json("POST /upload/image", data, ctype)
        stored = answer.get("name") if isinstance(answer, dict) else None
        if stored != name:
            raise ServerError(f"uploading {local}: the server stored it as {stored!r}, not {name!r}")

    def download(self, image: dict, dest: Path) -> None:
        """``GET /view`` one image into ``dest`` (atomically: a partial download never has the final name)."""
        query = urllib.parse.urlencode({k: image.get(k, "") for k in ("filename", "subfolder", "type")})
        try:
            data = self._fetch(f"{self.url}/view?{query}", timeout=max(self.timeout, 120))
        except urllib.error.HTTPError as e:
            raise ServerError(f"GET /view {image.get('filename')}: {e.code} {e.reason}") from e
        dest.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(dest, data)

    # ----------------------------------------------------------------------------------------------
    # websocket

    def connect(self) -> None:
        """Open the websocket (``/ws?clientId=``) unless it is open; events of our prompts arrive on it."""
        if self._ws is not None:
            return
        websocket = websocket_client()
        try:
            self._ws = websocket.create_connection(self.ws_url, timeout=self.timeout, enable_multithread=False)
        except websocket.WebSocketBadStatusException as e:
            if e.status_code in RETRY_STATUS:
                raise ServerUnavailable(f"{self.url} answered {e.status_code} on the websocket") from e
            raise self.not_comfyui("the websocket /ws", f"{e.status_code} {e.status_message or ''}".strip()) from None
        except (websocket.WebSocketException, OSError) as e:
            raise ServerUnavailable(f"cannot open the websocket {self.ws_url}: {e}") from e

    def close(self) -> None:
        """Close the websocket (it is reopened by the next ``connect``)."""
        if self._ws is not None:
            try:
                self._ws.close(timeout=1)
            except Exception:  # noqa: BLE001 - closing a broken socket may fail in many ways; it is gone either way
                log.debug("websocket close failed", exc_info=True)
            self._ws = None

    def event(self, timeout: float) -> tuple[str, dict] | None:
        """The next JSON event ``(type, data)``; None after ``timeout`` seconds without one."""
        websocket = websocket_client()
        if self._ws is None:
            self.connect()
        self._ws.settimeout(timeout)
        try:
            while True:
                message = self._ws.recv()
                if isinstance(message, bytes):  # binary frames are previews; not used here
                    continue
                try:
                    data = json.loads(message)
                except json.JSONDecodeError:
                    continue
                if isinstance(data, dict) and "type" in data:
                    return data["type"], data.get("data") or {}
        except websocket.WebSocketTimeoutException:
            return None
        except (websocket.WebSocketException, OSError) as e:
            self.close()
            raise ServerUnavailable(f"websocket lost: {e}") from e


def websocket_client() -> types.ModuleType:
    """The websocket-client module (``import websocket``); MissingDependency saying how to install it if absent."""
    try:
        import websocket
    except ImportError as e:
        raise MissingDependency(
            "following the batch's progress on ComfyUI's websocket needs the websocket-client package: "
            f"{WEBSOCKET_INSTALL} (--dry-run works without it)"
        ) from e
    return websocket


def default_server() -> str:
    """``$COMFYUI_URL`` or ComfyUI's default address."""
    return os.environ.get("COMFYUI_URL", "http://127.0.0.1:8188")
