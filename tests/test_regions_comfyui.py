"""Regional palettes on the generation nodes inside a real ComfyUI (docs/regions.md).

Two masks (the left and right thirds of the image; the middle third is outside both) with two contrasting
palettes, on small random-weight models from ComfyUI's own classes sampled through its sampler: each
region's preview colours end nearer its own palette than the other's, and the latent outside both masks
moves no more than an unmasked run moves it. The untrained adapter changes images but not toward a
palette, so for Apply Palette Adapter only the mask's confinement is checked.
"""

from __future__ import annotations

import pytest
import torch
from comfyhost import load_comfyui, requires_comfyui, run_node, sample, tiny_sdxl
from family_models import family_model, preview_vae, run_sample

pytestmark = [requires_comfyui, pytest.mark.comfyui]

SIDE = 12  # latent side: 96 x 96 pixels
WARM, COOL = "#d62828, #f77f00:2, #fcbf49", "#1d3557, #457b9d:2, #a8dadc"


@pytest.fixture(scope="module")
def host():
    return load_comfyui()


def thirds() -> tuple[torch.Tensor, torch.Tensor]:
    """Left and right third masks at the image's size ``[1, 96, 96]``; the middle third is in neither."""
    left = torch.zeros(1, SIDE * 8, SIDE * 8)
    left[..., : SIDE * 8 // 3] = 1.0
    return left, left.flip(-1)


def palettes(host):
    parse = host.pack.palette_core.palette.Palette.parse
    return parse(WARM), parse(COOL)


def region_distance(host, model, out, cols: slice, pal) -> float:
    """Sliced W1 between a column band's preview colours (the family's own factors) and a palette."""
    pack = host.pack
    fmt = model.get_model_object("latent_format")
    family = pack.palette_core.latent_family.FAMILIES[type(fmt).__name__]
    rgb = pack.palette_core.latent_rgb.fast_decode(fmt.process_in(out), family).clamp(0, 1)[:, :, cols]
    directions = pack.palette_core.sw_guidance.random_rotations(16, torch.Generator().manual_seed(0)).reshape(-1, 3)
    return float(pack.palette_core.sw_guidance.sliced_w1(rgb.reshape(1, -1, 3), pal.colors, pal.weights, directions))


LEFT, MIDDLE, RIGHT = slice(0, SIDE // 3), slice(SIDE // 3 + 1, 2 * SIDE // 3 - 1), slice(2 * SIDE // 3, SIDE)


def chain(node: str, model, inputs: dict, masks) -> object:
    """The model with two ``node``s: the warm palette (first mask) then the cool one (second mask)."""
    warm, cool = inputs.pop("palettes")
    (m,) = run_node(node, model=model, palette=warm, mask=masks[0], **inputs)
    (m,) = run_node(node, model=m, palette=cool, mask=masks[1], **inputs)
    return m


NODES = {
    "PaletteAlign": lambda model: {"vae": preview_vae(model), "stop_percent": 0.0, "strength": 1.0},
    "PaletteGuidance": lambda model: {
        "strength": 1.0,
        "steps_per_sample": 4,
        "start_percent": 0.0,
        "end_percent": 1.0,
        "decoder": "fast",
    },
}


@pytest.mark.parametrize("family", ["SDXL", "Flux"])
@pytest.mark.parametrize("node", list(NODES))
def test_two_regions_two_palettes(host, node, family):
    with torch.inference_mode():
        model = family_model(family)
    warm, cool = palettes(host)
    left, right = thirds()
    base = run_sample(model, family, side=SIDE)
    regional = run_sample(
        chain(node, model, {**NODES[node](model), "palettes": (warm, cool)}, (left, right)), family, side=SIDE
    )
    everywhere = run_sample(
        chain(node, model, {**NODES[node](model), "palettes": (warm, cool)}, (None, None)), family, side=SIDE
    )
    assert torch.isfinite(regional).all()
    for cols, own, other in ((LEFT, warm, cool), (RIGHT, cool, warm)):
        assert region_distance(host, model, regional, cols, own) < region_distance(host, model, regional, cols, other)
    moved = (regional - base)[..., MIDDLE].abs().mean()
    assert moved <= (everywhere - base)[..., MIDDLE].abs().mean()
    # the same two nodes in the other order: one group, the same image
    swapped = run_node(node, model=model, palette=cool, mask=right, **NODES[node](model))[0]
    swapped = run_node(node, model=swapped, palette=warm, mask=left, **NODES[node](model))[0]
    assert torch.allclose(run_sample(swapped, family, side=SIDE), regional, atol=1e-4)


def test_all_zero_and_full_masks(host, caplog):
    model = tiny_sdxl(seed=0)
    warm, _ = palettes(host)
    inputs = NODES["PaletteAlign"](model)
    base = run_sample(model, "SDXL", side=SIDE)
    (off,) = run_node("PaletteAlign", model=model, palette=warm, mask=torch.zeros(1, 96, 96), **inputs)
    assert torch.equal(run_sample(off, "SDXL", side=SIDE), base) and "selects no pixels" in caplog.text
    (full,) = run_node("PaletteAlign", model=model, palette=warm, mask=torch.ones(1, 96, 96), **inputs)
    (plain,) = run_node("PaletteAlign", model=model, palette=warm, **inputs)
    assert torch.equal(run_sample(full, "SDXL", side=SIDE), run_sample(plain, "SDXL", side=SIDE))
    (wrong,) = run_node("PaletteAlign", model=model, palette=warm, mask=torch.ones(1, 96, 48), **inputs)
    with pytest.raises(host.pack.palette_core.errors.InputShapeError, match="another aspect ratio"):
        run_sample(wrong, "SDXL", side=SIDE)


def test_adapter_attention_stays_in_its_region(host):
    model = tiny_sdxl(seed=0)
    pa = host.pack.palette_core.adapter
    layers = host.pack.nodes.model_family.attention_layers_of(model)
    adapter = pa.init_adapter(layers.select(["up_blocks.0.attentions.1", "down_blocks.2.attentions.1"]).dims, seed=1)
    warm, cool = palettes(host)
    left, right = thirds()
    size = SIDE * 8
    inputs = {"adapter": adapter, "weight": 1.0, "start_percent": 0.0, "end_percent": 1.0, "blocks": "from file"}

    def apply(m, pal, mask):
        return run_node("ApplyPaletteAdapter", model=m, condition=pal, mask=mask, **inputs)[0]

    with torch.inference_mode():
        base = sample(model, size=size)
        regional = sample(apply(apply(model, warm, left), cool, right), size=size)
        everywhere = sample(apply(apply(model, warm, None), cool, None), size=size)
        full = sample(apply(model, warm, torch.ones(1, size, size)), size=size)
        plain = sample(apply(model, warm, None), size=size)
    assert torch.equal(full, plain)  # a full mask is no mask
    assert (regional - base)[..., LEFT].abs().mean() > 0 and (regional - base)[..., RIGHT].abs().mean() > 0
    assert (regional - base)[..., MIDDLE].abs().mean() < (everywhere - base)[..., MIDDLE].abs().mean()
