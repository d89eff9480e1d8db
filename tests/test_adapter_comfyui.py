"""The Palette-Adapter nodes inside a real ComfyUI, sampling a tiny random-weight SDXL-layout UNet."""

from __future__ import annotations

import pytest
import torch
from comfyhost import load_comfyui, requires_comfyui, run_node, sample, tiny_sdxl

pytestmark = [requires_comfyui, pytest.mark.comfyui]

BLOCK = "up_blocks.0.attentions.1"


@pytest.fixture(scope="module")
def host():
    return load_comfyui()


@pytest.fixture(scope="module")
def model(host):
    return tiny_sdxl(seed=0)


@pytest.fixture(scope="module")
def layers(model, host):
    return host.pack.nodes.model_family.attention_layers_of(model)


@pytest.fixture(scope="module")
def adapter(host, layers):
    pa = host.pack.palette_core.adapter
    return pa.init_adapter({x.name: x.dim for x in layers}, seed=1)


def palette(host, text="#e63946:2, #f1faee, #1d3557"):
    return host.pack.palette_core.palette.Palette.parse(text)


def apply(model, adapter, condition, weight=1.0, start=0.0, end=1.0, blocks=BLOCK, negative=None):
    (patched,) = run_node(
        "ApplyPaletteAdapter",
        model=model,
        adapter=adapter,
        condition=condition,
        weight=weight,
        start_percent=start,
        end_percent=end,
        blocks=blocks,
        negative=negative,
    )
    return patched


def count_unet_calls(model):
    """Record cond_or_uncond of every UNet evaluation through a model_function_wrapper."""
    calls = []
    m = model.clone()

    def wrapper(apply_model, args):
        calls.append(list(args["cond_or_uncond"]))
        return apply_model(args["input"], args["timestep"], **args["c"])

    m.set_model_unet_function_wrapper(wrapper)
    return m, calls


def test_layer_table_derived_from_the_model(layers):
    assert len(layers) == 70
    keys = {x.comfy_key for x in layers}
    assert ("input", 4, 1) in keys and ("middle", 0, 9) in keys and ("output", 5, 1) in keys
    names = {x.comfy_key: x.name for x in layers}
    assert names[("output", 1, 3)] == "up_blocks.0.attentions.1.transformer_blocks.3.attn2"
    assert names[("input", 8, 0)] == "down_blocks.2.attentions.1.transformer_blocks.0.attn2"


def test_adapter_changes_output_weight_zero_and_outside_window_do_not(host, model, adapter):
    base = sample(model)
    pal = palette(host)
    assert not torch.equal(sample(apply(model, adapter, pal)), base)
    assert torch.equal(sample(apply(model, adapter, pal, weight=0.0)), base)
    assert torch.equal(sample(apply(model, adapter, pal, start=1.0, end=1.0)), base)  # patched, never active


def test_every_registered_patch_is_called_for_every_chosen_block(host, model, adapter, layers):
    blocks = "up_blocks.0.attentions.1, mid_block.attentions.0, down_blocks.1.attentions.0"
    patched = apply(model, adapter, palette(host), blocks=blocks)
    registered = patched.model_options["transformer_options"]["patches_replace"]["attn2"]
    assert len(registered) == 10 + 10 + 2
    runs = {id(p.run): p.run for p in registered.values()}
    assert len(runs) == 1
    run = next(iter(runs.values()))
    sample(patched, steps=2)
    assert set(run.calls) == {p.layer for p in registered.values()}
    assert set(run.calls.values()) == {2}  # 2 steps, cond and uncond in one batched evaluation each


def test_negative_goes_to_uncond_without_extra_unet_evaluations(host, model, adapter):
    neg = run_node("NegativePalette", palette=palette(host, "#00ff00"), weight=0.3)[0]
    plain, calls_plain = count_unet_calls(apply(model, adapter, palette(host)))
    with_neg, calls_neg = count_unet_calls(apply(model, adapter, palette(host), negative=neg))
    a, b = sample(plain), sample(with_neg)
    assert len(calls_plain) == len(calls_neg) == 2
    assert not torch.equal(a, b)


