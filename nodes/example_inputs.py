"""The example workflows' photos (``example_workflows/input/``), copied into ComfyUI's input folder when the pack loads.

The Load Image nodes of the templates name these files, so a template opened on a fresh install runs at once
(docs/workflows.md). A file of the same name already in the input folder is the user's: it is never
overwritten. Nothing here may stop ComfyUI from starting, so a failed copy is logged and skipped.
No ComfyUI import: contract-tested without the host.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

SOURCE = Path(__file__).resolve().parents[1] / "example_workflows" / "input"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def copy_example_inputs(dest: str | Path, source: Path = SOURCE) -> list[Path]:
    """Copy each shipped example image missing from ``dest``; returns the files written."""
    dest = Path(dest)
    if not source.is_dir():
        return []
    written = []
    for src in sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
        target = dest / src.name
        if target.exists():
            continue
        try:
            dest.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.partial")
            shutil.copyfile(src, partial)
            partial.replace(target)  # atomic: a half-copied file never shows in Load Image's list
        except OSError as e:
            log.warning("palette-control: could not copy the example image %s to %s: %s", src.name, dest, e)
            continue
        written.append(target)
    if written:
        log.info("palette-control: copied %d example image(s) into %s", len(written), dest)
    return written
