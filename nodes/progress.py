"""ComfyUI's progress bar and Cancel for the palette_core loops (docs/recolor.md "Previews, progress and Cancel").

palette_core stays free of ComfyUI: its long loops take an optional ``progress(done, total)`` callback,
and the nodes pass :func:`comfy_progress`, which checks for a Cancel before it moves the node's bar.
"""

from __future__ import annotations

from collections.abc import Callable

import comfy.model_management
import comfy.utils


def check_cancel() -> None:
    """Raise ComfyUI's InterruptProcessingException if the user pressed Cancel (the flag is then cleared)."""
    comfy.model_management.throw_exception_if_processing_interrupted()


def comfy_progress() -> Callable[[int, int], None]:
    """A palette_core ``progress(done, total)`` callback: stop here on Cancel, else move the running node's bar."""
    bar = comfy.utils.ProgressBar(1)  # the loop says the real total with each step

    def report(done: int, total: int) -> None:
        check_cancel()
        bar.update_absolute(done, total)

    return report