def test_cfg_one_with_a_negative_still_runs_the_uncond_pass(host, model, adapter):
    neg = run_node("NegativePalette", palette=palette(host, "#00ff00"), weight=0.3)[0]
    m, calls = count_unet_calls(apply(model, adapter, palette(host), negative=neg))
    sample(m, cfg=1.0)
    assert all(sorted(c) == [0, 1] for c in calls)
    m2, calls2 = count_unet_calls(apply(model, adapter, palette(host)))
    sample(m2, cfg=1.0)
    assert all(c == [0] for c in calls2)  # no negative: ComfyUI's cfg-1 shortcut stays


def test_batches_share_one_palette_or_take_one_condition_per_latent(host, model, adapter):
    images = torch.stack([torch.full((8, 8, 3), v) for v in (0.1, 0.5, 0.9)])
    images[..., 0] = torch.tensor([0.9, 0.2, 0.4]).view(3, 1, 1)
    per_latent, _ = run_node("HistogramFromImage", image=images)
    assert per_latent.batch_size == 3
    out = sample(apply(model, adapter, per_latent), batch=3)
    shared = sample(apply(model, adapter, per_latent.select(1)), batch=3)
    assert torch.allclose(out[1], shared[1], atol=1e-4)
    assert not torch.allclose(out[0], shared[0], atol=1e-4)
    with pytest.raises(Exception, match="holds 3 entries but the latent batch is 2"):
        sample(apply(model, adapter, per_latent), batch=2)


def test_chains_another_packs_replace_patch_and_clone_shares_weights(host, model, adapter):
    seen = []

    def other(q, k, v, extra_options):
        seen.append(extra_options["block"])
        from comfy.ldm.modules.attention import optimized_attention

        return optimized_attention(q, k, v, extra_options["n_heads"])

    m = model.clone()
    m.set_model_attn2_replace(other, "output", 1, 0)
    patched = apply(m, adapter, palette(host))
    patch = patched.model_options["transformer_options"]["patches_replace"]["attn2"][("output", 1, 0)]
    assert patch.previous is other
    sample(patched)
    assert seen == [("output", 1)] * 2
    clone = patched.clone()
    copied = clone.model_options["transformer_options"]["patches_replace"]["attn2"][("output", 1, 0)]
    assert copied is not patch and copied.run is patch.run and copied.previous is other  # own patch, one adapter


def test_model_management_loads_counts_and_offloads_the_adapter_weights(host, model, adapter):
    import comfy.model_management as mm

    patched = apply(model, adapter, palette(host), blocks=f"{BLOCK}, mid_block.attentions.0")
    handed = patched.model_patches_models()
    patchers = {id(p): p for p in handed}
    assert len(patchers) == 1, "every layer's patch hands over the one shared adapter"
    (patcher,) = patchers.values()
    weights = next(iter(patched.model_options["transformer_options"]["patches_replace"]["attn2"].values())).run.adapter
    assert patcher.model is weights and weights is not adapter  # the private copy, never the loader's value
    assert patcher.model_size() == sum(t.numel() * t.element_size() for t in weights.state_dict().values())
    assert patcher.model_size() < sum(t.numel() * t.element_size() for t in adapter.state_dict().values())

    mm.load_models_gpu([patched])
    loaded = [m.model for m in mm.current_loaded_models]
    assert any(m is patcher for m in loaded), "the adapter's weights were not loaded with the model"
    before = sample(patched)
    again = sample(patched)  # a second run reuses what is loaded
    assert torch.equal(before, again)
    mm.unload_all_models()
    assert not any(m.model is patcher for m in mm.current_loaded_models)
    assert torch.equal(sample(patched), before)  # reloaded from the offload device, same result


