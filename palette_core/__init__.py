"""palette_core: the host-independent maths of the palette-control pack (torch + numpy, no ComfyUI).

Modules, by what they hold:

* colours and palettes: :mod:`.palette` (the Palette value and its text form), :mod:`.color` (sRGB,
  linear, XYZ, Lab, HSV, CIEDE2000), :mod:`.oklab` (OKLab, OKLCH and their gamut mapping), :mod:`.gamut`
  (sRGB gamut fitting that keeps L*), :mod:`.formats` (palette files), :mod:`.interchange` (palettes as
  text for other tools), :mod:`.color_names` (nearest XKCD names, data in ``data/``), :mod:`.schemes`
  (colour-harmony schemes and palette edits), :mod:`.extract` (median cut and k-means extraction);
* histograms and distances: :mod:`.bins` (the 34x12x10 HSV layout and its numpy kernels),
  :mod:`.histogram` (the checked torch API), :mod:`.similarity` (clipped-CIEDE2000 bin similarity and
  Quadratic-Chi, numpy or torch), :mod:`.distance` (Quadratic-Chi and palette EMD on tensors),
  :mod:`.adherence` (palette adherence per image and per pixel);
* image operations: :mod:`.recolor` (recolouring with L* kept, the lightness lock, their metrics),
  :mod:`.quantize` (quantising and dithering), :mod:`.masks` (region masks), :mod:`.render` (palettes
  and histograms as images);
* diffusion: :mod:`.adapter` (the Palette-Adapter), :mod:`.blocks` (the cross-attention layers a model
  offers it), :mod:`.alignment` (zero-shot colour alignment), :mod:`.sw_guidance` (sliced-Wasserstein
  guidance), :mod:`.negative` (an automatic negative palette from an image), :mod:`.latent_family` and
  :mod:`.latent_rgb` (what the training-free code knows of a family's latents);
* support: :mod:`.errors` (the pack's error types), :mod:`.image_file` (image and table files for the
  command lines), and the private :mod:`._backend` (numpy or torch by argument type),
  :mod:`._checks` (argument validation) and :mod:`._jit` (the quantiser's loops compiled where numba is
  installed).

The ``palette`` command line is the separate package :mod:`palette_cli` (``python -m palette_core`` runs
it). Importing this package imports neither torch nor numpy, so that the command line starts fast;
:data:`NUM_BINS` and :class:`Palette` are imported from their modules on first use.
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
