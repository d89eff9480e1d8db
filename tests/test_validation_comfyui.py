"""Every input of every node of the pack is checked at validation, through a real ComfyUI server.

The sweep walks ``/object_info`` for the pack's nodes and posts one prompt per (node, input, bad value):
each FLOAT gets NaN, +-inf, +-1e30 and min-1 / max+1, each INT NaN, +-inf and min-1 / max+1, each combo an
unknown option (JSON carries NaN and Infinity as Python's json writes them; ComfyUI's server reads them back).
Every answer must be HTTP 400 with the node's errors naming the input and the value, and nothing may be
queued: no prompt of the sweep reaches execution, let alone sampling.

A baseline prompt per node, with every widget at its default, shows that the node itself accepts them. So
that the baseline is never queued either, each prompt also holds one node that fails validation on its own
(a missing image file, a missing checkpoint, a missing SaveImage prefix): ComfyUI validates the node under
test all the same, and reports it in ``node_errors`` only when it has errors of its own.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request

import pytest
from comfyhost import requires_comfyui
from comfyserver import ComfyServer

pytestmark = [requires_comfyui, pytest.mark.comfyui]

UNKNOWN = "__no_such_option__"
NODE, SINK = "10", "20"
# A supplier per socket type that fails ComfyUI's validation by itself: (class_type, inputs, output index).
POISON = {
    "IMAGE": ("LoadImage", {"image": "__no_such_file__.png"}, 0),
    "MASK": ("LoadImageMask", {"image": "__no_such_file__.png", "channel": "alpha"}, 0),
    "MODEL": ("CheckpointLoaderSimple", {"ckpt_name": "__no_such_checkpoint__.safetensors"}, 0),
    "CLIP": ("CheckpointLoaderSimple", {"ckpt_name": "__no_such_checkpoint__.safetensors"}, 1),
    "VAE": ("CheckpointLoaderSimple", {"ckpt_name": "__no_such_checkpoint__.safetensors"}, 2),
    "PALETTE": ("PaletteInput", {"palette": "not a palette"}, 0),
    "PALETTE_ADAPTER": ("PaletteAdapterLoader", {"adapter_name": "__no_such_adapter__.safetensors"}, 0),
    "COLOR_CONDITION": ("NegativePalette", {"palette": ["2", 0], "weight": 0.3}, 0),  # node 2: a bad palette
}
WIDGETS = {"FLOAT", "INT", "COMBO", "STRING", "BOOLEAN"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("comfy")
    adapter = root / "sweep_adapter.safetensors"  # only its name is listed; no prompt here ever loads it
    adapter.write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    with ComfyServer(root, adapters=[adapter]) as s:
        yield s


def post_prompt(server: ComfyServer, prompt: dict) -> tuple[int, dict]:
    """POST /prompt with NaN and Infinity written as JSON tokens; the HTTP status and the answer."""
    body = json.dumps({"prompt": prompt}, allow_nan=True).encode()
    req = urllib.request.Request(server.url + "/prompt", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def pack_nodes(info: dict) -> dict[str, dict]:
    """The pack's entries of /object_info: the nodes from the module that registered PaletteInput."""
    module = info["PaletteInput"]["python_module"]
    return {name: node for name, node in info.items() if node["python_module"] == module}


def default_of(kind: str, opts: dict):
    """A widget's default as the frontend would send it (a combo without one: its first option)."""
    if "default" in opts:
        return opts["default"]
    if kind == "COMBO":
        return (opts.get("options") or [""])[0]
    return {"FLOAT": 0.0, "INT": 0, "STRING": "", "BOOLEAN": False}[kind]


def build_prompt(name: str, node: dict, values: dict) -> dict:
    """The node under test with ``values`` for its widgets, poisoned suppliers for its links, and an output."""
    prompt = {
        "1": {"class_type": "PaletteInput", "inputs": {"palette": "#e63946, #1d3557"}},
        "2": {"class_type": "PaletteInput", "inputs": POISON["PALETTE"][1]},  # validated only where linked
    }
    inputs = dict(values)
    links = [(k, spec[0]) for k, spec in node["input"].get("required", {}).items() if spec[0] not in WIDGETS]
    for i, (key, kind) in enumerate(links):
        class_type, supplier_inputs, slot = POISON[kind.split(",")[0]]  # a MultiType: its first type
        prompt[str(30 + i)] = {"class_type": class_type, "inputs": supplier_inputs}
        inputs[key] = [str(30 + i), slot]
    prompt[NODE] = {"class_type": name, "inputs": inputs}
    outputs = node["output"]
    if links:
        prompt[SINK] = {"class_type": "PreviewAny", "inputs": {"source": [NODE, 0]}}
    elif "IMAGE" in outputs:  # SaveImage without its filename_prefix fails by itself
        prompt[SINK] = {"class_type": "SaveImage", "inputs": {"images": [NODE, outputs.index("IMAGE")]}}
    elif outputs == ["PALETTE_ADAPTER"]:
        prompt["40"] = {"class_type": POISON["MODEL"][0], "inputs": POISON["MODEL"][1]}
        prompt["41"] = {
            "class_type": "ApplyPaletteAdapter",
            "inputs": {"model": ["40", 0], "adapter": [NODE, 0], "condition": ["1", 0], "weight": 1.0}
            | {"start_percent": 0.0, "end_percent": 1.0, "blocks": "from file"},
        }
        prompt[SINK] = {"class_type": "PreviewAny", "inputs": {"source": ["41", 0]}}
    else:
        raise AssertionError(f"{name}: no recipe for a prompt that reaches it without running; extend build_prompt")
    return prompt