def test_entropy_distance_controls_change_the_output(host, model, adapter):
    pal = palette(host)
    base = sample(apply(model, adapter, pal))
    (cond,) = run_node(
        "EntropyDistanceControl",
        condition=pal,
        entropy_mode="relative",
        entropy=-3.0,
        entropy_reference=7.0,
        distance_mode="off",
        distance=0.0,
        distance_reference=0.6,
    )
    assert cond.null_entropy == 7.0 and float(cond.entropy[0]) == 4.0
    assert not torch.equal(sample(apply(model, adapter, cond)), base)


def test_clear_errors(host, model, adapter, tmp_path):
    cls = host.classes["ApplyPaletteAdapter"]
    assert "is not a block name" in cls.validate_inputs(blocks="up_block.9", start_percent=0.0, end_percent=1.0)
    assert "after end_percent" in cls.validate_inputs(blocks="from file", start_percent=0.8, end_percent=0.2)
    pa = host.pack.palette_core.adapter
    small = pa.init_adapter({"down_blocks.1.attentions.0.transformer_blocks.0.attn2": 64}, seed=0)
    with pytest.raises(
        host.pack.palette_core.errors.AdapterError, match=r"inner dim 64, this model \(SDXL, SDXL latents\) has 128"
    ):
        apply(model, small, palette(host), blocks="from file")
    with pytest.raises(host.pack.palette_core.errors.AdapterError, match="not in this adapter file"):
        apply(
            model,
            pa.init_adapter({"mid_block.attentions.0.transformer_blocks.0.attn2": 256}, seed=0),
            palette(host),
            blocks=BLOCK,
        )


@pytest.mark.parametrize("family", ["SD15", "SD3", "Flux"])
def test_other_families_are_refused_with_what_to_use_instead(host, family):
    from family_models import family_model

    pa = host.pack.palette_core.adapter
    adapter = pa.init_adapter({"up_blocks.0.attentions.1.transformer_blocks.0.attn2": 32})
    expected = {
        "SD15": r"needs an SDXL model .* this model \(BaseModel, SD15 latents\)'s cross-attention reads 768-dim",
        "SD3": r"works on SDXL .* this model \(SD3, SD3 latents\) is not a UNet .* use Palette Align or Palette",
        "Flux": r"works on SDXL .* this model \(Flux, Flux latents\) is not a UNet .* use Palette Align",
    }[family]
    with pytest.raises(host.pack.palette_core.errors.AdapterError, match=expected):
        apply(family_model(family), adapter, palette(host))


def test_the_module_paths_lead_to_comfyuis_own_attention_modules(host, model, layers):
    """One K/V reader for every host: the layer table's paths resolve in ComfyUI's UNet as in diffusers'."""
    blocks = host.pack.palette_core.blocks
    unet = model.model.diffusion_model
    assert layers.context_dim == 2048 and len({x.module_path for x in layers}) == 70
    first = layers.layer("up_blocks.0.attentions.1.transformer_blocks.3.attn2")
    assert first.module_path == "output_blocks.1.1.transformer_blocks.3.attn2"
    assert layers.layer("mid_block.attentions.0.transformer_blocks.0.attn2").module_path == (
        "middle_block.1.transformer_blocks.0.attn2"
    )
    kv = blocks.text_kv(unet, layers.select(["up_blocks.0.attentions.1"]))
    attn = unet.output_blocks[1][1].transformer_blocks[3].attn2
    assert torch.equal(kv[first.name][0], attn.to_k.weight.float()) and torch.equal(
        kv[first.name][1], attn.to_v.weight.float()
    )


