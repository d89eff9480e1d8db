"""The example workflows (example_workflows/): files, UI/API agreement, palettes; with COMFYUI_PATH, a real ComfyUI.

Host-independent tests always run. With COMFYUI_PATH, a real ComfyUI server (tests/workflowhost.py: empty
placeholder model files, the example inputs) checks every node, widget value and link against /object_info,
accepts every API copy on POST /prompt, and runs the model-free recolour workflow. With Chromium, Node.js and
playwright-core (tests/browser: npm install) too, every workflow is loaded into the real frontend, which must
know every node and whose own API form of the graph must equal the API copy.
"""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from comfyhost import requires_comfyui
from PIL import Image
from workflowhost import INPUTS, VIRTUAL_NODES, api_copy, browser_unavailable, example_server, ui_workflows

from palette_core.color import srgb_to_lab
from palette_core.palette import Palette

REPO = Path(__file__).resolve().parents[1]
FOLDER = REPO / "example_workflows"  # where ComfyUI looks for a pack's templates
WORKFLOWS = ui_workflows()
NAMES = [p.stem for p in WORKFLOWS]
# Frontend-only values stored in widgets_values right after their widget (absent from the API format).
CONTROL_AFTER_GENERATE = {"fixed", "increment", "decrement", "randomize"}
EXPECTED = {
    "palette_adapter_txt2img": {"PaletteInput", "PalettePreview", "PaletteAdapterLoader", "ApplyPaletteAdapter"},
    "palette_adapter_negative_entropy": {"ApplyPaletteAdapter", "NegativePalette", "EntropyDistanceControl"},
    "histogram_from_reference": {"LoadImage", "HistogramFromImage", "ApplyPaletteAdapter"},
    "training_free_alignment": {"PaletteAlign", "PaletteInput"},
    "sw_palette_guidance": {"PaletteGuidance", "PaletteInput"},
    "recolor_image": {"LoadImage", "PaletteRecolor", "SaveImage"},
    "colorize_with_palette": {"LoadImage", "PaletteRecolor", "LuminanceLock"},
    "palette_align_sd15": {"PaletteAlign", "PaletteInput", "EmptyLatentImage"},
    "palette_align_sd35": {"PaletteAlign", "PaletteInput", "EmptySD3LatentImage"},
    "palette_align_flux": {"PaletteAlign", "PaletteInput", "EmptySD3LatentImage", "FluxGuidance"},
    "two_regions_two_palettes": {"PaletteAlign", "PaletteInput", "SolidMask", "MaskComposite", "InvertMask"},
    "auto_negative_two_pass": {"PaletteGuidance", "AutoNegativePalette", "KSampler", "VAEDecode"},
    "palette_craft_quantize": {"LoadImage", "PaletteFromColor", "PaletteEdit", "PaletteQuantize", "SaveImage"},
}


MODEL_FREE = {"recolor_image", "palette_craft_quantize"}  # run whole over HTTP by their own tests below


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def real_nodes(ui: dict) -> list[dict]:
    return [n for n in ui["nodes"] if n["type"] not in VIRTUAL_NODES]


def api_literals(node: dict) -> list:
    return [v for v in node["inputs"].values() if not isinstance(v, list)]


# --- host-independent ---------------------------------------------------------------------------------------


def test_every_workflow_has_its_thumbnail_and_api_copy():
    assert set(EXPECTED) <= set(NAMES)
    for path in WORKFLOWS:
        assert api_copy(path).is_file(), f"{path.name}: no {api_copy(path).relative_to(REPO)}"
        thumb = path.with_suffix(".jpg")
        assert thumb.is_file(), f"{path.name}: no thumbnail {thumb.name}"
        with Image.open(thumb) as im:
            assert im.format == "JPEG" and im.width == 512, (thumb.name, im.format, im.size)
        assert thumb.stat().st_size < 150_000, thumb.name
    extra = {p.name for p in (FOLDER / "api").iterdir()} - {api_copy(p).name for p in WORKFLOWS}
    assert not extra, f"API copies without a UI workflow: {extra}"


@pytest.mark.parametrize("name", NAMES)
def test_ui_workflow_is_well_formed(name):
    ui = load(FOLDER / f"{name}.json")
    assert ui["version"] == 0.4 and ui["extra"]["info"]["name"] and ui["extra"]["info"]["description"]
    nodes = {n["id"]: n for n in ui["nodes"]}
    assert len(nodes) == len(ui["nodes"]) and ui["last_node_id"] == max(nodes)
    assert EXPECTED[name] <= {n["type"] for n in nodes.values()}
    ids = [link[0] for link in ui["links"]]
    assert len(set(ids)) == len(ids) and ui["last_link_id"] == max(ids)
    for link_id, src, src_slot, dst, dst_slot, kind in ui["links"]:
        assert link_id in nodes[src]["outputs"][src_slot]["links"]
        assert nodes[src]["outputs"][src_slot]["type"] == kind
        assert nodes[dst]["inputs"][dst_slot]["link"] == link_id
    stored = {(n["id"], i) for n in nodes.values() for i, x in enumerate(n["inputs"]) if x.get("link") is not None}
    assert stored == {(link[3], link[4]) for link in ui["links"]}, "an input refers to a link that does not exist"
    for node in nodes.values():
        x, y = node["pos"]
        w, h = node["size"]
        assert 0 <= x < 4000 and 0 <= y < 3000 and 0 < w <= 1000 and 0 < h <= 1000, (node["id"], node["pos"])


