"""``python -m palette_queue``: see :mod:`palette_queue.cli` (installed as ``palette-queue``)."""

from .cli import main

raise SystemExit(main(prog="python -m palette_queue"))
