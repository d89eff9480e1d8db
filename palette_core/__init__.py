"""palette_core: the host-independent maths of the palette-control pack (torch + numpy, no ComfyUI).

Submodules: :mod:`.palette` (the Palette value and its text form), :mod:`.color` (sRGB, Lab, HSV,
CIEDE2000), :mod:`.histogram` (the 34x12x10 HSV histogram), :mod:`.distance` (bin similarity,
Quadratic-Chi, palette EMD). Importing the package imports neither torch nor numpy, so that the command
line starts fast; :data:`NUM_BINS` and :class:`Palette` are imported from their modules on first use.
"""

from .errors import InputShapeError, PaletteError, PaletteFormatError

__all__ = ["NUM_BINS", "InputShapeError", "Palette", "PaletteError", "PaletteFormatError"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "NUM_BINS":
        from .bins import NUM_BINS

        return NUM_BINS
    if name == "Palette":
        from .palette import Palette

        return Palette
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
