"""Weights trained in diffusers work in the nodes: one UNet evaluation agrees between the hosts (docs/design.md §6, §8).

The tiny SDXL-layout UNet (all 70 cross-attention layers, 2048-dim text) is built in diffusers, converted
to ComfyUI's layout with ComfyUI's own key map (comfy.utils.unet_to_diffusers), and one adapter file is
applied on each side: the diffusers processor of train/ and the ApplyPaletteAdapter node. Also checks that
train.models.load_unet reads a ComfyUI/LDM single-file checkpoint of the same weights.
"""

from __future__ import annotations

import json

import pytest
import torch
from comfyhost import load_comfyui, requires_comfyui, run_node, tiny_sdxl

pytestmark = [requires_comfyui, pytest.mark.comfyui]

SIZE = 128  # pixels; latent 16 x 16


@pytest.fixture(scope="module")
def host():
    pytest.importorskip("diffusers")
    return load_comfyui()


@pytest.fixture(scope="module")
def diffusers_unet(host):
    from train.models import build_unet, tiny_unet_config

    return build_unet(tiny_unet_config(64, (1, 2, 10), in_channels=4, sample_size=SIZE // 8), seed=3).eval()


@pytest.fixture(scope="module")
def comfy_model(host, diffusers_unet):
    import comfy.utils

    model = tiny_sdxl(seed=0)  # ComfyUI's tiny SDXL: model_channels 64, SDXL's depths; weights replaced below
    unet = model.model.diffusion_model
    key_map = comfy.utils.unet_to_diffusers(model.model.model_config.unet_config)
    theirs = diffusers_unet.state_dict()
    converted = {comfy_key: theirs[diff_key] for diff_key, comfy_key in key_map.items() if diff_key in theirs}
    assert set(converted) == set(unet.state_dict()), "ComfyUI's key map does not cover the tiny UNet"
    unet.load_state_dict(converted, strict=True)
    return model


@pytest.fixture(scope="module")
def adapter_files(host, diffusers_unet, tmp_path_factory):
    """An adapter file per version, written once: version 4 adds the scalar token's value, 3 attends it."""
    from palette_core.adapter import init_adapter, save_adapter
    from palette_core.blocks import diffusers_unet_layers, text_kv

    layers = diffusers_unet_layers(diffusers_unet)
    assert len(layers) == 70
    files = {}

    def make(version):
        if version not in files:
            adapter = init_adapter(layers.dims, seed=11, text_kv=text_kv(diffusers_unet, layers), version=version)
            with torch.no_grad():  # leave the text init: make the adapter's attention clearly differ from the text's
                for p in adapter.parameters():
                    p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
            path = tmp_path_factory.mktemp("adapter") / f"parity-v{version}.safetensors"
            files[version] = save_adapter(adapter, path, trained_steps=1)
        return files[version]

    return make


def _inputs():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, SIZE // 8, SIZE // 8, generator=g)
    context = torch.randn(2, 77, 2048, generator=g)
    pooled = torch.randn(2, 1280, generator=g)
    return x, torch.tensor([700.0, 700.0]), context, pooled


@pytest.mark.parametrize(("version", "order"), [("4", (1, 0)), ("4", (0, 1)), ("3", (1, 0))])
def test_noise_prediction_agrees_between_diffusers_and_comfyui(
    host, diffusers_unet, comfy_model, adapter_files, version, order
):
    from palette_core.adapter import (
        ColorCondition,
        branch_conditions,
        load_adapter,
        negative_condition,
        palette_condition,
    )
    from palette_core.palette import Palette
    from train.processor import PaletteUNet, time_ids

    text = "#e63946:2, #f1faee, #a8dadc, #1d3557"
    neg_text = "#00ff00"
    weight = 0.8
    x, t, context, pooled = _inputs()
    adapter_file = adapter_files(version)

    # ComfyUI: the loader's own reader, the node path, one evaluation of the patched diffusion model
    pack = host.pack.palette_core
    comfy_adapter = pack.adapter.load_adapter(adapter_file)
    palette = pack.palette.Palette.parse(text)
    (negative,) = run_node("NegativePalette", palette=pack.palette.Palette.parse(neg_text), weight=0.5)
    (patched,) = run_node(
        "ApplyPaletteAdapter",
        model=comfy_model,
        adapter=comfy_adapter,
        condition=palette,
        weight=weight,
        start_percent=0.0,
        end_percent=1.0,
        blocks="from file",
        negative=negative,
    )
    registered = patched.model_options["transformer_options"]["patches_replace"]["attn2"]
    assert len(registered) == 70
    base = patched.model
    options = dict(patched.model_options["transformer_options"])
    options["cond_or_uncond"] = list(order)
    options["sigmas"] = base.model_sampling.sigma(t)
    y = base.encode_adm(pooled_output=pooled, width=SIZE, height=SIZE)
    with torch.no_grad():
        comfy_out = base.diffusion_model(x, timesteps=t, context=context, y=y, transformer_options=options)
        plain_comfy = base.diffusion_model(x, timesteps=t, context=context, y=y, transformer_options={})

    # diffusers: the training script's processor with the same file and the same branch order
    adapter = load_adapter(adapter_file)
    assert adapter.file_version == comfy_adapter.file_version == version
    model = PaletteUNet(diffusers_unet, adapter)
    pos = Palette.parse(text)
    neg = Palette.parse(neg_text)
    cond, uncond = branch_conditions(
        palette_condition(pos.colors, pos.weights), negative_condition(neg.colors, neg.weights, 0.5)
    )
    branches = ColorCondition.cat([cond if flag == 0 else uncond for flag in order])
    with torch.no_grad():
        ours = model(x, t, context, pooled, time_ids(2, SIZE, SIZE), branches, scale=weight)
        plain = model(x, t, context, pooled, time_ids(2, SIZE, SIZE), None)

    print(
        f"order {order}: max |diffusers - ComfyUI| {(ours - comfy_out).abs().max():.2e} with the adapter, "
        f"{(plain - plain_comfy).abs().max():.2e} without; adapter effect {(comfy_out - plain_comfy).abs().max():.3f}"
    )
    assert (comfy_out - plain_comfy).abs().max() > 1e-2  # the adapter really changes the prediction
    assert torch.allclose(plain, plain_comfy, atol=1e-4), (plain - plain_comfy).abs().max()
    assert torch.allclose(ours, comfy_out, atol=1e-4), (ours - comfy_out).abs().max()


def test_load_unet_reads_a_comfyui_single_file_checkpoint(host, diffusers_unet, comfy_model, tmp_path):
    from safetensors.torch import save_file

    from train.models import load_unet, tiny_unet_config

    sd = {
        f"model.diffusion_model.{k}": v.contiguous() for k, v in comfy_model.model.diffusion_model.state_dict().items()
    }
    ckpt = tmp_path / "tiny_sdxl.safetensors"
    save_file(sd, str(ckpt))
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "config.json").write_text(json.dumps(tiny_unet_config(64, (1, 2, 10), sample_size=SIZE // 8)))
    loaded = load_unet(ckpt, config=config_dir)
    ref = diffusers_unet.state_dict()
    got = loaded.state_dict()
    assert set(got) == set(ref)
    assert all(torch.equal(got[k], ref[k]) for k in ref)
