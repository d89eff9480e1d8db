"""ComfyUI glue of the pack: V3 node classes only; every computation is a call into palette_core."""

from __future__ import annotations

NODE_LIST: list[type] = []
