"""Palette To Text, Palette Color Names, Palette Adherence and the Palette node's other-pack forms in a real ComfyUI.

The node tests run the classes ComfyUI loaded (validate_inputs first, as the executor does). The last test
starts a real server and queues a prompt whose Palette node gets its text through a link, which ComfyUI
validates with the value None, and whose Palette Adherence node is the prompt's only output besides
Preview Any.
"""

from __future__ import annotations

import asyncio
import json

import pytest
import torch
from comfyhost import load_comfyui, requires_comfyui, run_node

pytestmark = [requires_comfyui, pytest.mark.comfyui]

PALETTE = "#e63946:2, #f1faee, #1d3557"


@pytest.fixture(scope="module")
def host():
    return load_comfyui()


@pytest.fixture()
def temp_dir(tmp_path, monkeypatch):
    """ComfyUI's temp folder (where node previews are saved) moved into the test's own folder."""
    import folder_paths

    monkeypatch.setattr(folder_paths, "temp_directory", str(tmp_path))
    return tmp_path


def test_nodes_are_registered_with_their_types(host):
    classes = host.classes
    assert list(classes["PaletteToText"].RETURN_TYPES) == ["STRING"]
    assert list(classes["PaletteColorNames"].RETURN_TYPES) == ["STRING", "STRING"]
    adherence = classes["PaletteAdherence"]
    assert list(adherence.RETURN_TYPES) == ["FLOAT", "FLOAT", "FLOAT", "IMAGE", "MASK", "STRING"]
    assert adherence.OUTPUT_NODE is True
    spec = adherence.INPUT_TYPES()["required"]
    assert spec["threshold"][1]["default"] == 10.0 and spec["samples"][1]["default"] == 1024
    forms = classes["PaletteToText"].INPUT_TYPES()["required"]["format"][1]["options"]
    assert forms == ["hex list", "hex lines", "json", "gpl", "rgb tuples", "coolors url"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[(230, 57, 70), (241, 250, 238), (29, 53, 87)]", ["#e63946", "#f1faee", "#1d3557"]),
        ("[(0.9, 0.2235, 0.2745), (1.0, 1.0, 1.0)]", ["#e53946", "#ffffff"]),
        ("e63946\nf1faee\n#1d3557", ["#e63946", "#f1faee", "#1d3557"]),
        ("['#e63946', '#f1faee']", ["#e63946", "#f1faee"]),
        ("https://coolors.co/e63946-f1faee", ["#e63946", "#f1faee"]),
    ],
)
def test_palette_node_reads_other_packs_forms(text, expected):
    palette, preview = run_node("PaletteInput", palette=text)
    assert palette.hex == expected and tuple(preview.shape) == (1, 64, 512, 3)


def test_palette_node_checks_linked_text_when_it_runs(host):
    cls = host.classes["PaletteInput"]
    assert cls.validate_inputs(palette=None) is True  # a link: ComfyUI validates it with None
    assert "2 values; expected 3 numbers r, g, b" in cls.validate_inputs(palette="[(230, 57)]")
    with pytest.raises(ValueError, match="2 values; expected 3 numbers") as err:
        cls.execute(palette="[(230, 57)]")
    assert type(err.value).__name__ == "PaletteFormatError"


def test_comfyui_validates_a_linked_palette_text(host):
    import execution

    # Text from another node (Palette To Text here; the in-process host loads only this pack's nodes).
    prompt = {
        "0": {"class_type": "PaletteInput", "inputs": {"palette": PALETTE}},
        "1": {"class_type": "PaletteToText", "inputs": {"palette": ["0", 0], "format": "rgb tuples", "name": "p"}},
        "2": {"class_type": "PaletteInput", "inputs": {"palette": ["1", 0]}},
        "3": {"class_type": "PaletteToText", "inputs": {"palette": ["2", 0], "format": "json", "name": "p"}},
    }
    ok, errors, _ = asyncio.run(execution.validate_inputs("test", prompt, "3", {}))
    assert ok and errors == []
    prompt["3"]["inputs"]["format"] = "svg"
    ok, errors, _ = asyncio.run(execution.validate_inputs("test", prompt, "3", {}))
    assert not ok and "svg" in json.dumps(errors)


@pytest.mark.parametrize("form", ["hex list", "hex lines", "json", "rgb tuples", "coolors url"])
def test_palette_to_text_reads_back_in_the_palette_node(form):
    palette, _ = run_node("PaletteInput", palette=PALETTE)
    (text,) = run_node("PaletteToText", palette=palette, format=form, name="palette")
    back, _ = run_node("PaletteInput", palette=text)
    assert back.hex == palette.hex
    if form in ("hex list", "json"):
        assert back.weights_array.tolist() == pytest.approx([0.5, 0.25, 0.25], abs=1e-6)


def test_palette_to_text_gpl_and_ui(host):
    palette, _ = run_node("PaletteInput", palette=PALETTE)
    out = host.classes["PaletteToText"].execute(palette=palette, format="gpl", name="sunset")
    text = out.args[0]
    assert text.startswith("GIMP Palette\nName: sunset\n") and "230  57  70\t#e63946" in text
    assert out.ui == {"text": (text,)}