@pytest.mark.parametrize("name", NAMES)
def test_ui_and_api_copies_agree(name):
    ui, api = load(FOLDER / f"{name}.json"), load(api_copy(FOLDER / f"{name}.json"))
    nodes = {n["id"]: n for n in real_nodes(ui)}
    assert {str(i): n["type"] for i, n in nodes.items()} == {k: v["class_type"] for k, v in api.items()}
    for node_id, node in nodes.items():
        assert api[str(node_id)]["_meta"]["title"] == node["title"]
    # Links: every UI link is the API input of that name, and the API has no other links.
    api_links = {(k, name): tuple(v) for k, n in api.items() for name, v in n["inputs"].items() if isinstance(v, list)}
    ui_links = {}
    for _, src, src_slot, dst, dst_slot, _ in ui["links"]:
        if dst in nodes:
            ui_links[(str(dst), nodes[dst]["inputs"][dst_slot]["name"])] = (str(src), src_slot)
    assert ui_links == api_links
    # Widget values: the UI's in order, less the frontend-only ones, are the API's literal inputs in order.
    for node_id, node in nodes.items():
        values = list(node["widgets_values"])
        literal = api_literals(api[str(node_id)])
        if node["type"] == "LoadImage":
            assert values.pop() == "image"  # the upload button's value
        if node["type"].startswith("KSampler"):
            assert values.pop(1) in CONTROL_AFTER_GENERATE
        assert values == literal, f"node {node_id} ({node['type']})"


def test_colorize_keeps_the_grey_images_structure():
    api = load(FOLDER / "api" / "colorize_with_palette.api.json")
    (ksampler,) = [n for n in api.values() if n["class_type"] == "KSampler"]
    assert 0.5 <= ksampler["inputs"]["denoise"] <= 0.7


def test_workflow_files_are_what_the_generator_writes():
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "make_workflows.py"), "--check"], capture_output=True, text=True
    )
    assert out.returncode == 0, f"run scripts/make_workflows.py: {out.stdout}{out.stderr}"


@pytest.mark.parametrize("name", NAMES)
def test_palette_texts_parse_and_inputs_ship(name):
    api = load(api_copy(FOLDER / f"{name}.json"))
    for node in api.values():
        if node["class_type"] == "PaletteInput":
            palette = Palette.parse(node["inputs"]["palette"])
            assert 2 <= len(palette.colors) <= 8
            assert abs(float(palette.weights.sum()) - 1.0) < 1e-6
        if node["class_type"] == "LoadImage":
            image = INPUTS / node["inputs"]["image"]
            assert image.is_file(), f"{name}: {image.name} is not shipped in example_workflows/input"
            with Image.open(image) as im:
                assert im.mode == "RGB" and max(im.size) <= 1024


# --- a real ComfyUI -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with example_server(tmp_path_factory.mktemp("workflows")) as s:
        yield s


@pytest.fixture(scope="module")
def object_info(server) -> dict:
    return server.get("/object_info")


def widget_inputs(info: dict) -> list[tuple[str, str, dict, list | None]]:
    """(name, type, options, combo choices) of a node's widget inputs in the frontend's order."""
    out = []
    for section in ("required", "optional"):
        for name in info["input_order"].get(section, []):
            kind, *rest = info["input"][section][name]
            opts = rest[0] if rest else {}
            if isinstance(kind, list):
                out.append((name, "COMBO", opts, kind))
            elif kind == "COMBO":
                out.append((name, "COMBO", opts, opts["options"]))
            elif kind in ("INT", "FLOAT", "STRING", "BOOLEAN") and not opts.get("forceInput"):
                out.append((name, kind, opts, None))
    return out


def check_value(where: str, kind: str, opts: dict, choices: list | None, value) -> None:
    if kind == "COMBO":
        assert value in choices, f"{where}: not one of {choices[:8]}"
    elif kind == "BOOLEAN":
        assert isinstance(value, bool), where
    elif kind == "STRING":
        assert isinstance(value, str), where
    else:
        assert isinstance(value, (int, float)) and not isinstance(value, bool), where
        if kind == "INT":
            assert float(value).is_integer(), where
        assert opts.get("min", -math.inf) <= value <= opts.get("max", math.inf), f"{where}: outside min/max"


