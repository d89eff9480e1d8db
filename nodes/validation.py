"""The range, option and finiteness checks every node runs in ``validate_inputs``, read from its own V3 schema.

ComfyUI skips its min/max/option checks for every input a node's ``validate_inputs`` receives (with
``**kwargs``: all of them), never checks the option lists of V3 combos, and lets NaN through min/max
(docs/design.md §7). So each node's ``validate_inputs`` ends in :func:`check_inputs`, which checks every
numeric input for finiteness and range and every combo for membership. It reads the schema's input objects
by their attributes only (``id``, ``get_io_type()``, ``min``, ``max``, ``options``), so it imports without
ComfyUI.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

MAX_LISTED = 20  # options listed in a message; longer lists (model folders) are cut with a count


def io_kind(spec: Any) -> str:
    """The ComfyUI type name of a V3 input (``FLOAT``, ``INT``, ``COMBO``, ...), as its ``get_io_type()`` says."""
    kind = spec.get_io_type() if hasattr(spec, "get_io_type") else getattr(spec, "io_type", "")
    return kind if isinstance(kind, str) else ""


def _number(x: float | int) -> str:
    """A bound as the widget shows it: 12, 0.5, 1e+30."""
    return str(x) if isinstance(x, (int, np.integer)) else f"{float(x):g}"


def _bounds(spec: Any) -> str:
    """``lo..hi``, ``>= lo``, ``<= hi`` or "" for the schema's min/max."""
    lo, hi = getattr(spec, "min", None), getattr(spec, "max", None)
    if lo is not None and hi is not None:
        return f"{_number(lo)}..{_number(hi)}"
    if lo is not None:
        return f">= {_number(lo)}"
    if hi is not None:
        return f"<= {_number(hi)}"
    return ""


def _listed(options: list) -> str:
    """The options as ``'a', 'b'``, cut after MAX_LISTED with the total count."""
    if not options:
        return "none (no options are available)"
    shown = ", ".join(repr(o) for o in options[:MAX_LISTED])
    return shown if len(options) <= MAX_LISTED else f"{shown}, ... ({len(options)} options)"


def allowed(spec: Any) -> str:
    """What an input accepts, in words: ``-12..12``, ``whole numbers 1..32``, ``one of 'a', 'b'``."""
    kind = io_kind(spec)
    if kind == "FLOAT":
        return _bounds(spec) or "any finite number"
    if kind == "INT":
        return f"whole numbers {_bounds(spec)}".rstrip()
    if kind == "COMBO":
        return f"one of {_listed(list(getattr(spec, 'options', None) or []))}"
    if kind == "BOOLEAN":
        return "true or false"
    return "any value"


def _in_bounds(x: float, spec: Any) -> bool:
    lo, hi = getattr(spec, "min", None), getattr(spec, "max", None)
    return (lo is None or x >= lo) and (hi is None or x <= hi)


def _as_float(value: Any) -> float | None:
    """``value`` as a finite float, or None (not a number, NaN, +-inf, or an int too large for a float)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    try:
        x = float(value)
    except OverflowError:
        return None
    return x if math.isfinite(x) else None


def accepts(spec: Any, value: Any) -> bool:
    """Whether a V3 input accepts ``value``: finite and within min..max, a whole number, or one of the options.

    None is accepted: ComfyUI passes a linked input (and an optional one left out) as None at validation time.
    Inputs other than FLOAT, INT, COMBO and BOOLEAN (strings, sockets) are the node's own business.
    """
    if value is None:
        return True
    kind = io_kind(spec)
    if kind == "FLOAT":
        x = _as_float(value)
        return x is not None and _in_bounds(x, spec)
    if kind == "INT":
        whole = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
        return whole and _in_bounds(int(value), spec)
    if kind == "COMBO":
        options = list(getattr(spec, "options", None) or [])
        if getattr(spec, "multiselect", False) and isinstance(value, (list, tuple)):
            return all(_member(v, options) for v in value)
        return _member(value, options)
    if kind == "BOOLEAN":
        return isinstance(value, (bool, np.bool_))
    return True


def _member(value: Any, options: list) -> bool:
    """``value in options``, except that True and False are not the options 1 and 0."""
    flag = isinstance(value, (bool, np.bool_))
    return any(value == o and flag == isinstance(o, (bool, np.bool_)) for o in options)


def problem(node_id: str, spec: Any, value: Any) -> str:
    """The message for a rejected value: ``Node: input 'x' = value; allowed lo..hi`` (docs/design.md §7)."""
    return f"{node_id}: input '{spec.id}' = {value!r}; allowed {allowed(spec)}"


def schema_inputs(node: Any) -> tuple[str, list]:
    """A V3 node class's ``node_id`` and its schema's inputs (define_schema, read fresh: combo lists change)."""
    schema = node.define_schema()
    return schema.node_id, list(schema.inputs)


def named(node_id: str, message: str) -> str:
    """``message`` prefixed with the node's id (unless it already starts with it), so the user knows which node."""
    return message if message.startswith(f"{node_id}:") else f"{node_id}: {message}"


def check_inputs(node: Any, values: Mapping[str, Any], *verdicts: bool | str) -> bool | str:
    """True, or the node's validation error: one line per failed own check, then one per input the schema rejects.

    ``verdicts`` are the node's own checks (True, False or a message), whose messages say most about their
    input and so come first; then each value in ``values`` is checked against the node's V3 schema
    (:func:`accepts`). Every line starts with the node's id.
    """
    node_id, inputs = schema_inputs(node)
    found = [named(node_id, "invalid input" if v is False else str(v)) for v in verdicts if v is not True]
    found += [problem(node_id, spec, values[spec.id]) for spec in inputs if not _accepted(spec, values)]
    return "\n".join(found) if found else True


def _accepted(spec: Any, values: Mapping[str, Any]) -> bool:
    """Whether ``values`` lacks the input or holds a value it accepts."""
    return spec.id not in values or accepts(spec, values[spec.id])
