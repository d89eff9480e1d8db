"""palette_core: the host-independent maths of the palette-control pack (torch + numpy, no ComfyUI).

Submodules: :mod:`.color` (sRGB, Lab, HSV, CIEDE2000), :mod:`.histogram` (the 34x12x10 HSV histogram),
:mod:`.distance` (bin similarity, Quadratic-Chi, palette EMD). Importing the package imports neither
torch nor numpy, so that the command line starts fast; :data:`NUM_BINS` is read from :mod:`.bins`
on first use.
"""

from .errors import InputShapeError, PaletteError, PaletteFormatError

__all__ = ["NUM_BINS", "InputShapeError", "PaletteError", "PaletteFormatError"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "NUM_BINS":
        from .bins import NUM_BINS

        return NUM_BINS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
