"""palette_cli: the ``palette`` command line, installed by ``pip install`` and run as ``python -m palette_core``.

The maths is :mod:`palette_core`'s; this package reads arguments and files, prints, and plots. Modules:
:mod:`.main` (the parser, ``main`` and its exit statuses), :mod:`.common` (images and palettes from
arguments, output helpers, :class:`~.common.CliError`), :mod:`.commands` (extract, histogram, distance,
convert, adapter init), :mod:`.evaluate` (scoring images against palettes) and :mod:`.plots` (the
``--plot`` figures, matplotlib). Nothing here imports numpy, Pillow or torch at import time, so that
``palette --help`` starts fast (docs/palettes.md, "Command line").
"""
