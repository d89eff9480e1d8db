"""Every node of the pack has a description, and every input and output a tooltip.

The host-independent test reads the node schemas in nodes/*.py without importing them (they import ComfyUI);
with COMFYUI_PATH, the same is checked on what ComfyUI serves in /object_info (the classes' V1 attributes).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from comfyhost import load_comfyui, requires_comfyui

REPO = Path(__file__).resolve().parents[1]
NODE_FILES = sorted((REPO / "nodes").glob("*.py"))
MIN_DESCRIPTION = 40  # characters: a sentence that says what the node does
MIN_TOOLTIP = 12


def text_of(node: ast.expr | None) -> str | None:
    """A string literal (implicitly concatenated or an f-string) as text, f-string fields as {}."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    return None


def keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def schema_calls() -> list[tuple[str, ast.Call]]:
    """(file name, io.Schema(...) call) for every node schema in nodes/*.py."""
    out = []
    for path in NODE_FILES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "Schema":
                out.append((path.name, node))
    return out


def socket_calls(schema: ast.Call) -> list[ast.Call]:
    """The ``X.Input(...)`` and ``X.Output(...)`` calls inside a schema's inputs and outputs."""
    calls = []
    for field in ("inputs", "outputs"):
        value = keyword(schema, field)
        assert isinstance(value, ast.List), f"{field} is not a literal list"
        calls += [c for c in value.elts if isinstance(c, ast.Call)]
    return calls


def test_every_schema_in_nodes_has_a_description_and_tooltips():
    schemas = schema_calls()
    assert len(schemas) >= 13
    for file, schema in schemas:
        node_id = text_of(keyword(schema, "node_id"))
        description = text_of(keyword(schema, "description"))
        assert description and len(description) >= MIN_DESCRIPTION, f"{file} {node_id}: description {description!r}"
        assert text_of(keyword(schema, "display_name")), f"{file} {node_id}: no display_name"
        for call in socket_calls(schema):
            kind = call.func.attr if isinstance(call.func, ast.Attribute) else "?"
            assert kind in ("Input", "Output"), f"{file} {node_id}: unexpected {kind}"
            name = text_of(call.args[0]) if call.args else text_of(keyword(call, "display_name"))
            tooltip = text_of(keyword(call, "tooltip"))
            where = f"{file} {node_id} {kind.lower()} {name}"
            assert tooltip and len(tooltip) >= MIN_TOOLTIP, f"{where}: tooltip {tooltip!r}"


@requires_comfyui
@pytest.mark.comfyui
def test_comfyui_serves_the_descriptions_and_tooltips():
    pack = load_comfyui().pack
    assert len(pack.NODE_LIST) >= 13
    for cls in pack.NODE_LIST:
        name = cls.__name__
        assert len(cls.DESCRIPTION) >= MIN_DESCRIPTION, name
        spec = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            for input_name, entry in spec.get(section, {}).items():
                options = entry[1] if len(entry) > 1 else {}
                assert len(options.get("tooltip", "")) >= MIN_TOOLTIP, f"{name}.{input_name}"
        tooltips = cls.OUTPUT_TOOLTIPS
        assert len(tooltips) == len(cls.RETURN_TYPES), name
        assert all(t and len(t) >= MIN_TOOLTIP for t in tooltips), f"{name} outputs: {tooltips}"
