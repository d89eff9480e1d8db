"""``python -m palette_core``: the command line of :mod:`palette_cli.main` (installed as ``palette``)."""

from palette_cli.main import main

raise SystemExit(main(prog="python -m palette_core"))
