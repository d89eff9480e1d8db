"""Regional palettes on the image nodes inside a real ComfyUI (docs/regions.md).

Palette Recolor, Luminance Lock and Palette From Image with their optional MASK input, run as ComfyUI runs
them: two chained recolours with two masks and contrasting palettes, the pixels outside both bit for bit
unchanged; a region's palette; the mask rule's errors from the nodes. The maths is tested without ComfyUI
in tests/test_regions_image.py.
"""

from __future__ import annotations

import logging

import pytest
import torch
from comfyhost import load_comfyui, requires_comfyui, run_node

pytestmark = [requires_comfyui, pytest.mark.comfyui]

WARM, COOL = "#d62828, #f77f00:2, #fcbf49", "#1d3557, #457b9d:2, #a8dadc"
H, W = 64, 96


@pytest.fixture(scope="module")
def host():
    return load_comfyui()


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    """A smooth random colour image ``[1, H, W, 3]`` (ComfyUI's IMAGE layout)."""
    base = torch.rand(1, 3, 4, 6, generator=torch.Generator().manual_seed(1))
    img = torch.nn.functional.interpolate(base, size=(H, W), mode="bilinear", align_corners=False)
    return img.permute(0, 2, 3, 1).contiguous()


def thirds() -> tuple[torch.Tensor, torch.Tensor]:
    """Left and right thirds ``[1, H, W]`` with a soft 8-pixel edge each; the middle is in neither."""
    x = torch.arange(W, dtype=torch.float32)
    left = ((W / 3 - x) / 8).clamp(0, 1).expand(1, H, W).contiguous()
    return left, left.flip(-1)


def emd(host, pixels: torch.Tensor, palette) -> float:
    return float(host.pack.palette_core.distance.palette_emd(pixels[None], palette.colors, palette.weights))


def test_the_image_nodes_take_an_optional_mask(host):
    for node_id in ("PaletteRecolor", "LuminanceLock", "PaletteFromImage"):
        spec = host.classes[node_id].INPUT_TYPES()
        assert spec["optional"]["mask"][0] == "MASK", node_id
        assert "mask" not in spec["required"]


def test_two_recolor_nodes_give_two_regions_two_palettes(host, photo):
    (warm, _) = run_node("PaletteInput", palette=WARM)
    (cool, _) = run_node("PaletteInput", palette=COOL)
    left, right = thirds()
    common = {"strength": 1.0, "matching": "optimal transport", "keep_neutrals": False, "source_colors": 0}
    (out,) = run_node("PaletteRecolor", image=photo, palette=warm, mask=left, **common)
    (out,) = run_node("PaletteRecolor", image=out, palette=cool, mask=right, **common)
    assert out.shape == photo.shape and out.dtype == photo.dtype
    a, b = out[0][left[0] == 1], out[0][right[0] == 1]
    assert emd(host, a, warm) < emd(host, a, cool)
    assert emd(host, b, cool) < emd(host, b, warm)
    outside = (left[0] == 0) & (right[0] == 0)
    assert outside.sum() > 0 and torch.equal(out[0][outside], photo[0][outside])
    # Without a mask the node gives what it gave before: the same as a mask of ones.
    (plain,) = run_node("PaletteRecolor", image=photo, palette=warm, **common)
    (ones,) = run_node("PaletteRecolor", image=photo, palette=warm, mask=torch.ones(1, H, W), **common)
    assert torch.equal(plain, ones)


def test_luminance_lock_in_a_region(host, photo):
    grey = photo.mean(-1, keepdim=True).expand(-1, -1, -1, 3)
    left, _ = thirds()
    (out,) = run_node("LuminanceLock", image=photo.flip(2), lightness_source=grey, mask=left)
    (full,) = run_node("LuminanceLock", image=photo.flip(2), lightness_source=grey)
    assert torch.equal(out[0][left[0] == 0], grey[0][left[0] == 0])
    assert torch.equal(out[0][left[0] == 1], full[0][left[0] == 1])


def test_palette_from_image_of_a_region(host):
    img = torch.zeros(1, H, W, 3)
    img[:, :, : W // 2] = torch.tensor([0.85, 0.1, 0.1])
    img[:, :, W // 2 :] = torch.tensor([0.1, 0.2, 0.85])
    img[:, : H // 2] *= 0.8  # two shades per half
    left = torch.zeros(1, H, W)
    left[..., : W // 2] = 1.0
    for method in ("kmeans", "median_cut"):
        # Only the reds: not even the resample's blends across the edge with the blue half.
        (pal, preview) = run_node("PaletteFromImage", image=img, size=4, method=method, mask=left * 0.5)
        assert bool((pal.colors[:, 0] > 0.6).all()) and bool((pal.colors[:, 2] < 0.15).all()), method
        assert preview.shape == (1, 64, 512, 3)
        (whole, _) = run_node("PaletteFromImage", image=img, size=4, method=method)
        assert bool((whole.colors[:, 2] > 0.6).any()), method


def test_bad_and_empty_masks(host, photo, caplog):
    errors = host.pack.palette_core.errors
    (warm, _) = run_node("PaletteInput", palette=WARM)
    common = {"strength": 1.0, "matching": "optimal transport", "keep_neutrals": False, "source_colors": 0}
    with caplog.at_level(logging.WARNING):
        (same,) = run_node("PaletteRecolor", image=photo, palette=warm, mask=torch.zeros(1, H, W), **common)
    assert torch.equal(same, photo) and "selects no pixels" in caplog.text
    with pytest.raises(errors.PaletteError, match="selects no pixels"):
        run_node("PaletteFromImage", image=photo, size=4, method="kmeans", mask=torch.zeros(1, H, W))
    with pytest.raises(errors.InputShapeError, match="another aspect ratio"):
        run_node("PaletteRecolor", image=photo, palette=warm, mask=torch.ones(1, H, H), **common)
    with pytest.raises(errors.InputShapeError, match="a batch of 2 masks for 1"):
        run_node("PaletteFromImage", image=photo, size=4, method="kmeans", mask=torch.ones(2, H, W))
    with pytest.raises(errors.InputShapeError, match="NaN"):
        run_node("LuminanceLock", image=photo, lightness_source=photo, mask=torch.full((1, H, W), float("nan")))
