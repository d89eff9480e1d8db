"""Error types of the batch queue: bad input is found before anything is queued; server trouble is retried."""

from __future__ import annotations

from palette_core.errors import PaletteError


class QueueInputError(PaletteError):
    """The workflow, the jobs file or a column mapping is wrong; the message names the file, line and column."""


class MappingError(QueueInputError):
    """A jobs column maps to no node input, or to more than one; the message lists the candidates."""


class MissingDependency(QueueInputError):
    """An optional package this run needs is not installed; the message gives the pip command."""


class ServerUnavailable(OSError):
    """The ComfyUI server cannot be reached (down, restarting, connection lost): retried with backoff."""


class ServerError(RuntimeError):
    """The server answered with something this client cannot use (an unexpected status or body)."""


class NotComfyUI(ServerError):
    """The address answers, but not as ComfyUI does (an HTML page, JSON of another shape): never retried."""


class PromptRejected(RuntimeError):
    """``POST /prompt`` answered 400: the prompt failed validation; the message lists the node errors."""


class PromptPartlyRejected(PromptRejected):
    """``POST /prompt`` queued the prompt but dropped the outputs whose nodes failed validation (``node_errors``)."""
