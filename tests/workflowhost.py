"""A real ComfyUI for the example workflows: placeholder model files, the shipped input images, and the browser run.

Used by tests/test_workflows.py and scripts/workflow_thumbnails.py. The placeholders are empty files with the
model names the workflows use, so the loaders' combos accept them; loading one fails at once (an empty file
is no safetensors), so a queued workflow never loads multi-gigabyte weights.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from comfyserver import REPO, ComfyServer

WORKFLOWS = REPO / "example_workflows"
INPUTS = WORKFLOWS / "input"
BROWSER = REPO / "tests" / "browser"
SHOTS_SCRIPT = BROWSER / "workflow_shots.mjs"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Node types that exist only in the frontend (the API format leaves them out).
VIRTUAL_NODES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
# Widget inputs that name model files, per loader node type, and the models folder each lists.
MODEL_WIDGETS = {
    ("CheckpointLoaderSimple", "ckpt_name"): "checkpoints",
    ("PaletteAdapterLoader", "adapter_name"): "palette_adapter",
}


def ui_workflows() -> list[Path]:
    """The UI-format example workflows (example_workflows/*.json)."""
    return sorted(WORKFLOWS.glob("*.json"))


def api_copy(ui_path: Path) -> Path:
    """The API-format copy of a UI workflow: example_workflows/api/<name>.api.json."""
    return WORKFLOWS / "api" / f"{ui_path.stem}.api.json"


def model_files() -> dict[str, set[str]]:
    """Models folder -> the file names the example workflows' loaders ask for."""
    wanted: dict[str, set[str]] = {}
    for path in ui_workflows():
        for node in json.loads(api_copy(path).read_text()).values():
            for (node_type, name), folder in MODEL_WIDGETS.items():
                if node["class_type"] == node_type:
                    wanted.setdefault(folder, set()).add(node["inputs"][name])
    return wanted


def example_server(root: Path) -> ComfyServer:
    """A ComfyServer (not started) whose models folders hold empty placeholders.

    Its input folder starts empty: the pack copies the example photos there when ComfyUI loads it, so the
    workflows that load them also test that copy.
    """
    placeholders = root / "placeholders"
    placeholders.mkdir(parents=True, exist_ok=True)
    checkpoints, adapters = [], []
    for folder, names in model_files().items():
        for name in sorted(names):
            (placeholders / name).write_bytes(b"")
            (checkpoints if folder == "checkpoints" else adapters).append(placeholders / name)
    return ComfyServer(root / "comfy", checkpoints=checkpoints, adapters=adapters)


def browser_unavailable() -> str | None:
    """Why the headless-browser run cannot happen here, or None when it can."""
    if shutil.which("node") is None:
        return "needs Node.js (node) on PATH"
    if not Path(CHROMIUM).is_file():
        return f"needs Chromium at {CHROMIUM} (set CHROMIUM)"
    if not (BROWSER / "node_modules" / "playwright-core").is_dir():
        return f"needs playwright-core: run `npm install` in {BROWSER}"
    return None


def workflow_shots(url: str, out_dir: Path, files: list[Path], timeout: float = 600) -> dict:
    """Load the workflows into the real frontend (tests/browser/workflow_shots.mjs); return its report.

    Writes <out_dir>/<name>.png (the graph) and <name>.prompt.json (the frontend's API form of it).
    """
    subprocess.run(
        ["node", str(SHOTS_SCRIPT), url, str(out_dir), *map(str, files)],
        cwd=BROWSER,
        check=True,
        timeout=timeout,
        env={**os.environ, "CHROMIUM": CHROMIUM},
    )
    return json.loads((out_dir / "report.json").read_text())
