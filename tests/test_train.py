"""Training (docs/design.md §8): the diffusers processor, the condition recipe, resumable training, export, analysis.

A tiny SDXL-layout UNet (3 levels, 11 attention blocks) with a 32-dim text width keeps every test to a
few seconds on a CPU; the parity test against ComfyUI (test_train_parity_comfyui.py) uses SDXL's 2048.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("accelerate")

from palette_core.adapter import (  # noqa: E402
    KIND_HISTOGRAM,
    KIND_NONE,
    KIND_PALETTE,
    ColorCondition,
    init_adapter,
    load_adapter,
    palette_condition,
    read_adapter_metadata,
    token_shares,
)
from palette_core.blocks import diffusers_unet_layers, text_kv  # noqa: E402
from palette_core.errors import AdapterError, InputShapeError, PaletteError  # noqa: E402
from palette_core.histogram import NUM_BINS, image_histogram  # noqa: E402
from palette_core.palette import Palette  # noqa: E402
from train.checkpoint import list_checkpoints  # noqa: E402
from train.data import (  # noqa: E402
    ConstantText,
    ManifestError,
    Record,
    StepBatches,
    manifest_palettes,
    read_manifest,
    write_manifest,
)
from train.models import PixelCodec, build_unet, tiny_unet_config  # noqa: E402
from train.processor import PaletteAttnProcessor, PaletteUNet, time_ids  # noqa: E402
from train.recipe import Recipe, draw_conditions  # noqa: E402
from train.toy.parts import toy_parts, toy_text  # noqa: E402
from train.toy.shapes import write_dataset  # noqa: E402
from train.train_palette_adapter import TrainConfig, Trainer, build_parser, config_from_args  # noqa: E402

CTX = 32
SIZE = 16


def tiny_unet(seed: int = 0):
    return build_unet(tiny_unet_config(32, (1, 1, 1), in_channels=3, sample_size=SIZE, context_dim=CTX), seed=seed)


def tiny_parts(text: str = "zeros"):
    """The tiny UNet as the trainer's toy parts: RGB pixels as latents, 2-token text without an encoder."""
    return toy_parts(tiny_unet(), PixelCodec(1), toy_text(text, 2, 0, CTX))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("toy"), 12, SIZE, seed=0, broken=2)


def config(out, data, **kw) -> TrainConfig:
    base = dict(
        output=out,
        data=data,
        resolution=SIZE,
        batch_size=4,
        max_steps=4,
        lr=1e-3,
        checkpoint_every=2,
        validate_every=0,
        recipe=Recipe(palette_resize=None),
        progress=False,
    )
    base.update(kw)
    return TrainConfig(**base)


def unet_inputs(batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, SIZE, SIZE, generator=g)
    text = torch.randn(batch, 3, CTX, generator=g)
    pooled = torch.randn(batch, 1280, generator=g)
    return x, torch.full((batch,), 500), text, pooled, time_ids(batch, SIZE, SIZE)


def test_layers_are_walked_from_the_model_and_sdxl_is_enforced():
    unet = tiny_unet()
    layers = diffusers_unet_layers(unet, CTX)
    assert len(layers) == 11 and len(layers.blocks) == 11 and layers.context_dim == CTX
    assert layers.dims["up_blocks.0.attentions.1.transformer_blocks.0.attn2"] == 128
    assert diffusers_unet_layers(unet, None).dims == layers.dims  # None: the model's own width
    with pytest.raises(AdapterError, match="needs an SDXL model.*reads 32-dim text features"):
        diffusers_unet_layers(unet)  # 32-dim text is not SDXL's 2048


@pytest.mark.parametrize("version", ["3", "4"])
def test_processor_is_the_default_attention_when_off_and_matches_ip_adapter_when_on(version):
    from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0

    unet = tiny_unet().eval()
    x, t, text, pooled, ids = unet_inputs()
    with torch.no_grad():
        plain = unet(x, t, text, added_cond_kwargs={"text_embeds": pooled, "time_ids": ids}).sample
    layers = diffusers_unet_layers(unet, CTX).dims
    adapter = init_adapter(layers, seed=3, context_dim=CTX, version=version)
    model = PaletteUNet(unet, adapter)
    cond = palette_condition(torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.2, 0.8], [0.95, 0.9, 0.2]]))
    cond = cond.with_controls(entropy=2.5, distance=0.5)
    with torch.no_grad():
        off = model(x, t, text, pooled, ids, None)
        zero = model(x, t, text, pooled, ids, cond, scale=0.0)
        on = model(x, t, text, pooled, ids, cond, scale=0.7)
    assert torch.allclose(off, plain, atol=1e-6) and torch.allclose(zero, plain, atol=1e-6)
    assert (on - plain).abs().max() > 1e-3
    assert set(model.context.calls) == set(layers)

    # one layer against diffusers' own IP-Adapter processor with the adapter's W_k / W_v and tokens: one
    # image-prompt stream of 5 tokens, or (version 4) the colour tokens and the scalar token as two streams,
    # a softmax over one key being its value
    name = "up_blocks.0.attentions.1.transformer_blocks.0.attn2"
    attn = dict(unet.named_modules())[name]
    hidden = torch.randn(2, 16, 128)
    tokens = adapter.tokens(cond).detach().expand(2, -1, -1)
    streams = [tokens[:, :4], tokens[:, 4:]] if adapter.scalar_added else [tokens]
    sizes = tuple(s.shape[1] for s in streams)
    ref_proc = IPAdapterAttnProcessor2_0(128, CTX, num_tokens=sizes, scale=[0.7] * len(sizes))
    with torch.no_grad():
        for i in range(len(sizes)):
            ref_proc.to_k_ip[i].weight.copy_(adapter.kv_weights(name)[0])
            ref_proc.to_v_ip[i].weight.copy_(adapter.kv_weights(name)[1])
        ours = attn(hidden, encoder_hidden_states=text)  # our processor, tokens from the last forward
        attn.set_processor(ref_proc)
        ref = attn(hidden, encoder_hidden_states=(text, streams))
        attn.set_processor(IPAdapterAttnProcessor2_0(128, CTX, num_tokens=(5,), scale=0.7))
        attn.processor.to_k_ip[0].weight.copy_(adapter.kv_weights(name)[0])
        attn.processor.to_v_ip[0].weight.copy_(adapter.kv_weights(name)[1])
        one_softmax = attn(hidden, encoder_hidden_states=(text, [tokens]))
    assert torch.allclose(ours, ref, atol=1e-5)
    assert torch.allclose(ours, one_softmax, atol=1e-5) == (version == "3")