def test_palette_color_names(host):
    palette, _ = run_node("PaletteInput", palette="#0343df, #e50000:3, #e60101, #ffffff")
    names, details = run_node("PaletteColorNames", palette=palette, style="names", order="palette order")
    assert names == "blue, red, white"  # the two reds are named once
    lines = details.splitlines()
    assert lines[1].split() == ["#e50000", "67%", "red", "(#e50000,", "ΔE", "0.0)"]
    shares, _ = run_node("PaletteColorNames", palette=palette, style="names with shares", order="heaviest first")
    assert shares == "red (67%), blue (17%), white (17%)"
    hexes, _ = run_node("PaletteColorNames", palette=palette, style="names with hex", order="palette order")
    assert hexes == "blue (#0343df), red (#e50000), white (#ffffff)"
    assert "style: 'loud' is unknown" in host.classes["PaletteColorNames"].validate_inputs(style="loud", order=None)


def test_palette_adherence_scores_marks_and_shows(host, temp_dir):
    palette, _ = run_node("PaletteInput", palette=PALETTE)
    # Columns in the palette's proportions (32, 16 and 16 of 64); a quarter of the second image is green.
    image = palette.colors[torch.tensor([0] * 32 + [1] * 16 + [2] * 16)].expand(2, 40, 64, 3).clone()
    image[1, :, :16] = torch.tensor([0.0, 0.8, 0.2])
    out = host.classes["PaletteAdherence"].execute(image=image, palette=palette, threshold=10.0, samples=1024)
    emd, qc, off, marked, mask, report = out.args
    assert off == 0.0 and 0 <= emd < 0.05 and 0 <= qc < 0.1
    assert tuple(marked.shape) == (2, 40, 64, 3) and tuple(mask.shape) == (2, 40, 64)
    assert float(mask[1].mean()) == 0.25 and float(mask[0].sum()) == 0
    assert torch.all(marked[1, :, :16] == torch.tensor([1.0, 0.0, 1.0]))
    lines = report.splitlines()
    assert lines[0] == "image  palette_emd  quadratic_chi  off-palette (ΔE > 10)"
    assert lines[2].split()[0] == "1" and lines[2].split()[-1] == "25.0%" and lines[3].split()[0] == "mean"
    assert float(lines[2].split()[1]) > emd
    assert out.ui["text"] == (report,)
    saved = out.ui["images"]
    assert len(saved) == 2 and all((temp_dir / s["filename"]).is_file() for s in saved)


def test_palette_adherence_validation(host):
    cls = host.classes["PaletteAdherence"]
    assert cls.validate_inputs(threshold=None, samples=None) is True
    assert "threshold: 0.0 must be > 0" in cls.validate_inputs(threshold=0.0, samples=1024)
    assert "samples: 0 must be a whole number" in cls.validate_inputs(threshold=10.0, samples=0)


def test_a_prompt_through_the_server(tmp_path):
    from comfyserver import ComfyServer

    prompt = {
        "1": {"class_type": "PrimitiveStringMultiline", "inputs": {"value": "[(230, 57, 70), (241, 250, 238)]"}},
        "2": {"class_type": "PaletteInput", "inputs": {"palette": ["1", 0]}},
        "3": {"class_type": "PaletteToText", "inputs": {"palette": ["2", 0], "format": "hex list", "name": "p"}},
        "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 0]}},
        "5": {
            "class_type": "PaletteColorNames",
            "inputs": {"palette": ["2", 0], "style": "names", "order": "palette order"},
        },
        "6": {"class_type": "PreviewAny", "inputs": {"source": ["5", 0]}},
        "7": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 32, "batch_size": 1, "color": 0xE63946}},
        "8": {
            "class_type": "PaletteAdherence",
            "inputs": {"image": ["7", 0], "palette": ["2", 0], "threshold": 10.0, "samples": 256},
        },
    }
    with ComfyServer(tmp_path / "comfy") as server:
        outputs = server.run(prompt, timeout=300)["outputs"]
        # Linked text passes validation and fails when the Palette node runs, with the parser's message.
        bad = dict(prompt, **{"1": {"class_type": "PrimitiveStringMultiline", "inputs": {"value": "[(230, 57)]"}}})
        with pytest.raises(AssertionError, match="2 values; expected 3 numbers r, g, b"):
            server.run(bad, timeout=300)
        assert server.get("/system_stats")["system"]  # and the server carries on
    assert outputs["4"]["text"] == ["#e63946, #f1faee"]
    assert outputs["6"]["text"] == ["pinkish red, off white"]
    report = outputs["8"]["text"][0].splitlines()
    assert report[1].split()[-1] == "0.0%"  # all pixels are the palette's first colour
    assert len(outputs["8"]["images"]) == 1 and outputs["8"]["images"][0]["type"] == "temp"
