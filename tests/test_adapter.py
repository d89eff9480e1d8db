"""palette_core.adapter and palette_core.blocks: conditions, tokens, attention, the file format, block names."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from palette_core import adapter as A
from palette_core.blocks import (
    DEFAULT_BLOCKS,
    AttentionLayer,
    AttentionLayers,
    block_of,
    blocks_in,
    diffusers_block,
    parse_blocks,
    sdxl_layers,
)
from palette_core.errors import AdapterError, InputShapeError
from palette_core.histogram import NUM_BINS, palette_histogram

BLOCK_KEYS = {  # docs/design.md §6: ComfyUI block -> diffusers block
    ("input", 4): "down_blocks.1.attentions.0",
    ("input", 5): "down_blocks.1.attentions.1",
    ("input", 7): "down_blocks.2.attentions.0",
    ("input", 8): "down_blocks.2.attentions.1",
    ("middle", 0): "mid_block.attentions.0",
    **{("output", i): f"up_blocks.{i // 3}.attentions.{i % 3}" for i in range(6)},
}


def test_sdxl_layer_table_matches_the_spec():
    layers = sdxl_layers()
    assert len(layers) == 70
    assert len(blocks_in(layers)) == 11
    for layer in layers:
        kind, block_id, index = layer.comfy_key
        assert layer.name == f"{BLOCK_KEYS[(kind, block_id)]}.transformer_blocks.{index}.attn2"
        assert layer.dim == (
            640 if BLOCK_KEYS[(kind, block_id)].split(".")[1] == "1" and "mid" not in layer.name else 1280
        )
    assert DEFAULT_BLOCKS[0] in blocks_in(layers)
    assert sum(1 for layer in layers if layer.block == "up_blocks.0.attentions.1") == 10


def test_block_naming_rules():
    assert diffusers_block("output", 8, [2, 2, 2]) == "up_blocks.2.attentions.2"
    assert diffusers_block("input", 1, [2, 2, 2]) == "down_blocks.0.attentions.0"
    with pytest.raises(AdapterError):
        diffusers_block("input", 3, [2, 2, 2])  # the downsampler
    assert block_of("mid_block.attentions.0.transformer_blocks.9.attn2") == "mid_block.attentions.0"
    assert parse_blocks("from file") is None
    assert parse_blocks("up_blocks.0.attentions.1, mid_block.attentions.0 up_blocks.0.attentions.1") == [
        "up_blocks.0.attentions.1",
        "mid_block.attentions.0",
    ]
    with pytest.raises(AdapterError, match="'up_block.0' is not a block name"):
        parse_blocks("up_block.0")


def layers_of(block: str = DEFAULT_BLOCKS[0]) -> dict[str, int]:
    return {x.name: x.dim for x in sdxl_layers() if x.block == block}


def test_conditions_and_scalar_features():
    colors = torch.tensor([[1.0, 0, 0], [0, 0, 1.0]])
    pal = A.palette_condition(colors)
    assert pal.batch_size == 1 and int(pal.kind[0]) == A.KIND_PALETTE
    assert torch.allclose(pal.histogram[0], palette_histogram(colors))
    feats = pal.scalar_features()
    assert feats.tolist() == [[0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]]  # no distance, no entropy
    set_ = pal.with_controls(distance=0.6, entropy=3.0)
    assert set_.scalar_features()[0].tolist() == pytest.approx([0, 1, 0, 0.6, 1, 3.0 / math.log2(NUM_BINS), 1])
    hist = A.histogram_condition(torch.ones(2, NUM_BINS))
    assert hist.batch_size == 2 and hist.kind.tolist() == [2, 2]
    assert torch.allclose(hist.histogram.sum(-1), torch.ones(2))
    null = A.null_condition()
    assert null.histogram.abs().sum() == 0 and int(null.kind[0]) == A.KIND_NONE
    neg = A.negative_condition(colors, weight=0.3)
    assert neg.histogram.sum() == pytest.approx(0.3)  # spread over its bins, not renormalised
    with pytest.raises(InputShapeError):
        A.histogram_condition(torch.zeros(NUM_BINS))


def test_branch_conditions_relative_and_absent_controls():
    pos = A.palette_condition(torch.rand(3, 3))
    p, n = A.branch_conditions(pos)
    assert int(n.kind[0]) == 0 and torch.isnan(n.entropy).all() and torch.isnan(n.distance).all()
    rel = pos.with_controls(entropy=4.0, null_entropy=7.0)
    p, n = A.branch_conditions(rel, A.negative_condition(torch.rand(2, 3), weight=0.1))
    assert float(p.entropy[0]) == 4.0 and float(n.entropy[0]) == 7.0
    assert torch.isnan(n.distance).all() and torch.isnan(p.distance).all()  # unset: absent on both
    assert int(n.kind[0]) == A.KIND_PALETTE
    absolute = pos.with_controls(distance=0.3)
    _, n = A.branch_conditions(absolute)
    assert torch.isnan(n.distance).all()


def test_tokens_shape_norm_and_dependence_on_condition():
    adapter = A.init_adapter(layers_of(), seed=3)
    c1 = A.palette_condition(torch.tensor([[1.0, 0, 0]]))
    c2 = A.palette_condition(torch.tensor([[0, 0, 1.0]]))
    t1, t2 = adapter.tokens(c1), adapter.tokens(c2)
    assert t1.shape == (1, A.NUM_TOKENS, A.CONTEXT_DIM)
    assert torch.allclose(t1[:, :4].mean(-1), torch.zeros(1, 4), atol=1e-5)  # LayerNorm per colour token
    s = A.ColorCondition.scalar_features(c1)  # the scalar token is the plain projection of the scalar features
    assert torch.allclose(t1[:, 4], adapter.scalar_proj(s)) and adapter.scalar_norm is None
    assert not torch.allclose(t1[:, :4], t2[:, :4])
    assert torch.allclose(t1[:, 4], t2[:, 4])  # same scalars -> same 5th token
    t3 = adapter.tokens(c1.with_controls(entropy=2.0))
    assert torch.allclose(t3[:, :4], t1[:, :4]) and not torch.allclose(t3[:, 4], t1[:, 4])


def reference_attention(q, k, v, heads):
    b, t, c = q.shape
    d = c // heads
    out = torch.empty_like(q)
    for h in range(heads):
        sl = slice(h * d, (h + 1) * d)
        w = torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(d), dim=-1)
        out[..., sl] = w @ v[..., sl]
    return out


def test_token_attention_is_the_softmax_the_adapter_attention_uses():
    g = torch.Generator().manual_seed(1)
    q, tokens = torch.randn(2, 6, 32, generator=g), torch.randn(1, 5, 16, generator=g)
    wk, wv = torch.randn(32, 16, generator=g), torch.randn(32, 16, generator=g)
    w = A.token_attention(q, tokens, wk, heads=2)
    assert w.shape == (2, 2, 6, 5)
    assert torch.allclose(w.sum(-1), torch.ones(2, 2, 6))
    v = A.split_heads((tokens @ wv.T).expand(2, -1, -1), 2)
    out = (w @ v).transpose(1, 2).reshape(2, 6, 32)  # the weights reproduce the attention's output
    assert torch.allclose(out, A.decoupled_attention(q, tokens, wk, wv, heads=2), atol=1e-5)
    wide = torch.zeros_like(tokens)
    wide[:, 4] = tokens[:, 4] * 50  # a token whose key dominates takes (nearly) all the weight
    assert A.token_attention(q, wide, wk, heads=2)[..., 4].mean() > 0.4


def test_decoupled_attention_is_attention_over_projected_tokens():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 16, 128, generator=g)
    tokens = torch.randn(2, 5, 64, generator=g)
    wk, wv = torch.randn(128, 64, generator=g), torch.randn(128, 64, generator=g)
    out = A.decoupled_attention(q, tokens, wk, wv, heads=4)
    ref = reference_attention(q, tokens @ wk.T, tokens @ wv.T, 4)
    assert torch.allclose(out, ref, atol=1e-5)
    shared = A.decoupled_attention(q, tokens[:1], wk, wv, heads=4)  # one condition for the whole batch
    assert torch.allclose(shared[1], reference_attention(q[1:], tokens[:1] @ wk.T, tokens[:1] @ wv.T, 4)[0], atol=1e-5)
    with pytest.raises(InputShapeError):
        A.decoupled_attention(q, torch.randn(3, 5, 64), wk, wv, heads=4)


@pytest.mark.parametrize("host", [None, A.sdpa_attention])
def test_version_4_attends_the_colour_tokens_and_adds_the_scalar_tokens_value_to_every_query(host):
    g = torch.Generator().manual_seed(5)
    q = torch.randn(2, 16, 128, generator=g)
    tokens = torch.randn(2, 5, 64, generator=g)
    wk, wv = torch.randn(128, 64, generator=g), torch.randn(128, 64, generator=g)
    out = A.decoupled_attention(q, tokens, wk, wv, 4, host, scalar_added=True)
    k, v = tokens @ wk.T, tokens @ wv.T
    assert torch.allclose(out, reference_attention(q, k[:, :4], v[:, :4], 4) + v[:, 4:5], atol=1e-4)
    # a change of the scalar token moves every query by the same vector, whatever its key: no softmax
    moved = tokens.clone()
    moved[:, 4] += torch.randn(2, 64, generator=g)
    shift = A.decoupled_attention(q, moved, wk, wv, 4, host, scalar_added=True) - out
    assert torch.allclose(shift, ((moved[:, 4] - tokens[:, 4]) @ wv.T).unsqueeze(1).expand_as(shift), atol=1e-4)
    joint = A.decoupled_attention(q, moved, wk, wv, 4, host) - A.decoupled_attention(q, tokens, wk, wv, 4, host)
    assert not torch.allclose(joint, joint[:, :1].expand_as(joint), atol=1e-3)


def test_token_shares_are_the_softmax_or_the_scalar_tokens_part_of_the_output():
    g = torch.Generator().manual_seed(2)
    q, tokens = torch.randn(2, 6, 32, generator=g), torch.randn(2, 5, 16, generator=g)
    wk, wv = torch.randn(32, 16, generator=g), torch.randn(32, 16, generator=g)
    assert torch.equal(A.token_shares(q, tokens, wk, wv, 2), A.token_attention(q, tokens, wk, 2))
    shares = A.token_shares(q, tokens, wk, wv, 2, scalar_added=True)
    assert shares.shape == (2, 2, 6, 5) and torch.allclose(shares.sum(-1), torch.ones(2, 2, 6), atol=1e-6)
    v = A.split_heads(tokens @ wv.T, 2)
    colour = (shares[..., :4] / (1 - shares[..., 4:])) @ v[:, :, :4]  # the colour tokens' weights, rescaled
    ratio = v[:, :, 4:].norm(dim=-1) / (colour.norm(dim=-1) + v[:, :, 4:].norm(dim=-1))
    assert torch.allclose(shares[..., 4], ratio, atol=1e-5)
    out = (colour + v[:, :, 4:]).transpose(1, 2).reshape(2, 6, 32)  # the parts rebuild the output
    assert torch.allclose(out, A.decoupled_attention(q, tokens, wk, wv, 2, scalar_added=True), atol=1e-5)
    silent = tokens.clone()
    silent[:, 4] = 0.0  # a scalar token with no value takes no share
    assert torch.allclose(A.token_shares(q, silent, wk, wv, 2, scalar_added=True)[..., 4], torch.zeros(2, 2, 6))


SMALL_BLOCK = "down_blocks.1.attentions.0"  # 2 layers of 640: keeps the file tests light


def small_adapter(context_dim: int = 64) -> A.PaletteAdapter:
    return A.init_adapter(layers_of(SMALL_BLOCK), seed=1, context_dim=context_dim)


def test_save_load_round_trip_and_metadata(tmp_path):
    adapter = A.init_adapter(layers_of(SMALL_BLOCK), seed=1)
    path = A.save_adapter(adapter, tmp_path / "a.safetensors", trained_steps=12)
    meta = A.read_adapter_metadata(path)
    assert meta["format"] == "palette-adapter" and meta["version"] == "4" and meta["base"] == "sdxl"
    assert meta["histogram"] == "hsv-34x12x10-v1" and meta["trained_steps"] == "12"
    assert json.loads(meta["layers"]) == list(layers_of(SMALL_BLOCK))
    tensors = load_file(path)
    assert tensors["color_proj.weight"].shape == (4 * 2048, NUM_BINS)
    assert tensors["layers.down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_v.weight"].shape == (640, 2048)
    loaded = A.load_adapter(path, model_layers=sdxl_layers())
    assert loaded.trained_steps == 12
    for key, value in adapter.file_tensors().items():
        assert torch.equal(value, loaded.file_tensors()[key]), key
    assert not any(p.requires_grad for p in loaded.parameters())
    assert "scalar_norm.weight" not in tensors and loaded.scalar_norm is None


def test_version_1_files_keep_their_scalar_layernorm(tmp_path):
    old = A.init_adapter(layers_of(SMALL_BLOCK), seed=2, context_dim=64, version="1")
    with torch.no_grad():
        old.scalar_norm.weight.uniform_(0.5, 2.0)  # not the identity, so a forgotten norm shows
    path = A.save_adapter(old, tmp_path / "v1.safetensors")
    assert A.read_adapter_metadata(path)["version"] == "1" and "scalar_norm.bias" in load_file(path)
    loaded = A.load_adapter(path)
    cond = A.palette_condition(torch.tensor([[0.2, 0.7, 0.1]])).with_controls(entropy=3.0, distance=0.4)
    w, b = old.scalar_proj.weight, old.scalar_proj.bias  # version 1: no gain on the values
    want = old.scalar_norm(cond.scalar_features() @ w.T + b)
    assert torch.allclose(loaded.tokens(cond)[:, 4], want, atol=1e-6)
    assert torch.allclose(loaded.tokens(cond), old.tokens(cond), atol=1e-6)
    assert A.read_adapter_metadata(A.save_adapter(loaded, tmp_path / "again.safetensors"))["version"] == "1"
    assert loaded.subset(loaded.layers[:1]).scalar_norm is not None
    new = A.init_adapter(layers_of(SMALL_BLOCK), seed=2, context_dim=64)
    with pytest.raises(AdapterError, match="version 1 adapter's tokens into a version 4"):
        A.copy_weights(new, loaded, new.layers)
    v1 = load_file(path)
    unnormed = {k: v for k, v in v1.items() if not k.startswith("scalar_norm")}
    for name, tensors, version, message in (
        ("v1-without-norm", unnormed, "1", "scalar_norm.weight is missing"),
        ("v2-with-norm", v1, "2", "unexpected tensor scalar_norm.bias; not a version 2 palette adapter"),
        ("v3-with-norm", v1, "3", "unexpected tensor scalar_norm.bias; not a version 3 palette adapter"),
        ("v5", v1, "5", "reads versions 1, 2, 3, 4: update the pack"),
    ):  # fmt: skip
        bad = tmp_path / f"{name}.safetensors"
        save_file(tensors, bad, metadata={**A.read_adapter_metadata(path), "version": version})
        with pytest.raises(AdapterError, match=message):
            A.load_adapter(bad)


def version_2_and_3_tokens(cond, adapter):
    """The scalar token by hand: version 2 projects the features as they are, version 3 scales two of them."""
    f = cond.scalar_features()
    gained = f.clone()
    gained[:, 3] *= 10.0  # distance
    gained[:, 5] *= 10.0  # entropy / log2(4080)
    w, b = adapter.scalar_proj.weight, adapter.scalar_proj.bias
    return f @ w.T + b, gained @ w.T + b


def test_version_3_scales_the_distance_and_entropy_before_the_projection_and_version_2_files_do_not(tmp_path):
    new = A.init_adapter(layers_of(SMALL_BLOCK), seed=4, context_dim=64, version="3")
    assert new.file_version == "3" and new.scalar_norm is None and not new.scalar_added
    old = A.init_adapter(layers_of(SMALL_BLOCK), seed=4, context_dim=64, version="2")
    path = A.save_adapter(old, tmp_path / "v2.safetensors")
    assert A.read_adapter_metadata(path)["version"] == "2" and "scalar_norm.weight" not in load_file(path)
    loaded = A.load_adapter(path)
    assert loaded.file_version == "2"
    for cond in (
        A.palette_condition(torch.tensor([[0.2, 0.7, 0.1]])).with_controls(entropy=3.0, distance=0.4),
        A.palette_condition(torch.tensor([[0.9, 0.1, 0.1]])).with_controls(entropy=0.5),
        A.null_condition(2).with_controls(entropy=4.0),
    ):
        plain, gained = version_2_and_3_tokens(cond, new)
        assert torch.allclose(new.tokens(cond)[:, 4], gained, atol=1e-5)
        assert not torch.allclose(plain, gained, atol=1e-3)
        plain_2, _ = version_2_and_3_tokens(cond, loaded)
        assert torch.allclose(loaded.tokens(cond)[:, 4], plain_2, atol=1e-5)
        assert torch.allclose(loaded.tokens(cond), old.tokens(cond), atol=1e-6)
    # the same weights: the gain is in the version, not in the file's tensors
    v3 = A.save_adapter(new, tmp_path / "v3.safetensors")
    assert load_file(v3).keys() == load_file(path).keys() and A.read_adapter_metadata(v3)["version"] == "3"
    assert torch.allclose(A.load_adapter(v3).tokens(cond), new.tokens(cond), atol=1e-6)
    assert A.read_adapter_metadata(A.save_adapter(loaded, tmp_path / "again.safetensors"))["version"] == "2"
    assert loaded.subset(loaded.layers[:1]).file_version == "2"
    with pytest.raises(AdapterError, match="version 2 adapter's tokens into a version 3"):
        A.copy_weights(new, loaded, new.layers)
    with pytest.raises(AdapterError, match="adapter version '7': this pack makes versions 1, 2, 3, 4"):
        A.PaletteAdapter(layers_of(SMALL_BLOCK), 64, "7")


def test_version_4_has_version_3s_tokens_and_file_and_only_attends_otherwise(tmp_path):
    v4 = A.init_adapter(layers_of(SMALL_BLOCK), seed=4, context_dim=64)
    v3 = A.init_adapter(layers_of(SMALL_BLOCK), seed=4, context_dim=64, version="3")
    assert v4.file_version == "4" and v4.scalar_added and v4.scalar_norm is None
    cond = A.palette_condition(torch.tensor([[0.2, 0.7, 0.1]])).with_controls(entropy=3.0, distance=0.4)
    assert torch.equal(v4.tokens(cond), v3.tokens(cond))
    p4, p3 = A.save_adapter(v4, tmp_path / "v4.safetensors"), A.save_adapter(v3, tmp_path / "v3.safetensors")
    assert load_file(p4).keys() == load_file(p3).keys() and A.read_adapter_metadata(p4)["version"] == "4"
    loaded3, loaded4 = A.load_adapter(p3), A.load_adapter(p4)
    assert (loaded3.file_version, loaded3.scalar_added) == ("3", False)
    assert (loaded4.file_version, loaded4.scalar_added) == ("4", True)
    assert loaded4.subset(loaded4.layers[:1]).scalar_added
    with pytest.raises(AdapterError, match="version 3 adapter's tokens into a version 4"):
        A.copy_weights(v4, loaded3, v4.layers)


def test_a_new_version_3_adapter_starts_with_the_tokens_of_a_version_2_one():
    v3 = A.init_adapter(layers_of(SMALL_BLOCK), seed=6, context_dim=64, version="3")
    v2 = A.init_adapter(layers_of(SMALL_BLOCK), seed=6, context_dim=64, version="2")
    for cond in (
        A.palette_condition(torch.tensor([[0.2, 0.7, 0.1]])).with_controls(entropy=3.0, distance=0.6),
        A.null_condition(1).with_controls(entropy=5.0),
    ):
        assert torch.allclose(v3.tokens(cond), v2.tokens(cond), atol=1e-5)
    w3, w2 = v3.scalar_proj.weight.detach(), v2.scalar_proj.weight.detach()
    assert torch.allclose(w3[:, [3, 5]] * 10.0, w2[:, [3, 5]])  # distance and entropy columns
    assert torch.equal(w3[:, [0, 1, 2, 4, 6]], w2[:, [0, 1, 2, 4, 6]])


def test_load_refuses_pickles_and_names_bad_shapes(tmp_path):
    pickle_file = tmp_path / "adapter.bin"
    pickle_file.write_bytes(b"\x80\x04not really")
    with pytest.raises(AdapterError, match=r"only \.safetensors"):
        A.load_adapter(pickle_file)
    path = A.save_adapter(small_adapter(), tmp_path / "a.safetensors")
    other_widths = AttentionLayers(
        tuple(AttentionLayer(n, None, 320) for n in layers_of(SMALL_BLOCK)), 64, "a test UNet"
    )
    with pytest.raises(AdapterError) as info:
        A.load_adapter(path, model_layers=other_widths)
    msg = str(info.value)
    assert msg.startswith("a.safetensors: adapter layer down_blocks.1.attentions.0.transformer_blocks.0.attn2")
    assert "has inner dim 640, a test UNet has 320" in msg and "'sdxl'" in msg
    with pytest.raises(AdapterError, match="tokens are 64-dim, SDXL's cross-attention reads 2048-dim"):
        A.load_adapter(path, model_layers=sdxl_layers())
    big = A.save_adapter(A.init_adapter(layers_of(SMALL_BLOCK), seed=1), tmp_path / "b.safetensors")
    with pytest.raises(AdapterError, match="does not exist in SDXL"):
        A.load_adapter(big, model_layers=sdxl_layers().select(["up_blocks.0.attentions.1"]))


def test_load_rejects_tampered_files(tmp_path):
    adapter = small_adapter()
    tensors = {k: v.contiguous() for k, v in adapter.file_tensors().items()}
    meta = A.read_adapter_metadata(A.save_adapter(adapter, tmp_path / "ok.safetensors"))
    cases = {
        "missing": ({k: v for k, v in tensors.items() if k != "scalar_proj.bias"}, meta, "scalar_proj.bias is missing"),
        "extra": ({**tensors, "junk": torch.zeros(1)}, meta, "unexpected tensor junk"),
        "format": (tensors, {**meta, "format": "ip-adapter"}, "metadata format"),
        "histogram": (tensors, {**meta, "histogram": "rgb-8x8x8"}, "histogram"),
        "shape": ({**tensors, "scalar_proj.weight": torch.zeros(64, 6)}, meta, r"scalar_proj.weight: shape \[64, 6\]"),
    }
    for name, (t, m, message) in cases.items():
        path = tmp_path / f"{name}.safetensors"
        save_file(t, path, metadata=m)
        with pytest.raises(AdapterError, match=message):
            A.load_adapter(path)
    (tmp_path / "garbage.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(AdapterError, match="not a readable"):
        A.load_adapter(tmp_path / "garbage.safetensors")


def test_select_layers():
    names = list(layers_of("up_blocks.0.attentions.1")) + list(layers_of("mid_block.attentions.0"))
    assert A.select_layers(names, None) == names
    assert A.select_layers(names, ["mid_block.attentions.0"]) == names[10:]
    with pytest.raises(AdapterError, match="block up_blocks.1.attentions.0 is not in this adapter file"):
        A.select_layers(names, ["up_blocks.1.attentions.0"])
    table = sdxl_layers()
    assert table.select(["mid_block.attentions.0"]).dims == {n: 1280 for n in names[10:]}
    assert table.select(None) == table and table.layer(names[0]).comfy_key == ("output", 1, 0)
    with pytest.raises(AdapterError, match=r"block down_blocks.0.attentions.0 is not in SDXL; it has \['down_blocks.1"):
        table.select(["down_blocks.0.attentions.0"])


def test_the_fit_check_names_the_first_misfit():
    table = sdxl_layers().select([SMALL_BLOCK])
    name = table[0].name
    table.check_fits(table.dims, 2048)
    with pytest.raises(AdapterError, match=f"adapter layer {name} has inner dim 320, SDXL has 640: .* base model 'x'"):
        table.check_fits({name: 320}, 2048, "x")
    with pytest.raises(AdapterError, match="mid_block.attentions.0.transformer_blocks.0.attn2 does not exist in SDXL"):
        table.check_fits({"mid_block.attentions.0.transformer_blocks.0.attn2": 1280}, 2048)
    with pytest.raises(AdapterError, match="tokens are 768-dim"):
        table.check_fits(table.dims, 768)


def test_untrained_sdxl_file_for_the_default_and_chosen_blocks(tmp_path):
    path = A.write_untrained_sdxl(tmp_path / "u.safetensors", blocks=["mid_block.attentions.0"], seed=5)
    meta = A.read_adapter_metadata(path)
    assert meta["trained_steps"] == "0" and "untrained" in meta["note"]
    loaded = A.load_adapter(path, model_layers=sdxl_layers())
    assert loaded.blocks == ["mid_block.attentions.0"] and len(loaded.layers) == 10
    with pytest.raises(AdapterError, match="block down_blocks.0.attentions.0 is not in SDXL"):
        A.write_untrained_sdxl(tmp_path / "x.safetensors", blocks=["down_blocks.0.attentions.0"])


@pytest.mark.parametrize(
    ("steps", "accepted"),
    [("0", 0), ("1200", 1200), ("12.5", None), ("-3", None), ("1e9", None), ("9" * 5000, None), ("abc", None)],
)
def test_trained_steps_metadata_must_be_a_step_count(tmp_path, steps, accepted):
    adapter = small_adapter()
    meta = A.read_adapter_metadata(A.save_adapter(adapter, tmp_path / "ok.safetensors"))
    path = tmp_path / "steps.safetensors"
    save_file(
        {k: v.contiguous() for k, v in adapter.file_tensors().items()}, path, metadata={**meta, "trained_steps": steps}
    )
    if accepted is None:
        with pytest.raises(AdapterError, match="steps.safetensors: metadata trained_steps .* is not a step count"):
            A.load_adapter(path)
    else:
        assert A.load_adapter(path).trained_steps == accepted


def test_a_zero_context_size_is_refused(tmp_path):
    adapter = small_adapter()
    meta = A.read_adapter_metadata(A.save_adapter(adapter, tmp_path / "ok.safetensors"))
    tensors = {k: torch.zeros(*(0 if d == 64 else d for d in v.shape)) for k, v in adapter.file_tensors().items()}
    save_file(tensors, tmp_path / "zero.safetensors", metadata=meta)
    with pytest.raises(AdapterError, match="zero.safetensors: scalar_proj.weight has context size 0"):
        A.load_adapter(tmp_path / "zero.safetensors")