def test_the_probe_records_each_layers_attention_weights_over_the_five_tokens():
    unet = tiny_unet().eval()
    x, t, text, pooled, ids = unet_inputs()
    layers = diffusers_unet_layers(unet, CTX).dims
    model = PaletteUNet(unet, init_adapter(layers, seed=3, context_dim=CTX))
    cond = palette_condition(torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.2, 0.8]]))
    name = "up_blocks.0.attentions.1.transformer_blocks.0.attn2"
    attn = dict(unet.named_modules())[name]
    queries = []
    hook = attn.to_q.register_forward_hook(lambda m, i, o: queries.append(o))
    model.context.probe = {}
    with torch.no_grad():
        model(x, t, text, pooled, ids, cond)
        model(x, t, text, pooled, ids, None)  # adapter off: nothing recorded
    hook.remove()
    probe, model.context.probe = model.context.probe, None
    assert set(probe) == set(layers) and all(len(w) == 1 and w[0].shape == (5,) for w in probe.values())
    assert model.adapter.scalar_added  # version 4: the scalar token's share of the output's norm
    tokens, (wk, wv) = model.adapter.tokens(cond), model.adapter.kv_weights(name)
    want = token_shares(queries[0], tokens, wk, wv, attn.heads, scalar_added=True)
    assert torch.allclose(probe[name][0], want.mean(dim=(0, 1, 2)), atol=1e-6)
    assert torch.allclose(probe[name][0].sum(), torch.tensor(1.0), atol=1e-5)
    with torch.no_grad():
        model(x, t, text, pooled, ids, cond)
    assert model.context.probe is None  # off unless set


def test_gradient_checkpointing_gives_the_same_adapter_gradients():
    grads = []
    for ckpt in (False, True):
        unet = tiny_unet().requires_grad_(False)
        if ckpt:
            unet.enable_gradient_checkpointing()
        adapter = init_adapter(diffusers_unet_layers(unet, CTX).dims, seed=1, context_dim=CTX)
        model = PaletteUNet(unet, adapter)
        x, t, text, pooled, ids = unet_inputs()
        cond = palette_condition(torch.rand(2, 4, 3, generator=torch.Generator().manual_seed(5)))
        model(x, t, text, pooled, ids, cond).square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in adapter.named_parameters()})
    assert all(g is not None and g.abs().sum() > 0 for g in grads[1].values())
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], atol=1e-6, rtol=1e-4), n


def test_recipe_kinds_distance_entropy_and_drops():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(6, 8, 8, 3, generator=g)
    img[:3] = torch.tensor([0.9, 0.1, 0.1])  # flat red images: entropy 0
    pal = draw_conditions(img, Recipe(1.0, 0.0, 3, 3, 0, 0, 0, 0, 0, None), torch.Generator().manual_seed(1))
    c = pal.condition
    assert (c.kind == KIND_PALETTE).all() and not pal.drop_text.any()
    assert ((c.histogram > 0).sum(-1) <= 3).all() and torch.allclose(c.histogram.sum(-1), torch.ones(6))
    assert torch.isfinite(c.distance).all() and (c.distance[3:] > 0.1).all()  # 3 colours vs 64 noisy pixels
    assert torch.allclose(c.entropy[:3], torch.zeros(3))
    hist = draw_conditions(img, Recipe(0.0, 1.0, p_drop_text=0, p_drop_color=0, p_drop_both=0), g).condition
    assert (hist.kind == KIND_HISTOGRAM).all()
    assert torch.allclose(hist.histogram, image_histogram(img)) and torch.allclose(hist.distance, torch.zeros(6))
    drop = draw_conditions(img, Recipe(p_drop_text=0, p_drop_color=1.0, p_drop_both=0), g)
    assert (drop.condition.kind == KIND_NONE).all() and drop.condition.histogram.abs().sum() == 0
    assert torch.isnan(drop.condition.distance).all() and torch.isnan(drop.condition.entropy).all()