def types_compatible(output_type: str, input_type: str) -> bool:
    """ComfyUI's link rule (comfy_execution/validation.py): equal, '*', or overlapping comma-separated unions."""
    if "*" in (output_type, input_type):
        return True
    return bool(set(output_type.split(",")) & set(input_type.split(",")))


@requires_comfyui
@pytest.mark.comfyui
@pytest.mark.parametrize("name", NAMES)
def test_nodes_widgets_and_links_are_valid_for_comfyui(name, object_info):
    ui = load(FOLDER / f"{name}.json")
    api = load(api_copy(FOLDER / f"{name}.json"))
    nodes = {n["id"]: n for n in real_nodes(ui)}
    for node in nodes.values():
        assert node["type"] in object_info, f"unknown node type {node['type']}"
        info = object_info[node["type"]]
        values = list(node["widgets_values"])
        for wname, kind, opts, choices in widget_inputs(info):
            where = f"{name}: node {node['id']} ({node['type']}) widget {wname}"
            assert values, f"{where}: missing"
            value = values.pop(0)
            check_value(f"{where}={value!r}", kind, opts, choices, value)
            assert api[str(node["id"])]["inputs"][wname] == value, f"{where}: the API copy differs"
            if opts.get("control_after_generate"):
                assert values.pop(0) in CONTROL_AFTER_GENERATE, where
            if opts.get("image_upload"):
                assert values.pop(0) == "image", where
        assert not values, f"{name}: node {node['id']} ({node['type']}) has {len(values)} widget values too many"
        sockets = {
            n: spec[0]
            for section in ("required", "optional")
            for n, spec in info["input"].get(section, {}).items()
            if not isinstance(spec[0], list)
        }
        for slot in node["inputs"]:
            assert slot["name"] in sockets, f"{name}: node {node['id']} has no input {slot['name']}"
        required = set(info["input"].get("required", {})) - {w[0] for w in widget_inputs(info)}
        connected = {x["name"] for x in node["inputs"] if x.get("link") is not None}
        assert required <= connected, f"{name}: node {node['id']} ({node['type']}) unconnected {required - connected}"
    for link_id, src, src_slot, dst, dst_slot, kind in ui["links"]:
        if dst not in nodes:
            continue
        out_type = object_info[nodes[src]["type"]]["output"][src_slot]
        in_name = nodes[dst]["inputs"][dst_slot]["name"]
        info = object_info[nodes[dst]["type"]]["input"]
        in_type = {**info.get("required", {}), **info.get("optional", {})}[in_name][0]
        assert out_type == kind and types_compatible(out_type, in_type), f"{name}: link {link_id} {out_type}->{in_type}"


@requires_comfyui
@pytest.mark.comfyui
def test_comfyui_lists_the_workflows_as_templates(server):
    listed = server.get("/workflow_templates")
    assert sorted(listed["palette-control"]) == sorted(NAMES)  # the API copies in example_workflows/api are not listed
    assert server.get("/api/workflow_templates/palette-control/recolor_image.json")["nodes"]


@requires_comfyui
@pytest.mark.comfyui
@pytest.mark.parametrize("name", NAMES)
def test_cnr_id_names_the_pack_comfyui_loaded_each_node_from(name, object_info):
    """What ComfyUI itself says (python_module) decides which nodes are this pack's: they carry its cnr_id."""
    for node in real_nodes(load(FOLDER / f"{name}.json")):
        module = object_info[node["type"]]["python_module"]
        props = node["properties"]
        if module == "custom_nodes.palette-control":
            assert props["cnr_id"] == "palette-control" and props["ver"], (name, node["type"])
        else:
            assert module.split(".")[0] in ("nodes", "comfy_extras"), (name, node["type"], module)
            assert props["cnr_id"] == "comfy-core", (name, node["type"])


@requires_comfyui
@pytest.mark.comfyui
def test_object_info_marks_only_the_adapter_nodes_experimental(object_info):
    ours = {k: v for k, v in object_info.items() if v["python_module"] == "custom_nodes.palette-control"}
    experimental = {k for k, v in ours.items() if v.get("experimental")}
    assert experimental == {k for k, v in ours.items() if v["category"] == "palette/adapter"}
    assert experimental == {
        "PaletteAdapterLoader",
        "HistogramFromImage",
        "NegativePalette",
        "EntropyDistanceControl",
        "ApplyPaletteAdapter",
    }


@requires_comfyui
@pytest.mark.comfyui
def test_loading_the_pack_put_the_example_photos_in_the_input_folder(server):
    listed = set(server.get("/object_info/LoadImage")["LoadImage"]["input"]["required"]["image"][0])
    assert {p.name for p in INPUTS.iterdir()} <= listed


