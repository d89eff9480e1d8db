"""A small client for ComfyUI's HTTP and websocket API (routes as in ComfyUI's server.py).

Connection trouble of any kind (refused, reset, timed out, a 502/503/504 from a proxy, the websocket
closing) is raised as ServerUnavailable, which the runner retries with backoff; a 400 from
``POST /prompt`` is PromptRejected (the job fails, the batch goes on); anything else is ServerError.
"""

from __future__ import annotations

import http.client
import json
import logging
import mimetypes
import os
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

from .errors import PromptRejected, QueueInputError, ServerError, ServerUnavailable
from .state import write_atomic

log = logging.getLogger(__name__)

RETRY_STATUS = (502, 503, 504)
# Events that end a prompt; ``executing`` with node None is sent after the history entry is written.
END_EVENTS = ("execution_success", "execution_error", "execution_interrupted")


def format_rejection(body: dict) -> str:
    """A ``POST /prompt`` 400 body as readable lines: the error, then each node's errors."""
    err = body.get("error") or {}
    lines = [f"{err.get('message', 'prompt rejected')}" + (f": {err['details']}" if err.get("details") else "")]
    for nid, node in (body.get("node_errors") or {}).items():
        for e in node.get("errors", []):
            detail = f": {e['details']}" if e.get("details") else ""
            lines.append(f"  node {nid} ({node.get('class_type', '?')}): {e.get('message', e.get('type'))}{detail}")
    return "\n".join(lines)


class ComfyClient:
    """HTTP calls and one websocket to a ComfyUI server, under one client id."""

    def __init__(self, url: str, client_id: str, timeout: float = 30.0):
        url = url.rstrip("/")
        if "://" not in url:
            url = "http://" + url
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise QueueInputError(f"server URL {url!r}: expected http://host:port")
        self.url = url
        self.ws_url = (
            "wss" if parts.scheme == "https" else "ws"
        ) + f"://{parts.netloc}{parts.path}/ws?clientId={client_id}"
        self.client_id = client_id
        self.timeout = timeout
        self._ws = None

    # ----------------------------------------------------------------------------------------------
    # HTTP

    def _fetch(self, req: urllib.request.Request | str, timeout: float | None = None) -> bytes:
        """The body of a request; HTTPError for an error status, ServerUnavailable when the server is gone."""
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as r:  # noqa: S310 (http(s) only)
                return r.read()
        except urllib.error.HTTPError as e:
            if e.code in RETRY_STATUS:
                raise ServerUnavailable(f"{self.url} answered {e.code} {e.reason}") from e
            raise
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            raise ServerUnavailable(f"cannot reach {self.url}: {getattr(e, 'reason', e)}") from e

    def get_json(self, path: str):
        """``GET path`` as JSON."""
        try:
            return json.loads(self._fetch(self.url + path))
        except urllib.error.HTTPError as e:
            raise ServerError(f"GET {path}: {e.code} {e.reason}") from e
        except json.JSONDecodeError as e:
            raise ServerError(f"GET {path}: not JSON ({e.msg}); is {self.url} a ComfyUI server?") from e

    def queue_ids(self) -> set[str]:
        """Prompt ids running or waiting in the server's queue."""
        q = self.get_json("/queue")
        return {item[1] for part in ("queue_running", "queue_pending") for item in q.get(part, [])}

    def history(self, prompt_id: str) -> dict | None:
        """The history entry of one prompt, or None while it has none (unfinished, or unknown)."""
        return self.get_json(f"/history/{urllib.parse.quote(prompt_id)}").get(prompt_id)

    def submit(self, prompt: dict, prompt_id: str) -> None:
        """``POST /prompt`` with our client id and a prompt id chosen by the caller."""
        body = json.dumps({"prompt": prompt, "client_id": self.client_id, "prompt_id": prompt_id}).encode()
        req = urllib.request.Request(self.url + "/prompt", data=body, headers={"Content-Type": "application/json"})
        try:
            answer = json.loads(self._fetch(req))
        except urllib.error.HTTPError as e:
            text = e.read().decode("utf-8", "replace")
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError:
                parsed = None
            if e.code == 400 and isinstance(parsed, dict):
                raise PromptRejected(format_rejection(parsed)) from None
            raise ServerError(f"POST /prompt: {e.code} {e.reason}: {text[:500]}") from e
        except json.JSONDecodeError as e:
            raise ServerError(f"POST /prompt: the answer is not JSON ({e.msg})") from e
        if answer.get("prompt_id") != prompt_id:
            raise ServerError(f"POST /prompt: the server ignored our prompt id ({answer.get('prompt_id')!r})")
        if answer.get("node_errors"):
            log.warning("the server dropped invalid branches: %s", format_rejection(answer))

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
            + local.read_bytes()
            + b"\r\n",
            f"--{boundary}--\r\n".encode(),
        ]
        req = urllib.request.Request(
            self.url + "/upload/image",
            data=b"".join(parts),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        try:
            answer = json.loads(self._fetch(req))
        except urllib.error.HTTPError as e:
            raise ServerError(f"uploading {local}: {e.code} {e.reason}") from e
        except json.JSONDecodeError as e:
            raise ServerError(f"uploading {local}: the answer is not JSON ({e.msg})") from e
        if answer.get("name") != name:
            raise ServerError(f"uploading {local}: the server stored it as {answer.get('name')!r}, not {name!r}")

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
        try:
            import websocket  # websocket-client
        except ImportError as e:
            raise ServerError(
                "following progress needs the websocket-client package: pip install websocket-client"
            ) from e
        try:
            self._ws = websocket.create_connection(self.ws_url, timeout=self.timeout, enable_multithread=False)
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
        import websocket

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


def default_server() -> str:
    """``$COMFYUI_URL`` or ComfyUI's default address."""
    return os.environ.get("COMFYUI_URL", "http://127.0.0.1:8188")
