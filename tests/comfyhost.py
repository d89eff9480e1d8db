"""Loading this pack inside a real ComfyUI checkout (``COMFYUI_PATH``) the way ComfyUI itself does.

Integration tests import ``comfy`` and ComfyUI's own top-level ``nodes``; the pack is loaded through
``nodes.load_custom_node`` under ComfyUI's mangled module name, never as a top-level ``nodes``.
Run them with ComfyUI's Python, e.g. ``COMFYUI_PATH=~/ComfyUI ~/comfy-venv/bin/python -m pytest``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMFYUI_PATH = os.environ.get("COMFYUI_PATH", "")

requires_comfyui = pytest.mark.skipif(
    not (COMFYUI_PATH and (Path(COMFYUI_PATH) / "main.py").is_file()),
    reason="needs a ComfyUI checkout at COMFYUI_PATH (run with ComfyUI's Python)",
)

_loaded: types.SimpleNamespace | None = None


def load_comfyui() -> types.SimpleNamespace:
    """Import ComfyUI on the CPU, load this pack with ComfyUI's loader, and return handles to both."""
    global _loaded
    if _loaded is not None:
        return _loaded
    path = str(Path(COMFYUI_PATH).resolve())
    if path not in sys.path:
        sys.path.insert(0, path)
    existing = sys.modules.get("nodes")
    if existing is not None and not str(getattr(existing, "__file__", "")).startswith(path):
        raise RuntimeError(f"a module named 'nodes' from {existing.__file__} shadows ComfyUI's")
    from comfy.cli_args import args

    args.cpu = True
    import comfy.model_management  # noqa: F401  (must come after args.cpu)

    import nodes as comfy_nodes

    ok = asyncio.run(comfy_nodes.load_custom_node(str(REPO)))
    if not ok:
        raise RuntimeError("ComfyUI failed to load the pack; see the log above")
    module_name = str(REPO).replace(".", "_x_")
    _loaded = types.SimpleNamespace(
        nodes=comfy_nodes, classes=comfy_nodes.NODE_CLASS_MAPPINGS, pack=sys.modules[module_name]
    )
    return _loaded


def run_node(node_id: str, **inputs):
    """Execute a V3 node the way the executor does (validate_inputs first) and return its output tuple."""
    cls = load_comfyui().classes[node_id]
    validate = getattr(cls, "validate_inputs", None) or getattr(cls, "VALIDATE_INPUTS", None)
    if validate is not None:
        import inspect

        names = inspect.signature(validate).parameters
        verdict = validate(**{k: v for k, v in inputs.items() if k in names})
        if verdict is not True:
            raise ValueError(f"{node_id} validation failed: {verdict}")
    out = getattr(cls(), cls.FUNCTION)(**inputs)
    if asyncio.iscoroutine(out):
        out = asyncio.run(out)
    return tuple(out.args) if hasattr(out, "args") else tuple(out)
