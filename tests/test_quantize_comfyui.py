"""The Palette Quantize node inside a real ComfyUI (loaded with ComfyUI's own loader)."""

from __future__ import annotations

import pytest
import torch
from comfyhost import load_comfyui, requires_comfyui, run_node

pytestmark = [requires_comfyui, pytest.mark.comfyui]

PALETTE = "#264653, #2a9d8f, #e9c46a:0, #f4a261, #e76f51"


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    base = torch.rand(2, 6, 5, 3, generator=g)
    return torch.nn.functional.interpolate(base.permute(0, 3, 1, 2), size=(48, 40), mode="bilinear").permute(0, 2, 3, 1)


def test_node_is_registered_with_its_types():
    cls = load_comfyui().classes["PaletteQuantize"]
    assert list(cls.RETURN_TYPES) == ["IMAGE"]
    spec = cls.INPUT_TYPES()
    assert spec["required"]["palette"][0] == "PALETTE"
    dither = spec["required"]["dither"][1]
    assert dither["default"] == "floyd-steinberg"
    assert dither["options"] == [
        "floyd-steinberg",
        "atkinson",
        "bayer 2x2",
        "bayer 4x4",
        "bayer 8x8",
        "blue noise",
        "none",
    ]
    assert spec["optional"]["mask"][0] == "MASK"
    assert (spec["required"]["pixel_size"][1]["min"], spec["required"]["pixel_size"][1]["default"]) == (1, 1)


@pytest.mark.parametrize("dither", ["floyd-steinberg", "atkinson", "bayer 8x8", "blue noise", "none"])
def test_quantize_node_gives_palette_colours(image, dither):
    (palette, _) = run_node("PaletteInput", palette=PALETTE)
    (out,) = run_node(
        "PaletteQuantize", image=image, palette=palette, dither=dither, distance="perceptual (CIELAB)", pixel_size=1
    )
    assert isinstance(out, torch.Tensor) and out.shape == image.shape and out.dtype == torch.float32
    used = {tuple(round(float(v) * 255) for v in px) for px in out.reshape(-1, 3)}
    allowed = {(0x26, 0x46, 0x53), (0x2A, 0x9D, 0x8F), (0xF4, 0xA2, 0x61), (0xE7, 0x6F, 0x51)}  # weight 0 left out
    assert used <= allowed and len(used) >= 2


def test_pixel_size_and_mask(image):
    (palette, _) = run_node("PaletteInput", palette=PALETTE)
    mask = torch.zeros(48, 40)
    mask[:, 20:] = 1.0
    (out,) = run_node(
        "PaletteQuantize", image=image, palette=palette, dither="bayer 4x4", distance="rgb", pixel_size=4, mask=mask
    )
    assert torch.equal(out[:, :, :20], image[:, :, :20])  # mask 0: the original pixels
    cells = out[:, :, 20:].reshape(2, 12, 4, 5, 4, 3)
    assert torch.equal(cells, cells[:, :, :1, :, :1].expand_as(cells))  # 4x4 blocks of one colour


def test_wrong_mask_size_is_a_clear_error(image):
    (palette, _) = run_node("PaletteInput", palette=PALETTE)
    with pytest.raises(ValueError, match="does not fit the image 48x40") as err:
        run_node(
            "PaletteQuantize",
            image=image,
            palette=palette,
            dither="none",
            distance="rgb",
            pixel_size=1,
            mask=torch.ones(1, 32, 32),
        )
    assert type(err.value).__name__ == "InputShapeError"
    cls = load_comfyui().classes["PaletteQuantize"]
    assert "pixel_size" in cls.validate_inputs(dither="none", distance="rgb", pixel_size=0)
    assert "dither" in cls.validate_inputs(dither="zigzag", distance="rgb", pixel_size=1)
