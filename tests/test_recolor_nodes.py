"""The recolour nodes and the colourisation workflow inside a real ComfyUI."""

from __future__ import annotations

import asyncio
import json
import math

import pytest
import torch
from comfyhost import REPO, load_comfyui, requires_comfyui, run_node

pytestmark = [requires_comfyui, pytest.mark.comfyui]

WORKFLOW = REPO / "workflows" / "colorize_with_palette.json"
WORKFLOW_API = REPO / "workflows" / "api" / "colorize_with_palette.api.json"
CHECKPOINT = "sd_xl_base_1.0.safetensors"
# Frontend-only widgets that a workflow stores after the widget they belong to.
CONTROL_AFTER_GENERATE = {"fixed", "increment", "decrement", "randomize"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def lightness(x: torch.Tensor) -> torch.Tensor:
    from palette_core.color import srgb_to_lab

    return srgb_to_lab(x.double())[..., 0]


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    base = torch.rand(2, 8, 6, 3, generator=g)
    return torch.nn.functional.interpolate(base.permute(0, 3, 1, 2), size=(64, 48), mode="bilinear").permute(0, 2, 3, 1)


def test_nodes_are_registered_with_their_types():
    classes = load_comfyui().classes
    assert list(classes["PaletteRecolor"].RETURN_TYPES) == ["IMAGE"]
    assert list(classes["LuminanceLock"].RETURN_TYPES) == ["IMAGE"]
    assert list(classes["HistogramPreview"].RETURN_TYPES) == ["IMAGE"]
    spec = classes["PaletteRecolor"].INPUT_TYPES()["required"]
    assert spec["palette"][0] == "PALETTE"
    assert spec["strength"][1]["min"] == 0.0 and spec["strength"][1]["max"] == 1.0


def test_palette_recolor_keeps_shape_and_lightness(photo):
    (palette, _) = run_node("PaletteInput", palette="#264653, #2a9d8f, #e9c46a:2, #f4a261, #e76f51")
    (out,) = run_node(
        "PaletteRecolor",
        image=photo,
        palette=palette,
        strength=1.0,
        matching="optimal transport",
        keep_neutrals=False,
        source_colors=0,
    )
    assert out.shape == photo.shape and out.dtype == photo.dtype
    assert float((lightness(out) - lightness(photo)).abs().max()) < 0.01
    assert float((out - photo).abs().mean()) > 0.02
    (same,) = run_node(
        "PaletteRecolor",
        image=photo,
        palette=palette,
        strength=0.0,
        matching="by share order",
        keep_neutrals=True,
        source_colors=8,
    )
    assert float((same - photo).abs().max()) < 2e-3


def test_luminance_lock_node_resizes_and_broadcasts(photo):
    grey = photo.mean(-1, keepdim=True).expand(-1, -1, -1, 3)
    colour = torch.nn.functional.interpolate(photo.permute(0, 3, 1, 2), size=(32, 24), mode="bilinear")
    (out,) = run_node("LuminanceLock", image=colour.permute(0, 2, 3, 1)[:1], lightness_source=grey)
    assert out.shape == (2, 64, 48, 3)
    assert float((lightness(out) - lightness(grey)).abs().max()) < 0.01
    # The pack's own InputShapeError (a ValueError) from its mangled module, with a message that says what to do.
    with pytest.raises(ValueError, match="give the same number") as err:
        run_node("LuminanceLock", image=torch.rand(2, 8, 8, 3), lightness_source=torch.rand(3, 8, 8, 3))
    assert type(err.value).__name__ == "InputShapeError"


def test_histogram_preview_shows_the_colours_as_bars():
    img = torch.zeros(1, 16, 16, 3)
    img[:, :, :8, 0] = 1.0  # red half
    img[:, :, 8:, 2] = 1.0  # blue half
    (bars,) = run_node("HistogramPreview", image=img.expand(3, -1, -1, -1), bins=32)
    assert bars.shape == (3, 64, 512, 3)
    row = bars[0, 0]
    colours = {tuple(round(float(v), 2) for v in px) for px in row}
    assert len(colours) == 2  # two occupied bins, shown at their bin-centre colours
    assert torch.equal(row[:256], row[:1].expand(256, 3)) and torch.equal(row[256:], row[256:257].expand(256, 3))


# --- the colourisation workflow --------------------------------------------------------------------------


def _widget_inputs(spec: dict) -> list[tuple[str, str, dict, list | None]]:
    """(name, type, options, combo choices) of every widget input, in the order the frontend lays them out."""
    out = []
    for section in ("required", "optional"):
        for name, entry in spec.get(section, {}).items():
            kind, opts = entry[0], (entry[1] if len(entry) > 1 else {})
            if isinstance(kind, list):
                out.append((name, "COMBO", opts, kind))
            elif str(kind) in WIDGET_TYPES:
                out.append((name, str(kind), opts, opts.get("options")))
    return out


def _check_value(node: str, name: str, kind: str, opts: dict, choices: list | None, value) -> None:
    where = f"node {node} widget {name}={value!r}"
    if kind == "COMBO":
        assert value in choices, f"{where}: not one of the {len(choices)} options"
    elif kind == "BOOLEAN":
        assert isinstance(value, bool), where
    elif kind == "STRING":
        assert isinstance(value, str), where
    else:
        assert isinstance(value, (int, float)) and not isinstance(value, bool), where
        if kind == "INT":
            assert float(value).is_integer(), where
        assert opts.get("min", -math.inf) <= value <= opts.get("max", math.inf), f"{where}: outside min/max"


@pytest.fixture(scope="module")
def checkpoint_folder(tmp_path_factory):
    """A checkpoints folder holding an (empty) file of the workflow's checkpoint name, so its combo accepts it,
    and an input folder holding the workflow's example image (shipped in workflows/input)."""
    load_comfyui()
    import folder_paths

    folder = tmp_path_factory.mktemp("checkpoints")
    (folder / CHECKPOINT).write_bytes(b"")
    folder_paths.add_model_folder_path("checkpoints", str(folder))
    inputs = tmp_path_factory.mktemp("input")
    for image in (REPO / "workflows" / "input").iterdir():
        (inputs / image.name).symlink_to(image)
    previous_input = folder_paths.get_input_directory()
    folder_paths.set_input_directory(str(inputs))
    yield folder
    folder_paths.set_input_directory(previous_input)
    folder_paths.folder_names_and_paths["checkpoints"][0].remove(str(folder))


def test_ui_workflow_node_types_links_and_widget_values_are_valid(checkpoint_folder):
    classes = load_comfyui().classes
    wf = json.loads(WORKFLOW.read_text())
    nodes = {n["id"]: n for n in wf["nodes"]}
    assert {n["type"] for n in nodes.values()} >= {
        "LoadImage",
        "VAEEncode",
        "KSampler",
        "VAEDecode",
        "LuminanceLock",
        "SaveImage",
        "PaletteInput",
    }
    for node in nodes.values():
        assert node["type"] in classes, f"unknown node type {node['type']}"
        spec = classes[node["type"]].INPUT_TYPES()
        values = list(node.get("widgets_values", []))
        for name, kind, opts, choices in _widget_inputs(spec):
            assert values, f"node {node['id']} ({node['type']}): no value for widget {name}"
            _check_value(node["type"], name, kind, opts, choices, values.pop(0))
            if opts.get("control_after_generate"):
                assert values.pop(0) in CONTROL_AFTER_GENERATE
            if opts.get("image_upload"):
                assert values.pop(0) == "image"
        assert not values, f"node {node['id']} ({node['type']}): {len(values)} widget values left over"
    for link_id, src, src_slot, dst, dst_slot, kind in wf["links"]:
        out_type = classes[nodes[src]["type"]].RETURN_TYPES[src_slot]
        dst_input = nodes[dst]["inputs"][dst_slot]
        spec = classes[nodes[dst]["type"]].INPUT_TYPES()
        in_type = {**spec.get("required", {}), **spec.get("optional", {})}[dst_input["name"]][0]
        assert str(out_type) == str(in_type) == kind, f"link {link_id}: {out_type} -> {in_type} ({kind})"
        assert dst_input["link"] == link_id
        assert link_id in nodes[src]["outputs"][src_slot]["links"]
    ksampler = next(n for n in nodes.values() if n["type"] == "KSampler")
    assert 0.5 <= ksampler["widgets_values"][-1] <= 0.7  # denoise: keeps the grey image's structure


def test_api_workflow_matches_the_ui_workflow():
    ui, api = json.loads(WORKFLOW.read_text()), json.loads(WORKFLOW_API.read_text())
    assert {str(n["id"]): n["type"] for n in ui["nodes"]} == {k: v["class_type"] for k, v in api.items()}
    for src, src_slot, dst, dst_slot, _ in (link[1:] for link in ui["links"]):
        dst_node = next(n for n in ui["nodes"] if n["id"] == dst)
        assert api[str(dst)]["inputs"][dst_node["inputs"][dst_slot]["name"]] == [str(src), src_slot]
    for node in ui["nodes"]:
        literal = [v for v in api[str(node["id"])]["inputs"].values() if not isinstance(v, list)]
        assert literal == [v for v in node["widgets_values"] if v not in CONTROL_AFTER_GENERATE | {"image"}]


def test_api_workflow_passes_comfyui_validation(checkpoint_folder):
    load_comfyui()
    import execution

    prompt = json.loads(WORKFLOW_API.read_text())
    valid, error, outputs, node_errors = asyncio.run(execution.validate_prompt("test", prompt, None))
    assert valid, (error, node_errors)
    assert set(outputs) == {"11", "12"}


def test_workflow_post_processing_chain_runs(photo):
    """The workflow's tail (palette -> recolour -> lock to the grey input) on a stand-in decoded image."""
    api = json.loads(WORKFLOW_API.read_text())
    grey = photo[:1].mean(-1, keepdim=True).expand(-1, -1, -1, 3)
    decoded = photo[:1]
    palette, _ = run_node("PaletteInput", **api["6"]["inputs"])
    literal = {k: v for k, v in api["9"]["inputs"].items() if not isinstance(v, list)}
    (recoloured,) = run_node("PaletteRecolor", image=decoded, palette=palette, **literal)
    (final,) = run_node("LuminanceLock", image=recoloured, lightness_source=grey)
    assert final.shape == grey.shape
    assert float((lightness(final) - lightness(grey)).abs().max()) < 0.01
