"""palette_core: the host-independent maths of the palette-control pack (torch + numpy, no ComfyUI).

Submodules: :mod:`.color` (sRGB, Lab, HSV, CIEDE2000), :mod:`.histogram` (the 34x12x10 HSV histogram),
:mod:`.distance` (bin similarity, Quadratic-Chi, palette EMD).
"""

from .errors import InputShapeError, PaletteError, PaletteFormatError
from .histogram import NUM_BINS

__all__ = ["NUM_BINS", "InputShapeError", "PaletteError", "PaletteFormatError"]
__version__ = "0.1.0"
