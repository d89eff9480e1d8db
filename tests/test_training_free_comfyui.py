"""PaletteAlign and PaletteGuidance inside a real ComfyUI, sampling a tiny random-weight SDXL-layout UNet.

Sampling runs under ``torch.inference_mode`` as ComfyUI's executor does (models are built under it too),
so the exact decoder's autograd is tested against inference-tensor weights.
"""

from __future__ import annotations

import importlib

import pytest
import torch
from comfyhost import init_random_, load_comfyui, requires_comfyui, run_node, sample, tiny_sdxl

pytestmark = [requires_comfyui, pytest.mark.comfyui]

SIZE = 64  # an 8x8 latent: enough for the checks, cheap on two CPU cores
VAE_CONFIG = {
    "double_z": True,
    "z_channels": 4,
    "resolution": 256,
    "in_channels": 3,
    "out_ch": 3,
    "ch": 32,
    "ch_mult": [1, 2, 4, 4],
    "num_res_blocks": 1,
    "attn_resolutions": [],
    "dropout": 0.0,
}


@pytest.fixture(scope="module")
def host():
    return load_comfyui()


@pytest.fixture(scope="module")
def model(host):
    with torch.inference_mode():
        return tiny_sdxl(seed=0)


def tiny_vae(seed: int = 3):
    """A small random-weight ComfyUI AutoencoderKL (SDXL's layout, 32 base channels) as a comfy.sd.VAE."""
    import comfy.sd
    from comfy.ldm.models.autoencoder import AutoencoderKL

    with torch.inference_mode():
        ae = AutoencoderKL(ddconfig=VAE_CONFIG, embed_dim=4)
        init_random_(ae, seed)
        return comfy.sd.VAE(sd=ae.state_dict(), config={"params": {"ddconfig": VAE_CONFIG, "embed_dim": 4}})


@pytest.fixture(scope="module")
def vae(host):
    return tiny_vae()


def palette(host, text="#e63946:2, #f1faee, #1d3557"):
    return host.pack.palette_core.palette.Palette.parse(text)


def run_sample(m, **kwargs):
    with torch.inference_mode():
        return sample(m, size=SIZE, **kwargs).clone()


def rows_sorted(x: torch.Tensor) -> torch.Tensor:
    x = x.double()
    for col in reversed(range(x.shape[1])):
        x = x[torch.argsort(x[:, col], stable=True)]
    return x


def test_nodes_are_registered(host):
    for node_id in ("PaletteAlign", "PaletteGuidance"):
        cls = host.classes[node_id]
        assert list(cls.RETURN_TYPES) == ["MODEL"]
    inputs = host.classes["PaletteGuidance"].INPUT_TYPES()
    assert "vae" in inputs["optional"] and inputs["required"]["decoder"][1]["options"] == ["fast", "exact"]


