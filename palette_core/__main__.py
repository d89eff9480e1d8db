"""``python -m palette_core``: the command line of :mod:`palette_core.cli` (installed as ``palette``)."""

from .cli import main

raise SystemExit(main(prog="python -m palette_core"))