def test_recipe_frequencies_follow_the_spec():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(400, 4, 4, 3, generator=g)
    d = draw_conditions(img, Recipe(), torch.Generator().manual_seed(2))
    kinds = d.kind_drawn
    n = len(kinds)
    assert (
        abs((kinds == KIND_PALETTE).sum() / n - 0.45) < 0.08 and abs((kinds == KIND_HISTOGRAM).sum() / n - 0.45) < 0.08
    )
    null = (d.condition.kind == KIND_NONE) & (d.condition.histogram.sum(-1) == 0)
    assert 0.10 < null.float().mean() < 0.30  # 10 % unconditioned + 10 % colour drops (colour or both)
    assert 0.04 < d.drop_text.float().mean() < 0.17  # text or both: 10 %
    has_e = torch.isfinite(d.condition.entropy)
    assert 0.6 < has_e.float().mean() < 0.9  # 10 % dropped, and the colour drops
    again = draw_conditions(img, Recipe(), torch.Generator().manual_seed(2))
    assert torch.equal(again.condition.histogram, d.condition.histogram)


def test_manifests_jsonl_csv_folder_and_step_batches(tmp_path, dataset):
    rows = read_manifest(dataset)
    assert len(rows) == 14 and rows[0].image.is_file()
    (tmp_path / "m.csv").write_text("image,caption,weight\n" + f"{rows[0].image},a red thing,2.5\n")
    assert read_manifest(tmp_path / "m.csv") == [Record(rows[0].image, "a red thing", 2.5)]
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "a.png").write_bytes(rows[0].image.read_bytes())
    (folder / "a.txt").write_text("caption a\n")
    assert read_manifest(folder)[0].caption == "caption a"
    s1 = list(StepBatches([1.0, 0.0, 3.0], 4, seed=1, start=0, total=6))
    s2 = list(StepBatches([1.0, 0.0, 3.0], 4, seed=1, start=3, total=6))
    assert s1[3:] == s2 and all(1 not in b for b in s1)


def test_manifest_palettes_are_checked_on_reading_and_written_back_as_given(tmp_path, dataset):
    rows = read_manifest(dataset)
    assert all(r.palette is not None for r in rows)  # the toy manifest names each image's palette
    for value, match in (("#12345", r"bad.jsonl line 2: palette: .*12345"), (7, "neither palette text nor a list")):
        bad = [{"image": "a.png"}, {"image": "b.png", "palette": value}]
        (tmp_path / "bad.jsonl").write_text("".join(json.dumps(r) + "\n" for r in bad))
        with pytest.raises(ManifestError, match=match):
            read_manifest(tmp_path / "bad.jsonl")
    weighted = "#ff0000:3, #0000ff"
    write_manifest([replace(rows[0], palette=weighted), rows[1]], tmp_path / "kept.jsonl")
    back = read_manifest(tmp_path / "kept.jsonl")
    assert back[0].palette == weighted and back[1].palette == rows[1].palette  # curation keeps them verbatim
    assert torch.allclose(manifest_palettes(back)[0].weights, torch.tensor([0.75, 0.25]))
    with pytest.raises(ManifestError, match="1 of 2 have none"):
        manifest_palettes([rows[0], replace(rows[1], palette=None)])


def test_the_manifest_palette_source_conditions_each_image_on_its_own_palette(tmp_path, dataset):
    """Flat and shaded images drawn in one palette get the same condition: its histogram, with its weights."""
    recipe = Recipe(1.0, 0.0, p_drop_text=0, p_drop_color=0, p_drop_both=0, palette_resize=None)
    recipe = replace(recipe, palette_source="manifest")
    pal = Palette.parse("#ff0000:3, #0000ff")
    img = torch.rand(2, 8, 8, 3, generator=torch.Generator().manual_seed(0))
    img[0] = torch.tensor([1.0, 0.0, 0.0])
    d = draw_conditions(img, recipe, torch.Generator().manual_seed(1), [pal, pal])
    assert torch.equal(d.condition.histogram, pal.histogram().float().expand(2, -1))
    assert sorted(d.condition.histogram[0][d.condition.histogram[0] > 0].tolist()) == [0.25, 0.75]
    assert d.condition.entropy[1] > d.condition.entropy[0] + 3  # the scalars still come from the image
    assert d.condition.distance[1] > d.condition.distance[0]
    with pytest.raises(InputShapeError, match="one palette per image"):
        draw_conditions(img, recipe, torch.Generator().manual_seed(1))
    with pytest.raises(InputShapeError, match="palette source 'kmeans'"):
        Recipe(palette_source="kmeans")
    trainer = Trainer(config(tmp_path / "m", dataset, recipe=recipe), tiny_parts())
    idx = torch.tensor([3, 0])
    drawn, _ = trainer.draw(0, torch.stack([trainer.dataset[int(i)][1] for i in idx]), None, idx)
    rows = read_manifest(dataset)
    for k, i in enumerate(idx.tolist()):
        assert torch.equal(drawn.condition.histogram[k], manifest_palettes([rows[i]])[0].histogram().float())
    args = build_parser().parse_args(["--data", "d.jsonl", "--model", "m", "--palette-source", "manifest"])
    assert config_from_args(args).recipe.palette_source == "manifest"


def _adapter_state(trainer):
    return {k: v.clone() for k, v in trainer.palette_model.adapter.file_tensors().items()}


def _optim_state(trainer):
    st = trainer.optimizer.state_dict()["state"]
    return {(i, k): v.clone() for i, s in st.items() for k, v in s.items() if isinstance(v, torch.Tensor)}


