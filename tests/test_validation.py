"""Contract tests of nodes/validation.py, the schema-driven input checks every node runs (no ComfyUI needed).

The schema objects here are stand-ins with the attributes the checker reads from ComfyUI's V3 inputs (``id``,
``get_io_type()``, ``min``, ``max``, ``options``); tests/test_validation_comfyui.py runs the real ones
through a real server. The last test reads nodes/*_nodes.py and holds every node to calling the checker.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from packimport import pack_module

V = pack_module("nodes.validation")
REPO = Path(__file__).resolve().parents[1]


@dataclass
class Spec:
    """A stand-in for a V3 input: ``kind`` is what ``get_io_type()`` returns."""

    id: str
    kind: str
    min: float | int | None = None
    max: float | int | None = None
    options: list = field(default_factory=list)
    multiselect: bool = False

    def get_io_type(self) -> str:
        return self.kind


@dataclass
class Schema:
    node_id: str
    inputs: list


def node_of(*inputs: Spec, node_id: str = "TestNode"):
    """A stand-in V3 node class whose define_schema returns these inputs."""

    class Node:
        @classmethod
        def define_schema(cls) -> Schema:
            return Schema(node_id, list(inputs))

    return Node


ENTROPY = Spec("entropy", "FLOAT", -12.0, 12.0)
MODE = Spec("entropy_mode", "COMBO", options=["off", "absolute", "relative"])
STEPS = Spec("steps", "INT", 1, 32)
NODE = node_of(MODE, ENTROPY, STEPS, Spec("label", "STRING"), Spec("image", "IMAGE"), node_id="Entropy")
VALID = {"entropy_mode": "relative", "entropy": -2.0, "steps": 4, "label": "x", "image": None}


def test_messages_name_node_input_value_and_range():
    assert V.check_inputs(NODE, VALID) is True
    cases = {
        ("entropy", math.nan): "Entropy: input 'entropy' = nan; allowed -12..12",
        ("entropy", math.inf): "Entropy: input 'entropy' = inf; allowed -12..12",
        ("entropy", -math.inf): "Entropy: input 'entropy' = -inf; allowed -12..12",
        ("entropy", 1e30): "Entropy: input 'entropy' = 1e+30; allowed -12..12",
        ("entropy", -12.5): "Entropy: input 'entropy' = -12.5; allowed -12..12",
        ("steps", 33): "Entropy: input 'steps' = 33; allowed whole numbers 1..32",
        ("steps", 2.5): "Entropy: input 'steps' = 2.5; allowed whole numbers 1..32",
        ("entropy_mode", "sideways"): "Entropy: input 'entropy_mode' = 'sideways'; allowed one of 'off', 'absolute', "
        "'relative'",
    }
    for (name, value), message in cases.items():
        assert V.check_inputs(NODE, {**VALID, name: value}) == message


def test_every_rejected_input_gets_a_line_in_schema_order_after_the_nodes_own_messages():
    values = {**VALID, "steps": 0, "entropy_mode": "up", "entropy": math.nan}
    lines = V.check_inputs(NODE, values, True, "entropy is wrong", False).split("\n")
    assert lines == [
        "Entropy: entropy is wrong",
        "Entropy: invalid input",
        "Entropy: input 'entropy_mode' = 'up'; allowed one of 'off', 'absolute', 'relative'",
        "Entropy: input 'entropy' = nan; allowed -12..12",
        "Entropy: input 'steps' = 0; allowed whole numbers 1..32",
    ]
    assert V.check_inputs(NODE, VALID, "Entropy: already named") == "Entropy: already named"


def test_linked_and_left_out_inputs_pass():
    # ComfyUI hands a linked input to validate_inputs as None; an optional input left out is not passed.
    assert V.check_inputs(NODE, dict.fromkeys(VALID)) is True
    assert V.check_inputs(NODE, {}) is True
    assert V.check_inputs(NODE, {"not_an_input": math.nan}) is True


def test_bounds_the_schema_leaves_open_and_other_kinds():
    lower = Spec("x", "FLOAT", min=0.0)
    assert V.accepts(lower, 1e300) and not V.accepts(lower, -1e-300) and not V.accepts(lower, math.inf)
    assert V.allowed(lower) == ">= 0" and V.allowed(Spec("x", "FLOAT", max=2)) == "<= 2"
    free = Spec("x", "FLOAT")
    assert V.allowed(free) == "any finite number"
    assert V.accepts(free, -1e308) and not V.accepts(free, math.nan) and not V.accepts(free, 10**400)
    assert not V.accepts(free, "1.0") and not V.accepts(free, True)
    assert V.accepts(free, np.float32(2.5)) and V.accepts(Spec("n", "INT", 0, 9), np.int64(3))
    assert not V.accepts(Spec("n", "INT", 0, 9), True)
    flag = Spec("b", "BOOLEAN")
    assert V.accepts(flag, False) and not V.accepts(flag, 0) and V.allowed(flag) == "true or false"
    assert V.accepts(Spec("s", "STRING"), math.nan)  # strings are the node's own business


def test_combo_membership_keeps_bools_apart_and_cuts_long_lists():
    numbers = Spec("n", "COMBO", options=[0, 1, 2])
    assert V.accepts(numbers, 1) and not V.accepts(numbers, True) and not V.accepts(numbers, "1")
    files = Spec("ckpt", "COMBO", options=[f"m{i}.safetensors" for i in range(25)])
    text = V.allowed(files)
    assert text.startswith("one of 'm0.safetensors', ") and text.endswith("'m19.safetensors', ... (25 options)")
    assert V.allowed(Spec("ckpt", "COMBO")) == "one of none (no options are available)"
    assert not V.accepts(Spec("ckpt", "COMBO"), "anything")
    multi = Spec("tags", "COMBO", options=["a", "b"], multiselect=True)
    assert V.accepts(multi, ["a", "b"]) and not V.accepts(multi, ["a", "c"])


bounds = st.floats(-1e6, 1e6, allow_nan=False)
any_float = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([math.nan, math.inf, -math.inf])


@settings(max_examples=300, deadline=None)
@given(lo=bounds, width=st.floats(0, 1e6), value=any_float)
def test_float_accepted_exactly_when_finite_and_in_range(lo, width, value):
    hi = lo + width
    spec = Spec("x", "FLOAT", lo, hi)
    expected = bool(np.isfinite(value)) and bool(np.float64(lo) <= value <= np.float64(hi))
    assert V.accepts(spec, value) is expected
    verdict = V.check_inputs(node_of(spec, node_id="N"), {"x": value})
    assert verdict is True if expected else verdict == f"N: input 'x' = {value!r}; allowed {lo:g}..{hi:g}"


@settings(max_examples=200, deadline=None)
@given(lo=st.integers(-1000, 1000), width=st.integers(0, 1000), value=st.integers(-(10**30), 10**30))
def test_int_accepted_exactly_when_in_range(lo, width, value):
    spec = Spec("n", "INT", lo, lo + width)
    assert V.accepts(spec, value) is (lo <= value <= lo + width)
    assert not V.accepts(spec, float(lo))  # ComfyUI converts INT inputs to int first; a float is a caller's bug


kinds = st.sampled_from(["FLOAT", "INT", "COMBO", "BOOLEAN", "STRING", "IMAGE"])


@st.composite
def schema_and_values(draw):
    """A random schema (1-6 inputs of every kind) and values for some of its inputs, good or bad."""
    specs = []
    for i, kind in enumerate(draw(st.lists(kinds, min_size=1, max_size=6))):
        if kind in ("FLOAT", "INT"):  # either bound may be left open
            lo = draw(st.integers(-50, 50))
            hi = lo + draw(st.integers(0, 50))
            specs.append(Spec(f"in{i}", kind, draw(st.sampled_from([lo, None])), draw(st.sampled_from([hi, None]))))
        elif kind == "COMBO":
            specs.append(Spec(f"in{i}", kind, options=draw(st.lists(st.text(max_size=4), max_size=4, unique=True))))
        else:
            specs.append(Spec(f"in{i}", kind))
    values = {}
    for spec in specs:
        choice = draw(
            st.none()
            | st.floats(-100, 100)
            | st.sampled_from([math.nan, math.inf, -math.inf])
            | st.integers(-100, 100)
            | st.booleans()
            | st.text(max_size=4)
            | st.sampled_from(spec.options or [""])
        )
        if draw(st.booleans()):
            values[spec.id] = choice
    return specs, values


def oracle(spec: Spec, value) -> bool:
    """What a V3 input accepts, written out case by case."""
    if value is None or spec.kind in ("STRING", "IMAGE"):
        return True
    if spec.kind == "BOOLEAN":
        return type(value) is bool
    if spec.kind == "COMBO":
        return any(type(value) is type(o) and value == o for o in spec.options)
    if type(value) is bool or type(value) not in ((int,) if spec.kind == "INT" else (int, float)):
        return False
    above = spec.min is None or value >= spec.min
    return math.isfinite(value) and above and (spec.max is None or value <= spec.max)


@settings(max_examples=300, deadline=None)
@given(schema_and_values())
def test_check_inputs_reports_exactly_the_rejected_inputs(case):
    specs, values = case
    verdict = V.check_inputs(node_of(*specs, node_id="Node"), values)
    bad = [s for s in specs if s.id in values and not oracle(s, values[s.id])]
    if not bad:
        assert verdict is True
    else:
        assert isinstance(verdict, str)
        lines = verdict.split("\n")
        assert [line.split("'")[1] for line in lines] == [s.id for s in bad]
        for line, spec in zip(lines, bad):
            assert line.startswith(f"Node: input '{spec.id}' = {values[spec.id]!r}; allowed ")


def node_classes() -> list[tuple[str, ast.ClassDef]]:
    """Every class in nodes/*_nodes.py that defines a V3 schema."""
    found = []
    for path in sorted((REPO / "nodes").glob("*_nodes.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and any(
                isinstance(f, ast.FunctionDef) and f.name == "define_schema" for f in node.body
            ):
                found.append((f"{path.name}:{node.name}", node))
    return found


@pytest.mark.parametrize("where, cls", node_classes(), ids=[w for w, _ in node_classes()])
def test_every_node_validates_all_its_inputs_with_the_checker(where, cls):
    # validate_inputs takes **kwargs, so ComfyUI passes every input (and skips its own range checks for all),
    # and it ends in check_inputs; every named parameter defaults to None (a link, or an input left out).
    (method,) = [f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name == "validate_inputs"]
    assert method.args.kwarg is not None, f"{where}: validate_inputs needs **kwargs"
    named = method.args.args[1:]
    assert len(method.args.defaults) == len(named), f"{where}: every named input needs a default (None)"
    assert all(isinstance(d, ast.Constant) and d.value is None for d in method.args.defaults)
    returns = [n for n in ast.walk(method) if isinstance(n, ast.Return)]
    assert returns and all(
        isinstance(r.value, ast.Call) and getattr(r.value.func, "id", "") == "check_inputs" for r in returns
    ), f"{where}: every return of validate_inputs goes through check_inputs"


def test_the_walk_finds_the_packs_nodes():
    names = {where.split(":")[1] for where, _ in node_classes()}
    assert {"PaletteInput", "EntropyDistanceControl", "ApplyPaletteAdapter", "PaletteRecolor"} <= names
    assert len(names) >= 21