def test_loader_reads_the_models_folder_and_refuses_pickles(host, adapter, tmp_path, monkeypatch):
    import folder_paths

    pa = host.pack.palette_core.adapter
    folder = tmp_path / "palette_adapter"
    small = pa.init_adapter({"up_blocks.0.attentions.1.transformer_blocks.0.attn2": 256}, seed=4)
    pa.save_adapter(small, folder / "tiny.safetensors")
    (folder / "evil.pt").write_bytes(b"\x80\x04")
    monkeypatch.setitem(
        folder_paths.folder_names_and_paths, "palette_adapter", ([str(folder)], folder_paths.supported_pt_extensions)
    )
    folder_paths.filename_list_cache.clear()
    (loaded,) = run_node("PaletteAdapterLoader", adapter_name="tiny.safetensors")
    assert loaded.layers == small.layers and loaded.trained_steps == 0
    with pytest.raises(host.pack.palette_core.errors.AdapterError, match=r"only \.safetensors"):
        run_node("PaletteAdapterLoader", adapter_name="evil.pt")


# ------------------------------------------------- IPAdapter_plus / InstantID / PuLID attn2 protocol (stand-in)

PACK_BLOCKS = (BLOCK, "down_blocks.1.attentions.0")  # shares BLOCK's 10 layers with the palette, not the other 2


@pytest.fixture(scope="module")
def pack(layers):
    from attn2_standin import StandinImagePrompt
    from comfy.ldm.modules.attention import optimized_attention  # what those packs import

    return StandinImagePrompt(
        {x.comfy_key: x.dim for x in layers if x.block in PACK_BLOCKS}, optimized_attention, seed=5
    )


def apply_pack(model, pack, weight=0.6, start=0.0, end=1.0, ortho=False):
    """The stand-in pack's node: percents to sigmas as those packs convert them, then their registration."""
    sampling = model.get_model_object("model_sampling")
    return pack.apply(model, weight, sampling.percent_to_sigma(start), sampling.percent_to_sigma(end), ortho)


def attn2(model):
    return model.model_options["transformer_options"]["patches_replace"]["attn2"]


@pytest.mark.parametrize("ortho", [False, True])
def test_an_ipadapter_style_pack_before_or_after_the_palette_gives_the_same_image(host, model, adapter, pack, ortho):
    pal = palette(host)
    palette_first = apply_pack(apply(model, adapter, pal), pack, end=0.6, ortho=ortho)  # used to fail: no .add
    pack_first = apply(apply_pack(model, pack, end=0.6, ortho=ortho), adapter, pal)
    patch_cls = host.pack.nodes.adapter_patch.PaletteAttn2Patch
    for key in (("output", 1, 0), ("output", 1, 9)):
        assert isinstance(attn2(palette_first)[key], patch_cls) and len(attn2(palette_first)[key].callback) == 1
        assert isinstance(attn2(pack_first)[key].previous, pack.replace_cls)
    assert isinstance(attn2(palette_first)[("input", 4, 1)], pack.replace_cls)
    a, b = sample(palette_first, size=128), sample(pack_first, size=128)
    assert torch.equal(a, b)
    palette_only, pack_only = sample(apply(model, adapter, pal), size=128), sample(apply_pack(model, pack), size=128)
    assert not torch.allclose(a, palette_only, atol=1e-3) and not torch.allclose(a, pack_only, atol=1e-3)


def test_a_pack_added_on_one_branch_does_not_reach_another(host, model, adapter, pack):
    patched = apply(model, adapter, palette(host))
    before = sample(patched, size=128)
    branch_a = apply_pack(patched, pack)  # the pack clones, then add()s to the clone's palette patches
    branch_b = patched.clone()
    assert all(len(p.callback) == 1 for key, p in attn2(branch_a).items() if key[:2] == ("output", 1))
    assert all(p.callback == [] for m in (patched, branch_b) for p in attn2(m).values())
    assert {id(p.run) for m in (patched, branch_a, branch_b) for p in attn2(m).values() if hasattr(p, "run")} == {
        id(next(iter(attn2(patched).values())).run)
    }
    with_pack = sample(branch_a, size=128)
    assert not torch.allclose(with_pack, before, atol=1e-3)
    assert torch.equal(sample(patched, size=128), before) and torch.equal(sample(branch_b, size=128), before)
