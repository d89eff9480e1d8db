"""``python -m palette_queue``: see :mod:`palette_queue.cli`."""

from .cli import main

raise SystemExit(main())
