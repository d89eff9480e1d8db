"""A real ComfyUI server on loopback with this pack installed, for end-to-end HTTP API tests."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMFYUI_PATH = os.environ.get("COMFYUI_PATH", "")
SLOW = os.environ.get("PALETTE_SLOW_TESTS") == "1"
CACHE = Path(os.environ.get("PALETTE_TEST_CACHE", Path.home() / ".cache" / "palette-control-tests"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """Start ComfyUI (``--cpu``) with a scratch models/output tree; stop it on exit."""

    def __init__(self, root: Path, checkpoints: list[Path] = (), adapters: list[Path] = (), port: int | None = None):
        self.root = root
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        for sub in ("checkpoints", "palette_adapter", "custom_nodes", "output", "input", "user"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        for ckpt in checkpoints:
            link = root / "checkpoints" / ckpt.name
            if not link.exists():
                link.symlink_to(ckpt)
        for adapter in adapters:
            shutil.copy(adapter, root / "palette_adapter" / adapter.name)
        pack = root / "custom_nodes" / "palette-control"
        if not pack.exists():
            pack.symlink_to(REPO)
        (root / "extra_model_paths.yaml").write_text(
            "palette_tests:\n"
            f"  base_path: {root}\n"
            "  checkpoints: checkpoints\n"
            "  palette_adapter: palette_adapter\n"
            "  custom_nodes: custom_nodes\n"
        )
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180) -> ComfyServer:
        log = open(self.root / "server.log", "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "main.py",
                "--cpu",
                "--listen",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--output-directory",
                str(self.root / "output"),
                "--input-directory",
                str(self.root / "input"),
                # Own temp and user folders: ComfyUI empties its temp folder at start-up, so servers
                # sharing one checkout would delete each other's previews; settings stay out of the checkout.
                "--temp-directory",
                str(self.root),
                "--user-directory",
                str(self.root / "user"),
                "--extra-model-paths-config",
                str(self.root / "extra_model_paths.yaml"),
            ],
            cwd=COMFYUI_PATH,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited early; see {self.root / 'server.log'}")
            try:
                self.get("/system_stats")
                return self
            except OSError:
                time.sleep(1)
        raise TimeoutError(f"ComfyUI did not answer within {timeout} s; see {self.root / 'server.log'}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.resume()  # a paused process would not act on SIGTERM until it runs again
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def pause(self) -> None:
        """Stop the process (SIGSTOP) without ending it: it keeps its queue but answers nothing, as a hung server."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused server go on (SIGCONT): it answers again and runs what it had queued."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)

    def __enter__(self) -> ComfyServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def post(self, path: str, body: dict) -> dict:
        req = urllib.request.Request(
            self.url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise AssertionError(f"POST {path} -> {e.code}: {e.read().decode()[:2000]}") from e

    def run(self, prompt: dict, timeout: float = 900) -> dict:
        """Queue an API-format prompt and wait for its history entry; raise with the server's error."""
        pid = self.post("/prompt", {"prompt": prompt})["prompt_id"]
        deadline = time.time() + timeout
        while time.time() < deadline:
            hist = self.get(f"/history/{pid}")
            if pid in hist and hist[pid].get("status", {}).get("completed") is not None:
                entry = hist[pid]
                if entry["status"]["status_str"] != "success":
                    raise AssertionError(f"prompt failed: {json.dumps(entry['status'])[:3000]}")
                return entry
            time.sleep(1)
        raise TimeoutError(f"prompt {pid} did not finish in {timeout} s")

    def image(self, info: dict) -> bytes:
        q = urllib.parse.urlencode({k: info[k] for k in ("filename", "subfolder", "type")})
        with urllib.request.urlopen(f"{self.url}/view?{q}", timeout=60) as r:
            return r.read()


def start_all(servers: list[ComfyServer], timeout: float = 180) -> list[ComfyServer]:
    """Start several servers at once (each start waits for its server to answer); raise the first failure."""
    errors: list[BaseException] = []

    def start(server: ComfyServer) -> None:
        try:
            server.start(timeout)
        except BaseException as e:  # noqa: BLE001 - re-raised below, in the caller's thread
            errors.append(e)

    threads = [threading.Thread(target=start, args=(s,)) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        for server in servers:
            server.stop()
        raise errors[0]
    return servers
