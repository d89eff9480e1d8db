"""The recolour nodes and the colourisation workflow inside a real ComfyUI."""

from __future__ import annotations

import json

import pytest
import torch
from comfyhost import REPO, load_comfyui, requires_comfyui, run_node

pytestmark = [requires_comfyui, pytest.mark.comfyui]

WORKFLOW_API = REPO / "example_workflows" / "api" / "colorize_with_palette.api.json"


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