def test_align_with_stop_zero_ends_on_a_permutation_of_the_condition(host, model, vae):
    (m,) = run_node("PaletteAlign", model=model, vae=vae, palette=palette(host), stop_percent=0.0, strength=1.0)
    out = run_sample(m, cfg=5.0, batch=2)
    patch = m.model_options["sampler_post_cfg_function"][-1]
    cond = patch.conditions[(SIZE // 8, SIZE // 8)].vectors  # cached on the patch, in the sampler's space
    assert patch.calls == 2  # both steps aligned (2 steps, cfg 5: one post-CFG call per step)
    scale = model.get_model_object("latent_format").scale_factor
    for b in range(2):
        got = (out[b] * scale).flatten(1).T
        assert torch.allclose(rows_sorted(got), rows_sorted(cond), atol=1e-5)


def test_align_at_cfg_one_and_composed_with_the_adapter(host, model, vae):
    pa = host.pack.palette_core.adapter
    layers = host.pack.nodes.model_family.attention_layers_of(model)
    adapter = pa.init_adapter({x.name: x.dim for x in layers}, seed=1)
    (adapted,) = run_node(
        "ApplyPaletteAdapter",
        model=model,
        adapter=adapter,
        condition=palette(host),
        weight=1.0,
        start_percent=0.0,
        end_percent=1.0,
        blocks="up_blocks.0.attentions.1",
        negative=None,
    )
    (m,) = run_node("PaletteAlign", model=adapted, vae=vae, palette=palette(host), stop_percent=0.5, strength=1.0)
    out = run_sample(m, cfg=1.0, batch=1)
    plain = run_sample(adapted, cfg=1.0, batch=1)
    patch = m.model_options["sampler_post_cfg_function"][-1]
    assert patch.calls == 1  # the first of two steps; the second is past the stop point
    assert torch.isfinite(out).all() and not torch.allclose(out, plain)
    assert "patches_replace" in m.model_options["transformer_options"]  # the adapter's patches are kept


def fast_distance(host, latent, model, pal):
    sw = host.pack.palette_core.sw_guidance
    z = model.get_model_object("latent_format").process_in(latent)
    return sw.palette_distance(z, pal.colors, pal.weights)


@pytest.mark.parametrize("cfg", [1.0, 4.0])
def test_fast_guidance_pulls_the_result_toward_the_palette(host, model, cfg):
    pal = palette(host)
    (m,) = run_node(
        "PaletteGuidance",
        model=model,
        palette=pal,
        strength=1.0,
        steps_per_sample=4,
        start_percent=0.0,
        end_percent=1.0,
        decoder="fast",
    )
    guided = run_sample(m, cfg=cfg, batch=2)
    plain = run_sample(model, cfg=cfg, batch=2)
    assert m.model_options["sampler_post_cfg_function"][-1].calls == 2
    assert bool((fast_distance(host, guided, model, pal) < fast_distance(host, plain, model, pal)).all())


def test_exact_guidance_runs_through_the_vae_under_inference_mode(host, model, vae):
    pal = palette(host)
    (m,) = run_node(
        "PaletteGuidance",
        model=model,
        palette=pal,
        strength=1.0,
        steps_per_sample=2,
        start_percent=0.0,
        end_percent=1.0,
        decoder="exact",
        vae=vae,
    )
    guided = run_sample(m, cfg=1.0, batch=2)
    plain = run_sample(model, cfg=1.0, batch=2)
    emd = importlib.import_module(f"{host.pack.__name__}.palette_core.distance").palette_emd
    with torch.inference_mode():
        before = emd(vae.decode(plain), pal.colors, pal.weights)
        after = emd(vae.decode(guided), pal.colors, pal.weights)
    assert bool((after < before).all()), (before, after)


def test_bad_inputs_fail_before_sampling(host, model, vae):
    errors = host.pack.palette_core.errors
    Palette = host.pack.palette_core.palette.Palette
    flux_like = tiny_vae()
    flux_like.latent_channels = 16  # what comfy.sd.VAE reports for a 16-channel (Flux/SD3) VAE
    with pytest.raises(errors.IncompatibleModelError, match="samples 4-channel"):
        run_node("PaletteAlign", model=model, vae=flux_like, palette=palette(host), stop_percent=0.2, strength=1.0)
    no_weight = Palette(torch.rand(2, 3), torch.zeros(2))  # built directly, bypassing the parser's check
    with pytest.raises(errors.PaletteError, match="weights sum to 0"):
        run_node("PaletteAlign", model=model, vae=vae, palette=no_weight, stop_percent=0.2, strength=1.0)
    with pytest.raises(ValueError, match="stop_percent 1.5 is outside"):
        run_node("PaletteAlign", model=model, vae=vae, palette=palette(host), stop_percent=1.5, strength=1.0)
    assert "outside [0, 1]" in host.classes["PaletteAlign"].validate_inputs(stop_percent=-0.1, strength=1.0)
    with pytest.raises(errors.PaletteError, match="needs the VAE"):
        run_node(
            "PaletteGuidance",
            model=model,
            palette=palette(host),
            strength=1.0,
            steps_per_sample=2,
            start_percent=0.0,
            end_percent=1.0,
            decoder="exact",
        )
    verdict = host.classes["PaletteGuidance"].validate_inputs(
        strength=1.0, steps_per_sample=2, start_percent=0.9, end_percent=0.1, decoder="fast"
    )
    assert "after end_percent" in verdict
