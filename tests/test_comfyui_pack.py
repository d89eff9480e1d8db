"""The pack inside a real ComfyUI: it loads, registers its folder and nodes, and the palette nodes run."""

from __future__ import annotations

import pytest
import torch
from comfyhost import load_comfyui, requires_comfyui, run_node

pytestmark = [requires_comfyui, pytest.mark.comfyui]


def test_pack_loads_and_registers_models_folder():
    host = load_comfyui()
    import folder_paths

    paths, exts = folder_paths.folder_names_and_paths["palette_adapter"]
    assert any(p.endswith("palette_adapter") for p in paths)
    assert ".safetensors" in exts
    assert "PaletteInput" in host.classes
    assert list(host.classes["PaletteInput"].RETURN_TYPES) == ["PALETTE", "IMAGE"]


def test_palette_input_parses_and_previews():
    palette, image = run_node("PaletteInput", palette="#ff0000:3, #0000ff")
    assert palette.hex == ["#ff0000", "#0000ff"]
    assert image.shape == (1, 64, 512, 3)
    assert torch.equal(image[0, 0, 0], torch.tensor([1.0, 0, 0]))
    assert torch.equal(image[0, 0, 383], torch.tensor([1.0, 0, 0]))
    assert torch.equal(image[0, 0, 384], torch.tensor([0.0, 0, 1]))


def test_palette_input_rejects_bad_text_before_queueing():
    cls = load_comfyui().classes["PaletteInput"]
    verdict = cls.validate_inputs(palette="#12345g, #fff")
    assert isinstance(verdict, str) and '"#12345g" is not a colour' in verdict


def test_palette_from_image_extracts_weighted_colours():
    image = torch.zeros(2, 256, 256, 3)  # 256 px: Pylette's resample leaves it as it is
    image[0, :192] = torch.tensor([1.0, 0.0, 0.0])  # 75% red, 25% black
    palette, preview = run_node("PaletteFromImage", image=image, size=3, method="kmeans")
    assert palette.hex == ["#ff0000", "#000000"]  # the first image of the batch
    assert palette.weights.tolist() == pytest.approx([0.75, 0.25])
    assert preview.shape == (1, 64, 512, 3)
