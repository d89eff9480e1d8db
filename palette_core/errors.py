"""Error types of the pack: every bad input raises one of these, with a message that says what to do."""

from __future__ import annotations


class PaletteError(ValueError):
    """Base class of the pack's input errors (a ValueError, so generic handlers still catch it)."""


class InputShapeError(PaletteError):
    """An array argument has the wrong shape, dtype or values."""


class PaletteFormatError(PaletteError):
    """Palette text or a palette file could not be parsed; the message names the token, line or offset."""


class AdapterError(PaletteError):
    """An adapter file, block list or model does not fit; the message names the key, shape or block."""


class IncompatibleModelError(PaletteError):
    """A model or VAE of the wrong kind was connected (e.g. not SDXL's 4-channel latent format)."""
