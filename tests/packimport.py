"""Import the pack's submodules the way ComfyUI would (as a package, relative imports intact) without ComfyUI.

The root ``__init__`` is not executed (it is ComfyUI's entry point); host-independent modules such as
``nodes/adapter_patch.py`` can then be contract-tested on any machine.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "palette_pack_under_test"


def pack_module(name: str) -> types.ModuleType:
    """``pack_module("nodes.adapter_patch")`` -> that module, imported inside a stand-in pack package."""
    if PACKAGE not in sys.modules:
        pkg = types.ModuleType(PACKAGE)
        pkg.__path__ = [str(REPO)]
        sys.modules[PACKAGE] = pkg
    return importlib.import_module(f"{PACKAGE}.{name}")
