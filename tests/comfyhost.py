"""Loading this pack inside a real ComfyUI checkout (``COMFYUI_PATH``) the way ComfyUI itself does.

Integration tests import ``comfy`` and ComfyUI's own top-level ``nodes``; the pack is loaded through
``nodes.load_custom_node`` under ComfyUI's mangled module name, never as a top-level ``nodes``.
Run them with ComfyUI's Python, e.g. ``COMFYUI_PATH=~/ComfyUI ~/comfy-venv/bin/python -m pytest``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMFYUI_PATH = os.environ.get("COMFYUI_PATH", "")

requires_comfyui = pytest.mark.skipif(
    not (COMFYUI_PATH and (Path(COMFYUI_PATH) / "main.py").is_file()),
    reason="needs a ComfyUI checkout at COMFYUI_PATH (run with ComfyUI's Python)",
)

_loaded: types.SimpleNamespace | None = None


def load_comfyui() -> types.SimpleNamespace:
    """Import ComfyUI on the CPU, load this pack with ComfyUI's loader, and return handles to both."""
    global _loaded
    if _loaded is not None:
        return _loaded
    path = str(Path(COMFYUI_PATH).resolve())
    if path not in sys.path:
        sys.path.insert(0, path)
    existing = sys.modules.get("nodes")
    if existing is not None and not str(getattr(existing, "__file__", "")).startswith(path):
        raise RuntimeError(f"a module named 'nodes' from {existing.__file__} shadows ComfyUI's")
    from comfy.cli_args import args

    args.cpu = True
    import comfy.model_management  # noqa: F401  (must come after args.cpu)

    import nodes as comfy_nodes

    ok = asyncio.run(comfy_nodes.load_custom_node(str(REPO)))
    if not ok:
        raise RuntimeError("ComfyUI failed to load the pack; see the log above")
    module_name = str(REPO).replace(".", "_x_")
    _loaded = types.SimpleNamespace(
        nodes=comfy_nodes, classes=comfy_nodes.NODE_CLASS_MAPPINGS, pack=sys.modules[module_name]
    )
    return _loaded


def run_node(node_id: str, **inputs):
    """Execute a V3 node the way the executor does (validate_inputs first) and return its output tuple."""
    cls = load_comfyui().classes[node_id]
    from comfy_api.internal import first_real_override

    validate = first_real_override(cls, "validate_inputs") or getattr(cls, "VALIDATE_INPUTS", None)
    if validate is not None:
        import inspect

        names = inspect.signature(validate).parameters
        verdict = validate(**{k: v for k, v in inputs.items() if k in names})
        if verdict is not True:
            raise ValueError(f"{node_id} validation failed: {verdict}")
    out = getattr(cls(), cls.FUNCTION)(**inputs)
    if asyncio.iscoroutine(out):
        out = asyncio.run(out)
    return tuple(out.args) if hasattr(out, "args") else tuple(out)


TINY_SDXL_CHANNELS = 64  # same 70 attn2 keys, context 2048 and adm 2816 as SDXL; 2/4 heads of 64


def init_random_(module, seed: int = 0) -> None:
    """Explicit random init: ComfyUI builds layers without initialising them (comfy.ops.disable_weight_init).

    The trainer's seeded init (``train.models.random_init_``): matrices and convolutions N(0, 0.5 / sqrt(fan_in)),
    normalisation layers weight 1 and bias 0, other biases 0, drawn on the parameters' device.
    """
    from train.models import random_init_

    random_init_(module, seed)


def sdxl_model_config(model_channels: int, dtype):
    """ComfyUI's SDXL model config with the full detected UNet layout (as model_detection builds it)."""
    import comfy.supported_models

    unet_config = dict(comfy.supported_models.SDXL.unet_config)
    unet_config.update(
        model_channels=model_channels,
        in_channels=4,
        out_channels=4,
        num_res_blocks=[2, 2, 2],
        channel_mult=[1, 2, 4],
        transformer_depth_middle=10,
        transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10],
        num_classes="sequential",
        image_size=32,
        use_checkpoint=False,
        use_spatial_transformer=True,
        legacy=False,
    )
    model_config = comfy.supported_models.SDXL(unet_config)
    model_config.set_inference_dtype(dtype, None)
    return model_config


def tiny_sdxl(seed: int = 0):
    """A random-weight SDXL-layout UNet (model_channels 64) as a ComfyUI ModelPatcher on the CPU."""
    load_comfyui()
    import comfy.model_management
    import comfy.model_patcher
    import torch

    model = sdxl_model_config(TINY_SDXL_CHANNELS, torch.float32).get_model({})
    init_random_(model.diffusion_model, seed)
    device = comfy.model_management.get_torch_device()
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=device)


def sdxl_conditioning(seed: int = 0, batch: int = 1):
    """Random SDXL conditioning in ComfyUI's format: ``[[cond [B, 77, 2048], {"pooled_output": [B, 1280]}]]``."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(batch, 77, 2048, generator=g), {"pooled_output": torch.randn(batch, 1280, generator=g)}]]


def sample(model, seed: int = 0, steps: int = 2, cfg: float = 5.0, size: int = 256, batch: int = 1, **kwargs):
    """Sample with ComfyUI's own KSampler path (comfy.sample.sample, euler/normal) on random conditioning."""
    import comfy.sample
    import torch

    latent = torch.zeros(batch, 4, size // 8, size // 8)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed))
    return comfy.sample.sample(
        model,
        noise,
        steps,
        cfg,
        "euler",
        "normal",
        sdxl_conditioning(1, batch),
        sdxl_conditioning(2, batch),
        latent,
        seed=seed,
        disable_pbar=True,
        **kwargs,
    )
