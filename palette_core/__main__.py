"""``python -m palette_core``: the command line of :mod:`palette_core.cli`."""

from .cli import main

raise SystemExit(main())
