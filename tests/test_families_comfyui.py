"""PaletteAlign and PaletteGuidance on every image family (SD1.5, SDXL, SD3, Flux) inside a real ComfyUI.

Each family is a small random-weight model built from ComfyUI's own classes (``comfy.supported_models``
configs with few channels and blocks, real layer types, latent formats and ``model_sampling``), sampled
through ``comfy.sample.sample``; Flux at cfg 1, where ComfyUI skips the unconditional pass.

Colours are measured as ComfyUI's latent2rgb preview shows them: the family's own factors on the
sampler-space latent. A random VAE's encoder has nothing to do with those factors, so the Palette Align
colour check uses a VAE whose network inverts the family's preview map (what the factors approximate
for a trained VAE); the encode path of a real 16-channel AutoencoderKL and the exact decoder through it
are checked with a random one.
"""

from __future__ import annotations

import importlib

import pytest
import torch
from comfyhost import load_comfyui, requires_comfyui, run_node
from family_models import FAMILY_NAMES, family_model, preview_vae, run_sample, tiny_vae

pytestmark = [requires_comfyui, pytest.mark.comfyui]

SIZE = 64  # an 8x8 latent
STEPS = 2
PALETTE_TEXT = "#e63946:2, #f1faee, #1d3557"


@pytest.fixture(scope="module")
def host():
    return load_comfyui()


def palette(host):
    return host.pack.palette_core.palette.Palette.parse(PALETTE_TEXT)


def preview_distance(host, model, out: torch.Tensor) -> float:
    """Sliced W1 between the palette and the preview colours of a sampled (VAE-space) latent."""
    pack = host.pack
    fmt = model.get_model_object("latent_format")
    family = pack.palette_core.latent_family.FAMILIES[type(fmt).__name__]
    pal = palette(host)
    return float(
        pack.palette_core.sw_guidance.palette_distance(fmt.process_in(out), pal.colors, pal.weights, 0, family)
    )


_models: dict[str, object] = {}


def cached_model(name: str):
    """The family's tiny model, built once per session (tests clone it before patching)."""
    if name not in _models:
        with torch.inference_mode():
            _models[name] = family_model(name)
    return _models[name]


@pytest.fixture(scope="module", autouse=True)
def release_models():
    yield
    _models.clear()  # while ComfyUI is still importable: ModelPatcher.__del__ needs it


@pytest.fixture(scope="module", params=FAMILY_NAMES)
def family(request, host):
    return request.param, cached_model(request.param)


def test_the_seam_reads_comfyuis_latent_formats(host):
    import comfy.latent_formats as lf

    nodes = importlib.import_module(f"{host.pack.__name__}.nodes.model_family")
    families = host.pack.palette_core.latent_family.FAMILIES
    for fmt in (lf.SD15(), lf.SDXL(), lf.SD3(), lf.Flux()):
        assert nodes.format_family(fmt) == families[type(fmt).__name__]  # the constants are ComfyUI's numbers


def test_preview_factors_act_on_the_samplers_latent(host, family):
    """ComfyUI's latent2rgb previewer decodes the callback's x0 (sampler space); fast_decode matches it."""
    import latent_preview

    name, model = family
    fmt = model.get_model_object("latent_format")
    seen = []
    out = run_sample(model, name, callback=lambda step, x0, x, total: seen.append(x0.clone()))
    assert len(seen) == STEPS
    assert torch.allclose(fmt.process_out(seen[-1]), out, atol=1e-4)  # the output is VAE space, x0 is not
    nodes = importlib.import_module(f"{host.pack.__name__}.nodes.model_family")
    fam = nodes.latent_family(model, "test")
    previewer = latent_preview.Latent2RGBPreviewer(fmt.latent_rgb_factors, fmt.latent_rgb_factors_bias)
    x0 = seen[-1][:1]
    theirs = torch.nn.functional.linear(
        x0[0].movedim(0, -1), previewer.latent_rgb_factors, previewer.latent_rgb_factors_bias
    )
    ours = host.pack.palette_core.latent_rgb.fast_decode(x0, fam)[0]
    assert torch.allclose(ours, (theirs + 1) / 2, atol=1e-5)