def test_adapter_training_lowers_the_loss_on_a_fixed_batch(tmp_path, dataset):
    """The trainer's loss, gradients and optimizer are wired to the adapter: a fixed batch is fitted."""
    trainer = Trainer(config(tmp_path / "fit", dataset, lr=1e-2), tiny_parts())
    idx = torch.arange(6)
    images = torch.stack([trainer.dataset[i][1] for i in range(6)])
    unet_before = {k: v.clone() for k, v in trainer.unet.state_dict().items()}
    losses = []
    for _ in range(7):
        loss = trainer.micro_loss(0, idx, images)  # the same noise, timesteps and conditions every time
        loss.backward()
        trainer.optimizer.step()
        trainer.optimizer.zero_grad()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.96 * losses[0], losses
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert all(torch.equal(v, unet_before[k]) for k, v in trainer.unet.state_dict().items())  # base frozen


def test_training_run_skips_broken_images_logs_and_exports_a_loadable_adapter(tmp_path, dataset):
    trainer = Trainer(config(tmp_path / "run", dataset, max_steps=6, batch_size=6), tiny_parts())
    result = trainer.train()
    assert result["skipped"] > 0  # the broken and tiny files were drawn and skipped, not fatal
    assert math.isfinite(result["loss"])
    loaded = load_adapter(result["adapter"], model_layers=diffusers_unet_layers(trainer.unet, CTX))
    for k, v in trainer.palette_model.adapter.file_tensors().items():
        assert torch.equal(loaded.file_tensors()[k], v.cpu()), k
    meta = read_adapter_metadata(result["adapter"])
    assert meta["trained_steps"] == "6" and json.loads(meta["blocks"]) == loaded.blocks
    log = (tmp_path / "run" / "train_log.csv").read_text().splitlines()
    assert log[0].startswith("step,loss") and len(log) == 7
    assert int(log[-1].split(",")[4]) == result["skipped"]
    assert (tmp_path / "run" / "training_plot.png").stat().st_size > 0


def test_a_cosine_schedule_decays_the_rate_the_optimizer_steps_with(tmp_path, dataset):
    trainer = Trainer(config(tmp_path / "cos", dataset, lr_schedule="cosine"), tiny_parts())
    trainer.train()
    rows = (tmp_path / "cos" / "train_log.csv").read_text().splitlines()[1:]
    # 1e-3 x (0.1 + 0.9 x (1 + cos(pi k / 4)) / 2) for steps k = 0..3, as the log writes them (3 digits)
    assert [float(r.split(",")[2]) for r in rows] == [1e-3, 8.68e-4, 5.5e-4, 2.32e-4]
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * (0.1 + 0.45 * (1 - math.sqrt(0.5))))
    constant = Trainer(config(tmp_path / "const", dataset, warmup_steps=2), tiny_parts())
    constant.train()
    rows = (tmp_path / "const" / "train_log.csv").read_text().splitlines()[1:]
    assert [float(r.split(",")[2]) for r in rows] == [5e-4, 1e-3, 1e-3, 1e-3]
    with pytest.raises(PaletteError, match="--lr-schedule 'linear'"):
        Trainer(config(tmp_path / "bad", dataset, lr_schedule="linear"), tiny_parts())