def wait_for(server, prompt_id: str, timeout: float = 300) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        entry = server.get(f"/history/{prompt_id}").get(prompt_id)
        if entry and entry.get("status", {}).get("completed") is not None:
            return entry
        time.sleep(0.5)
    raise TimeoutError(prompt_id)


@requires_comfyui
@pytest.mark.comfyui
@pytest.mark.parametrize("name", [n for n in NAMES if n not in MODEL_FREE])
def test_api_copy_is_accepted_by_post_prompt(name, server):
    """A 200 with no node errors means the whole prompt validated; it then stops at the empty placeholder model."""
    prompt = load(api_copy(FOLDER / f"{name}.json"))
    reply = server.post("/prompt", {"prompt": prompt})
    assert reply["node_errors"] == {}
    entry = wait_for(server, reply["prompt_id"])
    assert entry["status"]["status_str"] == "error"  # an empty file is no checkpoint: nothing heavy was loaded
    failed = next(m[1] for m in entry["status"]["messages"] if m[0] == "execution_error")
    assert failed["node_type"] in ("CheckpointLoaderSimple", "PaletteAdapterLoader"), failed["exception_message"]


def lab(image: np.ndarray):
    import torch

    return srgb_to_lab(torch.from_numpy(image.astype(np.float64) / 255.0)).numpy()


@requires_comfyui
@pytest.mark.comfyui
def test_craft_workflow_runs_over_http_and_uses_only_the_edited_scheme(server):
    from palette_core.schemes import edit_palette, palette_from_color

    prompt = load(api_copy(FOLDER / "palette_craft_quantize.json"))
    entry = server.run(prompt)
    made = prompt["2"]["inputs"]
    edit = prompt["3"]["inputs"]
    palette = edit_palette(
        palette_from_color(made["color"], made["scheme"], made["count"], made["lightness_spread"]),
        edit["operation"],
        edit["amount"],
        edit["n"],
    )
    # SaveImage truncates 255 x value to 8 bits
    allowed = {tuple(c) for c in np.clip(palette.colors.numpy() * 255.0, 0, 255).astype(np.uint8).tolist()}
    saved = next(o["images"][0] for k, o in entry["outputs"].items() if prompt[k]["class_type"] == "SaveImage")
    out = np.asarray(Image.open(io.BytesIO(server.image(saved))).convert("RGB"))
    used = {tuple(c) for c in np.unique(out.reshape(-1, 3), axis=0).tolist()}
    assert used <= allowed and len(used) >= 3  # every pixel a palette colour, dithering mixes several


@requires_comfyui
@pytest.mark.comfyui
def test_recolor_workflow_runs_over_http_and_moves_colours_to_the_palette(server):
    prompt = load(api_copy(FOLDER / "recolor_image.json"))
    entry = server.run(prompt)
    saved = next(o["images"][0] for k, o in entry["outputs"].items() if prompt[k]["class_type"] == "SaveImage")
    out = np.asarray(Image.open(io.BytesIO(server.image(saved))).convert("RGB"))
    photo = np.asarray(Image.open(INPUTS / prompt["1"]["inputs"]["image"]).convert("RGB"))
    assert out.shape == photo.shape
    lab_out, lab_in = lab(out), lab(photo)
    assert np.abs(lab_out[..., 0] - lab_in[..., 0]).mean() < 0.5  # L* kept (8-bit rounding only)
    palette = Palette.parse(prompt["2"]["inputs"]["palette"])
    lab_pal = lab((palette.colors.numpy() * 255).round())

    def ab_distance(lab_img: np.ndarray) -> float:
        ab = lab_img[..., 1:].reshape(-1, 1, 2)
        return float(np.sqrt(((ab - lab_pal[None, :, 1:]) ** 2).sum(-1)).min(1).mean())

    assert ab_distance(lab_out) < 0.6 * ab_distance(lab_in)
    assert np.abs(out.astype(int) - photo).mean() > 10


@requires_comfyui
@pytest.mark.comfyui
def test_the_real_frontend_loads_every_workflow_and_exports_the_api_copy(server, tmp_path):
    reason = browser_unavailable()
    if reason:
        pytest.skip(reason)
    from workflowhost import workflow_shots

    report = workflow_shots(server.url, tmp_path, WORKFLOWS)
    for path in WORKFLOWS:
        entry = report[path.stem]
        assert entry["missing"] == [] and entry["errors"] == [], (path.stem, entry)
        assert entry["runError"] is None, (path.stem, entry["runError"])
        exported = json.loads((tmp_path / f"{path.stem}.prompt.json").read_text())
        assert exported == load(api_copy(path)), f"{path.stem}: the frontend's API export differs from the copy"
        with Image.open(tmp_path / f"{path.stem}.png") as shot:
            assert np.asarray(shot.convert("L")).std() > 5  # the graph was drawn
