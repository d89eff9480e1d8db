"""End to end over ComfyUI's HTTP API with a random-weight full-size SDXL checkpoint (slow; opt-in).

Run: ``PALETTE_SLOW_TESTS=1 COMFYUI_PATH=... <comfy python> -m pytest tests/test_api_e2e.py`` (~13 GB RAM,
a few minutes on 2 CPU cores; the 6.5 GB checkpoint is cached in PALETTE_TEST_CACHE).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from comfyhost import requires_comfyui
from comfyserver import CACHE, SLOW, ComfyServer
from PIL import Image

pytestmark = [
    requires_comfyui,
    pytest.mark.slow,
    pytest.mark.skipif(not SLOW, reason="slow end-to-end test: set PALETTE_SLOW_TESTS=1"),
]


def workflow(
    ckpt: str,
    adapter: str | None,
    weight: float = 1.0,
    prefix: str = "e2e",
    steps: int = 1,
    cfg: float = 5.0,
    batch: int = 1,
) -> dict:
    prompt = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a poster of a lighthouse", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 256, "height": 256, "batch_size": batch}},
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["4", 0],
                "seed": 7,
                "steps": steps,
                "cfg": cfg,
                "sampler_name": "euler",
                "scheduler": "normal",
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
                "denoise": 1.0,
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": prefix}},
    }
    if adapter is not None:
        prompt["10"] = {"class_type": "PaletteAdapterLoader", "inputs": {"adapter_name": adapter}}
        prompt["11"] = {"class_type": "PaletteInput", "inputs": {"palette": "#e63946:2, #f1faee, #1d3557"}}
        prompt["12"] = {
            "class_type": "ApplyPaletteAdapter",
            "inputs": {
                "model": ["4", 0],
                "adapter": ["10", 0],
                "condition": ["11", 0],
                "weight": weight,
                "start_percent": 0.0,
                "end_percent": 1.0,
                "blocks": "from file",
            },
        }
        prompt["3"]["inputs"]["model"] = ["12", 0]
    return prompt


def test_adapter_changes_the_saved_image_and_weight_zero_does_not(tmp_path):
    import random_sdxl
    from packimport import pack_module

    ckpt = random_sdxl.build(CACHE / "random_sdxl.safetensors")
    pa = pack_module("palette_core.adapter")
    blocks = pack_module("palette_core.blocks")
    layers = {x.name: x.dim for x in blocks.sdxl_layers() if x.block == blocks.DEFAULT_BLOCKS[0]}
    adapter = pa.save_adapter(pa.init_adapter(layers, seed=0), tmp_path / "untrained.safetensors")
    with ComfyServer(tmp_path / "comfy", checkpoints=[ckpt], adapters=[adapter]) as server:
        assert server.get("/models/palette_adapter") == ["untrained.safetensors"]
        info = server.get("/object_info/ApplyPaletteAdapter")["ApplyPaletteAdapter"]
        assert info["input"]["required"]["condition"][0] == "PALETTE,COLOR_CONDITION"

        def render(prompt) -> np.ndarray:
            out = server.run(prompt)["outputs"]["9"]["images"][0]
            return np.asarray(Image.open(io.BytesIO(server.image(out))))

        plain = render(workflow(ckpt.name, None, prefix="plain"))
        with_adapter = render(workflow(ckpt.name, "untrained.safetensors", 1.0, prefix="adapter"))
        weight_zero = render(workflow(ckpt.name, "untrained.safetensors", 0.0, prefix="zero"))
    assert plain.shape == (256, 256, 3)
    assert np.abs(with_adapter.astype(int) - plain).mean() > 1.0
    assert np.array_equal(weight_zero, plain)


def training_free(prompt: dict, align: dict | None = None, guidance: dict | None = None) -> dict:
    """Insert PaletteAlign and/or PaletteGuidance between the model (or the adapter) and KSampler."""
    model = prompt["3"]["inputs"]["model"]
    prompt["20"] = {"class_type": "PaletteInput", "inputs": {"palette": "#2a9d8f:3, #e9c46a, #264653"}}
    if align is not None:
        inputs = {"model": model, "vae": ["4", 2], "palette": ["20", 0], "stop_percent": 0.0, "strength": 1.0}
        prompt["21"] = {"class_type": "PaletteAlign", "inputs": inputs | align}
        model = ["21", 0]
    if guidance is not None:
        inputs = {
            "model": model,
            "palette": ["20", 0],
            "strength": 1.0,
            "steps_per_sample": 2,
            "start_percent": 0.0,
            "end_percent": 1.0,
            "decoder": "fast",
        }
        prompt["22"] = {"class_type": "PaletteGuidance", "inputs": inputs | guidance}
        model = ["22", 0]
    prompt["3"]["inputs"]["model"] = model
    return prompt


def test_training_free_nodes_over_the_api(tmp_path):
    """PaletteAlign and PaletteGuidance on a random SDXL checkpoint: they change the image, strength 0 does not,
    and they compose with each other, with the adapter, with a batch and with cfg 1."""
    import random_sdxl
    from packimport import pack_module

    ckpt = random_sdxl.build(CACHE / "random_sdxl.safetensors")
    pa = pack_module("palette_core.adapter")
    blocks = pack_module("palette_core.blocks")
    layers = {x.name: x.dim for x in blocks.sdxl_layers() if x.block == blocks.DEFAULT_BLOCKS[0]}
    adapter = pa.save_adapter(pa.init_adapter(layers, seed=0), tmp_path / "untrained.safetensors")
    with ComfyServer(tmp_path / "comfy", checkpoints=[ckpt], adapters=[adapter]) as server:

        def render(prompt) -> np.ndarray:
            images = server.run(prompt)["outputs"]["9"]["images"]
            return np.stack([np.asarray(Image.open(io.BytesIO(server.image(x)))) for x in images])

        def base(prefix: str, **kw) -> dict:
            return workflow(ckpt.name, None, prefix=prefix, steps=2, **kw)

        plain = render(base("plain"))
        aligned = render(training_free(base("align"), align={}))
        align_off = render(training_free(base("align0"), align={"strength": 0.0}))
        guided = render(training_free(base("guide"), guidance={}))
        guide_off = render(training_free(base("guide0"), guidance={"strength": 0.0}))
        composed = workflow(ckpt.name, "untrained.safetensors", prefix="all", steps=2, cfg=1.0, batch=2)
        everything = render(training_free(composed, align={"stop_percent": 0.5}, guidance={}))
    assert plain.shape == (1, 256, 256, 3) and everything.shape == (2, 256, 256, 3)
    for changed in (aligned, guided):
        assert np.abs(changed.astype(int) - plain).mean() > 1.0
    assert np.array_equal(align_off, plain) and np.array_equal(guide_off, plain)
    assert np.abs(everything[0].astype(int) - everything[1]).mean() > 1.0  # two latents, two images