def bad_values(kind: str, opts: dict) -> list:
    """The values each widget of ``kind`` must reject."""
    if kind == "COMBO":
        return [UNKNOWN]
    if kind not in ("FLOAT", "INT"):
        return []
    values = [math.nan, math.inf, -math.inf] + ([1e30, -1e30] if kind == "FLOAT" else [])
    if "min" in opts:
        values.append(opts["min"] - 1 if kind == "INT" else float(opts["min"]) - 1.0)
    if "max" in opts:
        values.append(opts["max"] + 1 if kind == "INT" else float(opts["max"]) + 1.0)
    return values


def widgets_of(node: dict) -> dict[str, tuple[str, dict]]:
    """Every widget input, required and optional: its type and options."""
    sections = (node["input"].get("required", {}), node["input"].get("optional", {}))
    return {k: (spec[0], spec[1] if len(spec) > 1 else {}) for sec in sections for k, spec in sec.items()}


def error_texts(answer: dict, node_id: str) -> list[str]:
    """The details of every error ComfyUI reports for one node of the prompt."""
    return [e.get("details", "") for e in answer.get("node_errors", {}).get(node_id, {}).get("errors", [])]


def test_every_numeric_and_combo_input_rejects_bad_values_at_validation(server):
    info = server.get("/object_info")
    nodes = pack_nodes(info)
    assert len(nodes) >= 21 and {"EntropyDistanceControl", "ApplyPaletteAdapter", "PaletteRecolor"} <= set(nodes)
    swept = 0
    for name, node in sorted(nodes.items()):
        widgets = {k: v for k, v in widgets_of(node).items() if v[0] in WIDGETS}
        defaults = {k: default_of(kind, opts) for k, (kind, opts) in widgets.items()}
        status, answer = post_prompt(server, build_prompt(name, node, defaults))
        assert status == 400, f"{name} baseline was queued: {answer}"
        assert answer["node_errors"] and NODE not in answer["node_errors"], f"{name} rejects its defaults: {answer}"
        for key, (kind, opts) in widgets.items():
            for value in bad_values(kind, opts):
                status, answer = post_prompt(server, build_prompt(name, node, {**defaults, key: value}))
                where = f"{name}.{key} = {value!r}"
                assert status == 400, f"{where} was queued: {answer}"
                texts = error_texts(answer, NODE)
                ours = f"{name}: input '{key}' = {value!r}; allowed "
                assert any(ours in t for t in texts), f"{where}: no error naming it: {texts}"
                lines = [line for t in texts for line in t.split(" - ", 1)[-1].split("\n")]
                assert all(key in line for line in lines), f"{where}: errors about other inputs: {lines}"
                swept += 1
    assert swept >= 150
    # Nothing of the sweep was queued, so nothing ran.
    assert server.get("/history") == {}
    queue = server.get("/queue")
    assert queue["queue_running"] == [] and queue["queue_pending"] == []


def test_the_issues_examples_name_node_input_value_and_range(server):
    info = server.get("/object_info")
    cases = [
        ("EntropyDistanceControl", "entropy_mode", "sideways", "allowed one of 'off', 'absolute', 'relative'"),
        ("EntropyDistanceControl", "entropy", 1e30, "allowed -12..12"),
        ("EntropyDistanceControl", "entropy", math.nan, "allowed -12..12"),
        ("ApplyPaletteAdapter", "start_percent", -1.0, "allowed 0..1"),
        ("ApplyPaletteAdapter", "end_percent", 5.0, "allowed 0..1"),
        ("ApplyPaletteAdapter", "weight", math.nan, "allowed -2..3"),
        ("ApplyPaletteAdapter", "start_percent", math.nan, "allowed 0..1"),
        ("PaletteRecolor", "matching", "nearest", "allowed one of 'optimal transport', 'by share order'"),
    ]
    for name, key, value, allowed in cases:
        node = info[name]
        defaults = {k: default_of(kind, opts) for k, (kind, opts) in widgets_of(node).items() if kind in WIDGETS}
        status, answer = post_prompt(server, build_prompt(name, node, {**defaults, key: value}))
        assert status == 400
        assert any(f"{name}: input '{key}' = {value!r}; {allowed}" in t for t in error_texts(answer, NODE)), answer