def test_palette_align(host, family):
    name, model = family
    vae = preview_vae(model)
    plain = run_sample(model, name)
    (m,) = run_node("PaletteAlign", model=model, vae=vae, palette=palette(host), stop_percent=0.0, strength=1.0)
    patch = m.model_options["sampler_post_cfg_function"][-1]
    skipped = []  # whether ComfyUI left out the unconditional pass (its cfg-1 shortcut, kept by the nodes)
    m.set_model_sampler_post_cfg_function(lambda args: skipped.append(args["uncond"] is None) or args["denoised"])
    aligned = run_sample(m, name)
    assert patch.calls == STEPS  # at every step, also at Flux's cfg 1
    assert skipped == [name == "Flux"] * STEPS
    assert patch.family.channels == model.get_model_object("latent_format").latent_channels
    assert torch.isfinite(aligned).all() and not torch.equal(aligned, plain)
    assert preview_distance(host, model, aligned) < preview_distance(host, model, plain)
    (off,) = run_node("PaletteAlign", model=model, vae=vae, palette=palette(host), stop_percent=0.0, strength=0.0)
    assert torch.equal(run_sample(off, name), plain)


def test_palette_guidance_fast(host, family):
    name, model = family
    args = {"palette": palette(host), "steps_per_sample": 4, "decoder": "fast"}
    plain = run_sample(model, name)
    (m,) = run_node("PaletteGuidance", model=model, strength=1.0, start_percent=0.0, end_percent=1.0, **args)
    guided = run_sample(m, name)
    assert m.model_options["sampler_post_cfg_function"][-1].calls == STEPS
    assert not torch.equal(guided, plain)
    assert preview_distance(host, model, guided) < preview_distance(host, model, plain)
    (off,) = run_node("PaletteGuidance", model=model, strength=0.0, start_percent=0.0, end_percent=1.0, **args)
    assert torch.equal(run_sample(off, name), plain)
    # a window past the last step (the model's own schedule: flow sigmas are in [0, 1])
    (empty,) = run_node("PaletteGuidance", model=model, strength=1.0, start_percent=1.0, end_percent=1.0, **args)
    assert (
        torch.equal(run_sample(empty, name), plain) and empty.model_options["sampler_post_cfg_function"][-1].calls == 0
    )


def test_palette_guidance_exact_and_the_encode_path_of_a_real_vae(host, family):
    name, model = family
    channels = model.get_model_object("latent_format").latent_channels
    vae = tiny_vae(channels)
    pal = palette(host)
    # the Palette Align condition through a real AutoencoderKL of the family's channel count
    (m,) = run_node("PaletteAlign", model=model, vae=vae, palette=pal, stop_percent=0.0, strength=1.0)
    patch = m.model_options["sampler_post_cfg_function"][-1]
    with torch.inference_mode():
        cond = patch.condition(SIZE // 8, SIZE // 8, model.model, torch.device("cpu"))
    assert cond.vectors.shape == ((SIZE // 8) ** 2, channels)
    (g,) = run_node(
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
    guided = run_sample(g, name)
    plain = run_sample(model, name)
    assert g.model_options["sampler_post_cfg_function"][-1].calls == STEPS
    emd = importlib.import_module(f"{host.pack.__name__}.palette_core.distance").palette_emd
    with torch.inference_mode():
        before = emd(vae.decode(plain), pal.colors, pal.weights)
        after = emd(vae.decode(guided), pal.colors, pal.weights)
    assert bool((after < before).all()), (before, after)


def test_formats_the_seam_cannot_describe_are_refused(host):
    import comfy.latent_formats as lf

    model = cached_model("SDXL")
    errors = host.pack.palette_core.errors
    no_factors = lf.SDXL()
    no_factors.latent_rgb_factors = None
    mismatch = lf.SDXL()
    mismatch.latent_channels = 16
    cases = [
        (lf.Wan21(), "3 spatial dimensions"),
        (lf.StableAudio1(), "1 spatial dimensions"),
        (no_factors, "no latent-to-RGB preview factors"),
        (mismatch, "16 latent channels but 4 rows"),
        (lf.SDXL_Playground_2_5(), "process_in is not"),
    ]
    for fmt, reason in cases:
        m = model.clone()
        m.add_object_patch("latent_format", fmt)
        with pytest.raises(errors.IncompatibleModelError, match=reason) as info:
            run_node(
                "PaletteGuidance",
                model=m,
                palette=palette(host),
                strength=1.0,
                steps_per_sample=2,
                start_percent=0.0,
                end_percent=1.0,
                decoder="fast",
            )
        assert "Supported families: SD1.5, SDXL, SD3/3.5, Flux" in str(info.value)
    with pytest.raises(errors.IncompatibleModelError, match=r"model \(SDXL\) samples 4-channel"):
        run_node("PaletteAlign", model=model, vae=tiny_vae(16), palette=palette(host), stop_percent=0.2, strength=1.0)
