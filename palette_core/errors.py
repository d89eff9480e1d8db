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
    """A model or VAE of the wrong kind was connected (e.g. a latent format a node cannot describe)."""


# The pack declares no torch dependency (ComfyUI brings its own build, which pip must not replace), so
# the command-line programs say how to get it when a command needs it.
TORCH_INSTALL_HINT = "pip install torch (CPU and CUDA builds: https://pytorch.org/get-started/locally/)"


def torch_missing_message(what: str) -> str:
    """One line saying that ``what`` needs torch, which is not installed, and how to install it."""
    return f"{what} needs PyTorch, which is not installed: {TORCH_INSTALL_HINT}"


def is_missing_torch(e: BaseException) -> bool:
    """True when ``e`` says that torch is not installed (not that a module inside a broken install failed)."""
    return isinstance(e, ModuleNotFoundError) and e.name == "torch"