def test_resume_reaches_exactly_the_weights_of_an_uninterrupted_run(tmp_path, dataset):
    full = Trainer(config(tmp_path / "full", dataset, max_steps=5), tiny_parts())
    full.train()
    first = Trainer(config(tmp_path / "cut", dataset, max_steps=5), tiny_parts())
    assert first.train(stop=lambda step: step >= 3)["stopped"]
    ckpts = list_checkpoints(tmp_path / "cut" / "checkpoints")
    assert [s for s, _ in ckpts] == [2]  # killed after step 3: step 3 is lost and redone
    (tmp_path / "cut" / "checkpoints" / ".step-00000004.abc.tmp").write_bytes(b"torn write")
    resumed = Trainer(config(tmp_path / "cut", dataset, max_steps=5, recipe_ahead=2), tiny_parts())  # drawn ahead
    assert resumed.train()["step"] == 5
    a, b = _adapter_state(full), _adapter_state(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    oa, ob = _optim_state(full), _optim_state(resumed)
    assert oa.keys() == ob.keys() and all(torch.equal(oa[k], ob[k]) for k in oa)
    rows = (tmp_path / "cut" / "train_log.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [1, 2, 3, 4, 5]


def test_conditions_drawn_ahead_in_a_thread_give_the_weights_of_drawing_in_the_step(tmp_path, dataset):
    """train() can draw the recipe micro-steps ahead in a worker thread; micro-step seeds must still line up."""
    ahead = Trainer(config(tmp_path / "ahead", dataset, max_steps=3, grad_accum=2, recipe_ahead=2), tiny_parts())
    ahead.train()
    inline = Trainer(config(tmp_path / "inline", dataset, max_steps=3, grad_accum=2), tiny_parts())
    batches = inline.loader(0)  # raw (idx, images, skipped): conditions drawn inside the step
    for step in range(3):
        inline.train_step(step, batches)
    a, b = _adapter_state(ahead), _adapter_state(inline)
    assert all(torch.equal(a[k], b[k]) for k in a)

    def broken():
        yield next(iter(inline.loader(0)))
        raise OSError("disk gone")

    stream = inline.prepared(broken())
    assert len(next(stream)) == 4
    with pytest.raises(OSError, match="disk gone"):
        next(stream)


def test_stage_two_trains_chosen_blocks_from_a_stage_one_file(tmp_path, dataset):
    stage1 = Trainer(config(tmp_path / "s1", dataset, max_steps=1), tiny_parts()).train()
    block = "up_blocks.0.attentions.1"
    analysis = tmp_path / "analysis.json"
    analysis.write_text(json.dumps({"recommended": [block]}))
    t2 = Trainer(
        config(tmp_path / "s2", dataset, max_steps=1, stage=2, blocks_from=analysis, init_adapter=stage1["adapter"]),
        tiny_parts(),
    )
    assert t2.palette_model.adapter.blocks == [block]
    s1 = load_adapter(stage1["adapter"])
    assert torch.equal(t2.palette_model.adapter.color_proj.weight.detach(), s1.color_proj.weight)
    with pytest.raises(Exception, match="give --blocks or --blocks-from"):
        Trainer(config(tmp_path / "s3", dataset, stage=2), tiny_parts())


def test_a_stage_two_adapter_keeps_the_layout_of_the_file_it_starts_from(tmp_path):
    from palette_core.adapter import save_adapter
    from train.train_palette_adapter import build_adapter

    unet = tiny_unet()
    layers = diffusers_unet_layers(unet, CTX)
    fresh = build_adapter(unet, layers, seed=0)
    assert fresh.scalar_norm is None and fresh.file_version == "4" and fresh.scalar_added
    old = init_adapter(layers.dims, seed=5, context_dim=CTX, version="1")
    with torch.no_grad():
        old.scalar_norm.bias.fill_(0.25)
    path = save_adapter(old, tmp_path / "stage1-v1.safetensors")
    resumed = build_adapter(unet, layers.select(["up_blocks.0.attentions.1"]), seed=0, init_from=path)
    assert resumed.file_version == "1" and torch.equal(resumed.scalar_norm.bias.detach(), old.scalar_norm.bias.detach())
    assert resumed.layers == ["up_blocks.0.attentions.1.transformer_blocks.0.attn2"]
    # --adapter-version: a new adapter in an older layout (the paper's one softmax), never against the file's
    v3 = build_adapter(unet, layers, seed=0, version="3")
    assert (v3.file_version, v3.scalar_added) == ("3", False)
    cond = palette_condition(torch.tensor([[0.9, 0.2, 0.1], [0.1, 0.3, 0.8]])).with_controls(entropy=2.0)
    assert torch.equal(v3.tokens(cond), fresh.tokens(cond))  # the same tokens; only the attention differs
    with pytest.raises(PaletteError, match="--adapter-version 4 but --init-adapter .* is a version 1 adapter"):
        build_adapter(unet, layers, seed=0, init_from=path, version="4")
    assert build_adapter(unet, layers, seed=0, init_from=path, version="1").file_version == "1"
    with pytest.raises(PaletteError, match="--adapter-version '9': choose one of 1, 2, 3, 4"):
        build_adapter(unet, layers, seed=0, version="9")
    args = build_parser().parse_args(["--data", "d.jsonl", "--model", "m", "--adapter-version", "3"])
    assert config_from_args(args).adapter_version == "3"
    assert config_from_args(build_parser().parse_args(["--data", "d.jsonl", "--model", "m"])).adapter_version is None


def test_validation_logs_palette_emd_and_analysis_ranks_every_block(tmp_path, dataset):
    from palette_core.palette import Palette
    from train.analyse_blocks import analyse, recommend

    trainer = Trainer(
        config(tmp_path / "v", dataset, max_steps=1, validate_every=1, val_palettes=["#ff0000, #00ff00"], val_steps=2),
        tiny_parts(),
    )
    trainer.train()
    rows = (tmp_path / "v" / "validation.csv").read_text().splitlines()
    assert rows[0] == "step,palette_emd,palette_emd_base" and [r.split(",")[0] for r in rows[1:]] == ["0", "1"]
    assert all(0 < float(r.split(",")[1]) < 2 for r in rows[1:])
    text = ConstantText(2, None, CTX)
    model = trainer.palette_model
    pals = [Palette.parse("#ff0000, #0000ff")]
    result = analyse(model, trainer.codec, trainer.scheduler.config, text, pals, [""], [0], SIZE, steps=2)
    assert {r["block"] for r in result["ranking"]} == set(model.adapter.blocks)
    deltas = [r["delta"] for r in result["ranking"]]
    assert deltas == sorted(deltas, reverse=True) and any(d != 0 for d in deltas)
    assert not model.context.disabled
    fake = [{"block": "a", "delta": 0.5}, {"block": "b", "delta": 0.3}, {"block": "c", "delta": 0.2}]
    assert recommend(fake, coverage=0.6) == ["a", "b"] and recommend(fake, coverage=0.4) == ["a"]


def test_cli_flags_map_onto_the_config(tmp_path):
    args = build_parser().parse_args(
        [
            "--data",
            "d.jsonl",
            "--model",
            "m",
            "--blocks",
            "up_blocks.0.attentions.1, mid_block.attentions.0",
            "--mixed-precision",
            "bf16",
            "--gradient-checkpointing",
            "--grad-accum",
            "4",
            "--p-palette",
            "0.5",
            "--palette-resize",
            "0",
            "--no-progress",
            "--lr-schedule",
            "cosine",
        ]
    )
    cfg = config_from_args(args)
    default = config_from_args(build_parser().parse_args([]))
    assert cfg.lr_schedule == "cosine" and default.lr_schedule == "constant"
    assert cfg.blocks == ["up_blocks.0.attentions.1", "mid_block.attentions.0"]
    assert cfg.mixed_precision == "bf16" and cfg.gradient_checkpointing and cfg.grad_accum == 4
    assert cfg.recipe.p_palette == 0.5 and cfg.recipe.palette_resize is None and not cfg.progress


TOY_FLAGS = {
    "--pixel-space": None,
    "--pixel-patch": "2",
    "--pixel-scale": "2",
    "--constant-text": "zeros",
    "--text-tokens": "2",
    "--stop-after": "1",
    "--any-text-width": None,
}


def test_the_sdxl_trainer_has_no_toy_switches_and_the_toy_trains_through_its_parts(tmp_path, dataset, capsys):
    """TrainConfig and the trainer's CLI carry no toy switch; the toy's CLI trains a toy base through ModelParts."""
    from dataclasses import fields

    from train import train_palette_adapter
    from train.toy import train_adapter
    from train.toy.train_base import toy_scheduler

    toy_fields = {"pixel_space", "pixel_patch", "pixel_scale", "constant_text", "text_tokens", "stop_after"}
    assert not {f.name for f in fields(TrainConfig)} & (toy_fields | {"sdxl_only"})
    assert not {"WordText", "ConstantText", "PixelCodec"} & set(vars(train_palette_adapter))
    required = ["--data", str(dataset), "--model", "m"]
    for flag, value in TOY_FLAGS.items():
        with pytest.raises(SystemExit):
            build_parser().parse_args([*required, flag, *([value] if value else [])])
    assert "unrecognized arguments: --any-text-width" in capsys.readouterr().err

    base = tmp_path / "base"  # a toy base as train_base writes it: UNet, scheduler and pixel codec record
    tiny_unet().save_pretrained(base)
    toy_scheduler("sample").save_pretrained(base / "scheduler")
    PixelCodec(1, 2.0).save(base)
    run = tmp_path / "run"
    argv = [*("--model", str(base), "--data", str(dataset), "--output", str(run), "--resolution", str(SIZE)),
            *("--batch-size", "4", "--max-steps", "2", "--checkpoint-every", "1", "--validate-every", "0"),
            *("--palette-resize", "0", "--no-progress", "--constant-text", "zeros", "--text-tokens", "2")]  # fmt: skip
    args = train_adapter.build_parser().parse_args([*argv, "--pixel-scale", "2"])
    assert (args.pixel_patch, args.pixel_scale, args.constant_text, args.text_tokens) == (1, 2.0, "zeros", 2)
    assert config_from_args(args).lr == 1e-4 and config_from_args(args).resolution == SIZE  # the trainer's flags

    assert train_adapter.main([*argv, "--pixel-scale", "1"]) == 2  # contradicts the base's record: refused
    assert train_adapter.main([*argv, "--stop-after", "1"]) == 0
    stopped = json.loads(capsys.readouterr().out)
    assert stopped["stopped"] and stopped["step"] == 1
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [1]
    assert train_adapter.main(argv) == 0  # resumed
    result = json.loads(capsys.readouterr().out)
    assert result["step"] == 2 and not result["stopped"]
    adapter = load_adapter(result["adapter"], model_layers=diffusers_unet_layers(tiny_unet(), CTX))
    assert adapter.context_dim == CTX and len(adapter.layer_dims) == 11  # the toy's own text width, every layer
    rows = (run / "train_log.csv").read_text().splitlines()[1:]
    assert [r.split(",")[0] for r in rows] == ["1", "2"] and all(math.isfinite(float(r.split(",")[1])) for r in rows)


def test_condition_batches_broadcast_into_cfg_halves():
    from train.processor import expand_condition

    c = palette_condition(torch.tensor([[1.0, 0.0, 0.0]]))
    e = expand_condition(c, 3)
    assert e.batch_size == 3 and torch.equal(e.histogram[2], c.histogram[0])
    both = ColorCondition.cat([expand_condition(c, 2), expand_condition(c, 2)])
    assert both.histogram.shape == (4, NUM_BINS) and math.isnan(float(both.distance[0]))


def test_text_kv_initialises_the_adapter_from_the_text_projections():
    unet = tiny_unet()
    layers = diffusers_unet_layers(unet, CTX)
    kv = text_kv(unet, layers)
    adapter = init_adapter(layers.dims, 0, kv, CTX)
    name = layers[0].name
    assert torch.equal(adapter.kv_weights(name)[0], dict(unet.named_modules())[name].to_k.weight)
    assert torch.equal(adapter.kv_weights(name)[1], dict(unet.named_modules())[name].to_v.weight)


def test_install_and_eject_restore_the_unet_exactly():
    unet = tiny_unet().eval()
    x, t, text, pooled, ids = unet_inputs()
    before = {n: m.processor for n, m in unet.named_modules() if hasattr(m, "processor")}
    with torch.no_grad():
        plain = unet(x, t, text, added_cond_kwargs={"text_embeds": pooled, "time_ids": ids}).sample
    layers = diffusers_unet_layers(unet, CTX).select(["up_blocks.0.attentions.1", "mid_block.attentions.0"])
    model = PaletteUNet(unet, init_adapter(layers.dims, seed=2, context_dim=CTX))
    patched = {n for n, m in unet.named_modules() if isinstance(getattr(m, "processor", None), PaletteAttnProcessor)}
    assert patched == set(layers.dims) and len(patched) == 2
    cond = palette_condition(torch.tensor([[0.9, 0.1, 0.1]]))
    with torch.no_grad():
        on = model(x, t, text, pooled, ids, cond)
    assert (on - plain).abs().max() > 1e-4
    assert model.eject() is unet
    after = {n: m.processor for n, m in unet.named_modules() if hasattr(m, "processor")}
    assert after.keys() == before.keys() and all(after[n] is before[n] for n in before)
    with torch.no_grad():
        again = unet(x, t, text, added_cond_kwargs={"text_embeds": pooled, "time_ids": ids}).sample
    assert torch.equal(again, plain)


def test_install_refuses_an_adapter_that_does_not_fit():
    unet = tiny_unet()
    layers = diffusers_unet_layers(unet, CTX)
    wide = {name: dim * 2 for name, dim in layers.select(["mid_block.attentions.0"]).dims.items()}
    with pytest.raises(
        AdapterError, match=r"mid_block.attentions.0.transformer_blocks.0.attn2 has inner dim 256, this UNet has 128"
    ):
        PaletteUNet(unet, init_adapter(wide, seed=0, context_dim=CTX))
    with pytest.raises(AdapterError, match="tokens are 64-dim"):
        PaletteUNet(unet, init_adapter(layers.select(["mid_block.attentions.0"]).dims, seed=0, context_dim=64))
    assert not any(isinstance(getattr(m, "processor", None), PaletteAttnProcessor) for m in unet.modules())


def test_pixel_codec_round_trips_and_word_text_is_deterministic():
    from train.toy.parts import WordText

    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    codec = PixelCodec(4)
    z = codec.encode(x)
    assert z.shape == (2, 48, 4, 4) and torch.allclose(codec.decode(z), x, atol=1e-6)
    assert torch.equal(z[0, [0, 16, 32], 0, 0], x[0, :, 0, 0] * 2 - 1)  # channel c * 16 + (dy * 4 + dx)
    assert torch.equal(z[0, 1 * 16 + 2 * 4 + 3, 1, 0], x[0, 1, 4 + 2, 3] * 2 - 1)  # row 4 dy + 2, col dx 3
    from palette_core.errors import AdapterError

    scaled = PixelCodec(4, scale=2.0)
    assert torch.allclose(scaled.encode(x), 2 * z) and torch.allclose(scaled.decode(2 * z), x, atol=1e-6)
    with pytest.raises(AdapterError, match="scale"):
        PixelCodec(2, scale=0.0)
    words = WordText(tokens=3, dim=8)
    emb, pooled = words.embed(["two circle flat", "circle", ""])
    assert torch.equal(emb[0, 1], emb[1, 0]) and not torch.equal(emb[0, 0], emb[0, 1])
    assert emb[1, 1:].abs().sum() == 0 and emb[2].abs().sum() == 0 and pooled.abs().sum() == 0
    assert torch.equal(WordText(tokens=3, dim=8).embed(["circle"])[0], emb[1:2])


def test_word_text_colour_words_are_a_smooth_function_of_the_colour():
    from palette_core.palette import to_hex
    from train.toy.parts import WordText
    from train.toy.train_base import _shape_words

    words = WordText(tokens=4, dim=2048)
    red, near_red, green = (words.embed([w])[0][0, 0] for w in ("#ff0000", "#f51008", "#00ff00"))
    bg_red, other = words.embed(["bg-#ff0000"])[0][0, 0], words.embed(["circle"])[0][0, 0]

    def cos(a, b):
        return float(a @ b / a.norm() / b.norm())

    # sRGB (1, 0, 0) and (0.96, 0.06, 0.03) are 5.5 apart in CIELAB: kernel exp(-(0.1 * 5.5)^2 / 2) = 0.86
    assert cos(red, near_red) == pytest.approx(0.86, abs=0.05)
    assert abs(cos(red, green)) < 0.1 and abs(cos(red, bg_red)) < 0.1 and abs(cos(red, other)) < 0.1
    assert float(red.norm()) == pytest.approx(float(other.norm()), rel=0.1)  # colour words weigh as much as other words
    assert torch.equal(words.embed(["#FF0000"])[0][0, 0], red)  # captions are lower-cased
    assert to_hex(np.array([1.0, 0.5, 0.0])) == "#ff8000"  # the toy captions' colour words
    assert _shape_words("bg-#102030 #ff8000 two circle flat") == "two circle flat"


def test_toy_base_trains_and_saves_a_loadable_model_with_its_scheduler(tmp_path):
    from diffusers import DDPMScheduler

    from train.models import load_unet
    from train.toy.train_base import train_base

    manifest = write_dataset(tmp_path / "data", 16, 16, seed=1)
    out = train_base(manifest, tmp_path / "base", steps=40, batch=8, channels=32, size=16, patch=2, progress=False)
    rows = [line.split(",") for line in (out / "base_log.csv").read_text().splitlines()[1:]]
    losses = [float(r[1]) for r in rows]
    assert len(losses) == 40 and all(math.isfinite(v) for v in losses)
    assert sum(losses[-10:]) < 0.8 * sum(losses[:10]), losses  # it learns
    assert load_unet(out).config.in_channels == 12  # 2 x 2 patches of RGB
    assert DDPMScheduler.from_pretrained(out / "scheduler").config.prediction_type == "sample"


def test_toy_base_trains_v_prediction_on_scaled_pixels_and_records_its_codec(tmp_path):
    from train.models import noise_scheduler
    from train.toy.train_base import base_codec, train_base

    manifest = write_dataset(tmp_path / "data", 16, 16, seed=1)
    out = train_base(
        manifest,
        tmp_path / "base",
        steps=40,
        batch=8,
        lr=3e-3,
        channels=32,
        size=16,
        patch=2,
        prediction_type="v_prediction",
        pixel_scale=2.0,
        progress=False,
    )
    losses = [float(r.split(",")[1]) for r in (out / "base_log.csv").read_text().splitlines()[1:]]
    assert sum(losses[-10:]) < 0.9 * sum(losses[:10]), losses  # v's loss starts near 1 and falls slowly (0.86 here)
    sched = noise_scheduler(out)  # what the adapter trainer reads
    assert sched.config.prediction_type == "v_prediction" and sched.config.clip_sample_range == 2.0
    codec = base_codec(out)
    assert (codec.factor, codec.scale) == (2, 2.0)
    from train.toy.parts import toy_base_parts

    cfg = TrainConfig(
        output=tmp_path / "run", data=manifest, model=out, resolution=16, validate_every=0, progress=False
    )
    trainer = Trainer(cfg, toy_base_parts(out, 2, text="words", tokens=12))  # the adapter trains on the base's scale
    assert trainer.codec.scale == 2.0 and trainer.scheduler.config.prediction_type == "v_prediction"
    with pytest.raises(PaletteError, match="--pixel-scale 2"):
        toy_base_parts(out, 2, 1.0, text="words", tokens=12)
    (out / "pixel_codec.json").unlink()
    with pytest.raises(FileNotFoundError, match="train it again"):
        base_codec(out)
    with pytest.raises(ValueError, match="prediction type"):
        train_base(manifest, tmp_path / "eps", steps=1, prediction_type="epsilon", progress=False)


def test_toy_snr_weights_follow_min_snr():
    from train.toy.train_base import snr_weight

    snr = torch.tensor([0.01, 1.0, 4.0, 100.0])
    # v: min(SNR, 5) / (SNR + 1) -- the eps weight min(SNR, 5) / SNR times v's SNR / (SNR + 1)
    assert torch.allclose(snr_weight(snr, "v_prediction", 5.0), torch.tensor([0.01 / 1.01, 0.5, 0.8, 5 / 101]))
    assert torch.allclose(snr_weight(snr, "sample", 5.0), torch.tensor([1.0, 1.0, 4.0, 5.0]))
    assert torch.equal(snr_weight(snr, "v_prediction", None), torch.ones(4))


def test_toy_timesteps_move_to_mid_noise_by_their_lognormal_share():
    from train.toy.train_base import draw_timesteps, toy_scheduler

    alphas = toy_scheduler().alphas_cumprod
    uniform = draw_timesteps(20000, alphas, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(uniform, torch.randint(0, 1000, (20000,), generator=torch.Generator().manual_seed(0)))
    t = draw_timesteps(20000, alphas, 1.0, torch.Generator().manual_seed(0))
    sigma = ((1 - alphas[t]) / alphas[t]).sqrt()
    # ln sigma ~ N(-0.5, 1.2^2): median sigma e^-0.5 = 0.61, 84th percentile e^0.7 = 2.0
    assert float(sigma.median()) == pytest.approx(0.61, rel=0.05)
    assert float(torch.quantile(sigma, 0.84)) == pytest.approx(2.0, rel=0.08)
    half = draw_timesteps(20000, alphas, 0.5, torch.Generator().manual_seed(0))
    expected = 0.5 * 0.3 + 0.5 * float((t > 700).float().mean())  # half uniform (30 % above 700), half log-normal
    assert float((half > 700).float().mean()) == pytest.approx(expected, abs=0.02)


def test_learning_rates_warm_up_then_stay_or_follow_a_cosine_to_the_floor():
    from train.schedule import learning_rate

    assert [learning_rate(k, 10, 2.0, 4) for k in (0, 2, 3, 9, 50)] == [0.5, 1.5, 2.0, 2.0, 2.0]
    assert learning_rate(0, 10, 2.0) == 2.0  # no warm-up
    assert learning_rate(5, 10, 1.0, schedule="cosine") == pytest.approx(0.55)
    assert learning_rate(10, 10, 1.0, schedule="cosine", floor=0.2) == pytest.approx(0.2)
    assert learning_rate(99, 10, 1.0, schedule="cosine") == pytest.approx(0.1)  # past the end: the floor
    with pytest.raises(ValueError, match="choose one of constant, cosine"):
        learning_rate(0, 10, 1.0, schedule="step")


def test_toy_base_lr_warms_up_then_decays_by_cosine_to_its_floor():
    from train.toy.train_base import base_lr

    assert base_lr(0, 1000, 1.0) == pytest.approx(0.01 * (0.1 + 0.9 * 0.5 * (1 + math.cos(0.0))))
    assert base_lr(99, 1000, 1.0) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.099)))
    assert base_lr(500, 1000, 2.0) == pytest.approx(2.0 * 0.55)  # half way: the mean of 1 and the floor 0.1
    assert base_lr(1000, 1000, 1.0) == pytest.approx(0.1)
    rates = [base_lr(s, 1000, 1.0) for s in range(100, 1001)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))


def test_cpu_training_keeps_freed_memory_for_reuse(tmp_path, dataset, monkeypatch):
    import platform

    import train.train_palette_adapter as tpa

    calls = []
    monkeypatch.setattr(tpa, "reuse_freed_memory", lambda: calls.append(True) or True)
    Trainer(config(tmp_path / "reuse", dataset), tiny_parts())
    assert calls == [True]  # a CPU trainer sets the allocator up once, before any step
    monkeypatch.undo()
    if platform.libc_ver()[0] == "glibc":
        assert tpa.reuse_freed_memory() is True

    def no_libc(name):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(tpa.ctypes, "CDLL", no_libc)
    assert tpa.reuse_freed_memory() is False  # musl, macOS, Windows: nothing to set, no error
