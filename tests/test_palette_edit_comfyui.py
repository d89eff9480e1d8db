"""The palette craft nodes (Palette From Color, Palette Edit, Palette Merge) inside a real ComfyUI."""

from __future__ import annotations

import math

import pytest
from comfyhost import load_comfyui, requires_comfyui, run_node

pytestmark = [requires_comfyui, pytest.mark.comfyui]


def test_nodes_are_registered_with_their_types():
    classes = load_comfyui().classes
    for node_id in ("PaletteFromColor", "PaletteEdit", "PaletteMerge"):
        assert list(classes[node_id].RETURN_TYPES) == ["PALETTE", "IMAGE"], node_id
    spec = classes["PaletteFromColor"].INPUT_TYPES()["required"]
    assert spec["scheme"][1]["options"][:3] == ["complementary", "analogous", "triadic"]
    assert spec["count"][1]["min"] == 1 and spec["count"][1]["max"] == 64
    edit = classes["PaletteEdit"].INPUT_TYPES()["required"]
    assert edit["palette"][0] == "PALETTE" and "keep_heaviest" in edit["operation"][1]["options"]


def test_palette_from_color_edit_and_merge_chain():
    palette, preview = run_node("PaletteFromColor", color="#e63946", scheme="triadic", count=6, lightness_spread=0.3)
    assert len(palette) == 6 and palette.hex[0] == "#e63946"
    assert tuple(preview.shape) == (1, 64, 512, 3)
    weighted, _ = run_node("PaletteInput", palette="#264653, #2a9d8f:3, #e9c46a:2")
    (heaviest, _) = run_node("PaletteEdit", palette=weighted, operation="keep_heaviest", amount=0.1, n=2)
    assert heaviest.hex == ["#2a9d8f", "#e9c46a"]
    assert heaviest.weights_array.tolist() == pytest.approx([0.6, 0.4])
    (by_weight, _) = run_node("PaletteEdit", palette=weighted, operation="sort_weight", amount=0.1, n=5)
    assert by_weight.hex == ["#2a9d8f", "#e9c46a", "#264653"]
    (lighter, _) = run_node("PaletteEdit", palette=weighted, operation="lighten", amount=1.0, n=5)
    assert lighter.hex == ["#ffffff"] * 3
    merged, merged_preview = run_node("PaletteMerge", palette_a=heaviest, palette_b=palette, balance=0.5)
    assert merged.hex[:2] == ["#2a9d8f", "#e9c46a"] and len(merged) == 8
    assert float(merged.weights_array.sum()) == pytest.approx(1.0)
    assert tuple(merged_preview.shape) == (1, 64, 512, 3)


def test_bad_inputs_fail_validation_with_the_reason():
    with pytest.raises(ValueError, match="is not a colour"):
        run_node("PaletteFromColor", color="#12345g", scheme="triadic", count=5, lightness_spread=0.3)
    with pytest.raises(ValueError, match="count: 65 must be a whole number of colours from 1 to 64"):
        run_node("PaletteFromColor", color="#e63946", scheme="triadic", count=65, lightness_spread=0.3)
    palette, _ = run_node("PaletteInput", palette="#264653, #2a9d8f")
    with pytest.raises(ValueError, match="amount: nan must be a number from 0 to 1"):
        run_node("PaletteEdit", palette=palette, operation="darken", amount=math.nan, n=5)
    # Linked inputs are None at validation time: the node passes them and checks them when it runs.
    cls = load_comfyui().classes["PaletteEdit"]
    assert cls.validate_inputs(operation=None, amount=None, n=None) is True
    merge = load_comfyui().classes["PaletteMerge"]
    with pytest.raises(ValueError, match="balance: 2.0 must be a number from 0 to 1") as err:
        merge.execute(palette_a=palette, palette_b=palette, balance=2.0)
    assert type(err.value).__name__ == "PaletteError"
