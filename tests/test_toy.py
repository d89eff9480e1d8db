"""The toy proof's driver (train/toy/run_toy.py) end to end at a size CI can afford: every phase, the report, resume.

The figures of a tiny run mean nothing; what is checked is that the phases chain, the report holds every
claim with consistent ratios, and a rerun reuses the finished phases and reproduces the evaluation.
"""

from __future__ import annotations

import json
import math

import colour
import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("accelerate")

from train.toy import run_toy  # noqa: E402

ARGS = ["--smoke", "--device", "cpu"]


def test_training_palettes_are_the_palettes_the_images_were_drawn_in(tmp_path):
    from train.data import ManifestError
    from train.toy.shapes import write_dataset

    manifest = write_dataset(tmp_path, 6, 8, seed=1, broken=2)
    with pytest.raises(ManifestError, match="8 rows but 6 usable images; curate it first"):
        run_toy.training_palettes(manifest, 8)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()][:6]
    (tmp_path / "good.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    images, palettes = run_toy.training_palettes(tmp_path / "good.jsonl", 8)
    assert images.shape == (6, 3, 8, 8) and len(palettes) == 6
    for image, palette, row in zip(images, palettes, rows):
        assert torch.allclose(palette.colors, torch.tensor(row["palette"]), atol=1e-6)
        if row["color_caption"].endswith("flat"):  # the corner is the background: the palette's first colour
            assert torch.allclose(image[:, 0, 0], palette.colors[0], atol=1 / 255)


def test_toy_run_chains_its_phases_reports_every_claim_and_resumes(tmp_path):
    out = tmp_path / "toy"
    assert run_toy.main(["--out", str(out), *ARGS]) == 0
    result = json.loads((out / "results.json").read_text())
    e = result["eval"]
    assert e["palettes"] == 2 and e["images_per_setting"] == 2 and set(e["by_cfg"]) == {"cfg1", "cfg3"}
    assert result["device"] == "cpu" and result["preset"] == "cpu" and result["base_steps"] == 3
    for key in ("emd_without_adapter", "emd_seen_without_adapter"):
        assert math.isfinite(e[key]) and 0.0 <= e[key] <= 2.0, key
    for tag, c in e["by_cfg"].items():
        for key in ("emd_with_adapter", "emd_base_colour_captions", "emd_seen_with_adapter"):
            assert math.isfinite(c[key]) and 0.0 <= c[key] <= 2.0, (tag, key)
        for key in [k for k in c if k.startswith(("entropy_", "base_entropy_"))]:
            assert 0.0 <= c[key] <= 6.0, (tag, key)  # 8 x 8 pixels: at most 6 bits
        for key in [k for k in c if "far_share" in k]:
            assert 0.0 <= c[key] <= 1.0, (tag, key)
        att = c["scalar_token_attention"]  # one share per adapter layer (version 4: of the output's norm)
        assert len(att) == 11 and all(0.0 < w < 1.0 for w in att.values()), tag
    # relative controls differ from absolute ones only through the uncond branch: measured with guidance only
    assert "entropy_relative_low" not in e["by_cfg"]["cfg1"] and "far_share_relative_high" in e["by_cfg"]["cfg3"]
    assert "negative_near_share_with" in e["by_cfg"]["cfg3"] and "negative_near_share_with" not in e["by_cfg"]["cfg1"]
    assert e["emd_data_in_palette"] < e["emd_data_other_palettes"]
    assert e["entropy_textured"] > e["entropy_flat"] + 2.0  # the data's range, which the controls should span
    lo, mid, hi = e["training_scalars"]["entropy"]
    assert lo <= mid <= hi and lo <= e["training_scalars"]["entropy_mean"] <= hi
    assert result["adapter_steps"] == 2 and (out / "adapter" / "palette_adapter.safetensors").is_file()
    assert list(result["adapter_loss"]) == ["steps 1-2"]  # the loss windows the run reached
    report = (out / "results.md").read_text()
    rows = run_toy.targets(e)
    assert len(rows) == 2 * 2 + 1 + 2 + 1 + 2 + 1  # EMD x 2 per CFG, entropy and distance per mode, negative
    for row in rows:
        assert f"| {row['claim']} | {row['measured']} |" in report
    assert result["adapter_version"] == "4" and "the scalar token's share (of the output's norm" in report
    assert "the best reachable" in report and "What the EMD is made of" in report and "'flat' / 'textured'" in report
    for name, b in {"base": e["colour_breakdown_base"], "data": e["colour_breakdown_data"]}.items():
        assert 0.0 <= b["colours_not_drawn"] <= 1.0 and 0.0 <= b["area_gap"] <= 1.0, name
        assert 0.0 <= b["pixel_distance"] <= 3**0.5, name
    for name in ("base", "adapter_cfg3", "negative_cfg3", "seen_palettes_cfg1", "entropy_relative_high_cfg3"):
        assert (out / f"eval_{name}.png").is_file(), name

    base_mtime = (out / "base" / "config.json").stat().st_mtime_ns
    assert run_toy.main(["--out", str(out), *ARGS]) == 0
    again = json.loads((out / "results.json").read_text())
    assert (out / "base" / "config.json").stat().st_mtime_ns == base_mtime  # the base was reused
    assert again["eval"] == e  # same models, same seeds: the same figures


def test_the_adapter_seed_schedule_and_version_reach_the_trainer(tmp_path, monkeypatch):
    seen = []

    class Stop(Exception):
        pass

    def trainer(config, parts):
        seen.append((config.seed, config.lr_schedule, config.adapter_version))
        raise Stop

    monkeypatch.setattr(run_toy, "Trainer", trainer)
    flags = ["--adapter-seed", "3", "--adapter-lr-schedule", "cosine", "--adapter-version", "3"]
    for argv in ([], flags):
        with pytest.raises(Stop):
            run_toy.main(["--out", str(tmp_path / "toy"), *ARGS, *argv])
    assert seen == [(0, "constant", None), (3, "cosine", "3")]


def test_gpu_preset_resolves_its_sizes_and_flags_override_them():
    args = run_toy.parse_args(["--device", "cpu", "--preset", "gpu", "--base-steps", "7"])
    assert args.base_steps == 7 and args.base_batch == run_toy.PRESETS["gpu"]["base_batch"]
    assert run_toy.parse_args(["--device", "cpu"]).base_steps == run_toy.PRESETS["cpu"]["base_steps"]
    smoke = run_toy.parse_args(["--device", "cpu", "--preset", "gpu", "--smoke"])
    assert (smoke.preset, smoke.base_steps, smoke.eval_seeds) == ("gpu", 3, 1)


def test_loss_path_averages_the_windows_that_tell_a_fast_run_from_a_slow_one(tmp_path):
    log = tmp_path / "train_log.csv"
    rows = ["step,loss,lr,grad_norm,skipped_images,images_per_s"]
    rows += [f"{k},{0.2 if k <= 100 else 0.1 if k <= 300 else 0.05},1e-3,1.0,0,10.0" for k in range(1, 351)]
    log.write_text("\n".join(rows) + "\n")
    path = run_toy.loss_path(log)
    assert path == {
        "steps 1-100": pytest.approx(0.2),
        "steps 201-300": pytest.approx(0.1),
        "steps 251-350": pytest.approx(0.075),
    }
    log.write_text("\n".join(rows[:151]) + "\n")  # stopped at step 150: no 201-300 window
    assert run_toy.loss_path(log) == {"steps 1-100": pytest.approx(0.2), "steps 51-150": pytest.approx(0.15)}


def test_targets_mark_each_claim_against_its_threshold():
    c = {
        "emd_with_adapter": 0.20, "emd_base_colour_captions": 0.19,
        "entropy_absolute_low": 1.5, "entropy_absolute_high": 2.4,
        "far_share_absolute_low": 0.10, "far_share_absolute_high": 0.21,
        "base_entropy_flat": 1.2, "base_entropy_textured": 4.5, "base_far_share_flat": 0.05,
        "base_far_share_textured": 0.6, "negative_near_share_without": 0.09, "negative_near_share_with": 0.05,
    }  # fmt: skip
    e = {"emd_without_adapter": 0.30, "emd_data_in_palette": 0.1, "emd_data_other_palettes": 0.4,
         "entropy_flat": 1.0, "entropy_textured": 4.8, "far_share_flat": 0.0, "far_share_textured": 0.7,
         "by_cfg": {"cfg3": c}}  # fmt: skip
    met = {row["claim"].split(",")[0]: row["met"] for row in run_toy.targets(e)}
    assert met == {
        "palette EMD with the adapter <= 1.1 x the base told the exact colours": True,  # 0.20 <= 0.209
        "palette EMD with the adapter <= 0.75 x without it": True,  # 0.20 <= 0.225
        "output entropy": False,  # +0.9 bits < 1
        "share of pixels > ΔE 10 from every palette colour": True,  # 0.21 >= 2 x 0.10
        "negative palette: >= 2 x fewer pixels within 0.2 (RGB) of the negative colour": False,  # 2 x 0.05 > 0.09
    }


def test_far_share_counts_pixels_beyond_delta_e_10_of_every_palette_colour():
    from palette_core.palette import Palette

    palette = Palette.from_colors(torch.tensor([[0.5, 0.5, 0.5], [1.0, 0.0, 0.0]]))
    img = torch.empty(4, 4, 3)
    img[:] = torch.tensor([0.5, 0.5, 0.5])
    img[0, :2] = torch.tensor([0.52, 0.5, 0.5])  # ΔE about 3 from the grey: near
    img[1] = torch.tensor([0.0, 0.0, 1.0])  # blue: far from both
    assert run_toy.far_share(img[None], [palette], 1) == pytest.approx(4 / 16)
    # the mean distance: 10 exact pixels (0), 2 pixels ΔE ~3 from grey, 4 blue pixels at their nearest colour
    lab = colour.XYZ_to_Lab(colour.sRGB_to_XYZ(np.array([[0.52, 0.5, 0.5], [0.5, 0.5, 0.5], [0, 0, 1.0], [1.0, 0, 0]])))
    blue = min(np.linalg.norm(lab[2] - lab[1]), np.linalg.norm(lab[2] - lab[3]))
    expected = (2 * np.linalg.norm(lab[0] - lab[1]) + 4 * blue) / 16
    assert run_toy.mean_delta_e(img[None], [palette], 1) == pytest.approx(expected, rel=2e-3)


def test_reference_emd_separates_images_drawn_in_the_palette_from_images_in_other_palettes():
    ref = run_toy.reference_emd(run_toy.held_out_palettes(4), per=4)
    # half of the images are shaded away from their palette colours: about x 0.5 (x 0.34 with the old data)
    assert 0.0 < ref["emd_data_in_palette"] < 0.6 * ref["emd_data_other_palettes"]
    assert ref == run_toy.reference_emd(run_toy.held_out_palettes(4), per=4)  # seeded


def test_colour_breakdown_separates_missing_colours_imprecise_colours_and_wrong_areas():
    from palette_core.palette import Palette

    colours = torch.tensor([[0.2, 0.2, 0.2], [0.8, 0.2, 0.2], [0.2, 0.8, 0.2], [0.2, 0.2, 0.8]])
    palette = Palette.from_colors(colours)  # equal weights
    quadrants = torch.empty(16, 16, 3)
    for k, (r, c) in enumerate(((0, 0), (0, 8), (8, 0), (8, 8))):
        quadrants[r : r + 8, c : c + 8] = colours[k]
    exact = run_toy.colour_breakdown(quadrants[None], [palette], 1)
    assert exact == pytest.approx({"colours_not_drawn": 0.0, "pixel_distance": 0.0, "area_gap": 0.0}, abs=1e-6)

    three = quadrants.clone()
    three[8:, 8:] = colours[1]  # the blue quadrant drawn red: blue missing, red over its share
    shifted = quadrants + torch.tensor([0.1, 0.0, 0.0])  # every colour 0.1 off, all still within DRAWN
    both = run_toy.colour_breakdown(torch.stack([three, shifted]), [palette], 2)
    assert both["colours_not_drawn"] == pytest.approx((0.25 + 0.0) / 2)
    assert both["pixel_distance"] == pytest.approx((0.0 + 0.1) / 2, abs=1e-6)
    assert both["area_gap"] == pytest.approx((0.25 + 0.0) / 2)


def test_texture_word_replaces_the_last_word_of_a_colour_caption():
    import numpy as np

    from train.toy.shapes import draw

    caption = draw(np.array([[0.1, 0.2, 0.3], [0.9, 0.5, 0.1], [0.4, 0.4, 0.9]]), np.random.default_rng(0), 16)[2]
    assert caption.split()[-1] in ("flat", "textured")
    flat = run_toy.with_texture_word(caption, "flat")
    assert flat.split()[:-1] == caption.split()[:-1] and flat.split()[-1] == "flat"


@pytest.mark.parametrize("size", [8, 16])
def test_toy_data_spans_flat_and_textured_entropies_and_shows_every_palette_colour(size):
    import numpy as np

    from palette_core.histogram import entropy, image_histogram
    from train.toy.shapes import draw, random_palette

    rng = np.random.default_rng(3)
    flat, textured = [], []
    for _ in range(40):
        palette = random_palette(rng)
        image, caption, colour_caption, areas = draw(palette, rng, size, textured=False)
        pixels = torch.from_numpy(image).reshape(-1, 3).float() / 255.0
        nearest = torch.cdist(pixels, torch.from_numpy(palette).float()).min(0).values
        assert float(nearest.max()) < 0.01  # a flat image holds every palette colour exactly
        exact = (palette * 255.0).round().astype(np.uint8)
        shares = [(image == c).all(-1).mean() for c in exact]  # what each colour fills, as the weights say
        assert np.allclose(areas, shares) and areas[0] > 0.5 and math.isclose(areas.sum(), 1.0)
        assert colour_caption.endswith(f"{caption} flat") and caption.split()[0] == "two"
        flat.append(image)
        textured.append(draw(palette, rng, size, textured=True)[0])
    bits = [
        float(entropy(image_histogram(torch.from_numpy(np.stack(x)).float() / 255.0)).mean()) for x in (flat, textured)
    ]
    assert bits[0] < 1.6 and bits[1] > bits[0] + 3.0, bits  # >= 1 bit to show, with room for the base's noise


def test_the_adapter_is_conditioned_on_the_palette_alone_and_the_settings_on_what_it_saw():
    """The toy's adapter sees the palette an image was drawn in, the same for a flat and a shaded image
    (never a histogram or a median cut, which carry the shading themselves), so only the scalars tell the
    two apart; the evaluation's settings are quantiles of the same scalars."""
    from palette_core.adapter import KIND_HISTOGRAM, KIND_PALETTE
    from palette_core.palette import Palette
    from train.recipe import draw_conditions
    from train.toy.shapes import draw, random_palette

    rng = np.random.default_rng(3)
    palettes = [Palette.from_colors(random_palette(rng, 3)) for _ in range(8)]
    images = torch.stack(
        [
            torch.from_numpy(draw(p.colors_array.astype(np.float64), rng, 8, textured)[0]).float() / 255
            for p in palettes
            for textured in (False, True)
        ]
    )
    pairs = [p for p in palettes for _ in range(2)]
    drawn = draw_conditions(images, run_toy.ADAPTER_RECIPE, torch.Generator().manual_seed(0), pairs)
    kinds = drawn.kind_drawn.tolist()
    assert KIND_HISTOGRAM not in kinds and kinds.count(KIND_PALETTE) >= 12
    for k in range(16):
        if kinds[k] == KIND_PALETTE and drawn.condition.kind[k] == KIND_PALETTE:
            assert torch.equal(drawn.condition.histogram[k], pairs[k].histogram().float())
    shaded = run_toy.training_scalars(images[1::2].permute(0, 3, 1, 2), palettes)
    flat = run_toy.training_scalars(images[::2].permute(0, 3, 1, 2), palettes)
    assert shaded["entropy"][0] > flat["entropy"][2] and shaded["distance"][0] > flat["distance"][2]
    # relative mode's reference: 5 shaded and 3 flat images put the median inside the shaded mode, the mean
    # between the two modes (where a relative setting can move the output both ways)
    mixed_images = torch.cat([images[1:10:2], images[0:6:2]]).permute(0, 3, 1, 2)
    mixed = run_toy.training_scalars(mixed_images, palettes[:5] + palettes[:3])
    five_shaded = run_toy.training_scalars(mixed_images[:5], palettes[:5])
    three_flat = run_toy.training_scalars(mixed_images[5:], palettes[:3])
    for name in ("entropy", "distance"):
        median = mixed[name][1]
        assert abs(median - shaded[name][1]) < abs(median - flat[name][1]), name
        assert flat[name][2] < mixed[f"{name}_mean"] < shaded[name][0], name
        parts = 5 * five_shaded[f"{name}_mean"] + 3 * three_flat[f"{name}_mean"]
        assert mixed[f"{name}_mean"] == pytest.approx(parts / 8, rel=1e-5), name


def test_area_weighted_palettes_keep_the_images_and_tell_each_colour_s_area(tmp_path):
    """``--palette-weights area`` (an ablation, docs/training.md "What limits the colours"): the same images,
    each row's palette weighted by the area its colours fill; held-out palettes weighted by the scenes the
    base's colour captions describe; a data folder of the other kind is refused, not mixed."""
    from train.data import manifest_palettes, read_manifest
    from train.toy.shapes import write_dataset

    equal = write_dataset(tmp_path / "equal", 6, 8, seed=1)
    area = write_dataset(tmp_path / "area", 6, 8, seed=1, palette_weights="area")
    assert run_toy.manifest_palette_weights(equal) == "equal" and run_toy.manifest_palette_weights(area) == "area"
    for a, b in zip(
        sorted((tmp_path / "equal" / "images").iterdir()), sorted((tmp_path / "area" / "images").iterdir())
    ):
        assert a.read_bytes() == b.read_bytes()
    plain, weighted = (manifest_palettes(read_manifest(m)) for m in (equal, area))
    for p, w in zip(plain, weighted):
        assert torch.allclose(p.colors, w.colors, atol=0.5 / 255 + 1e-4)  # hex: 8-bit colours
        assert torch.allclose(w.weights, torch.tensor([0.75, 0.125, 0.125]))  # an 8 px scene: 48 / 8 / 8 pixels
        assert torch.allclose(p.weights, torch.full((3,), 1 / 3))
    with pytest.raises(ValueError, match="palette_weights 'size'"):
        write_dataset(tmp_path / "bad", 2, 8, palette_weights="size")

    held = run_toy.held_out_palettes(4)
    by_area = run_toy.weighted_by_area(held)
    assert run_toy.colour_captions(by_area) == run_toy.colour_captions(held)
    assert all(torch.equal(a.colors, b.colors) for a, b in zip(held, by_area))
    assert all(torch.allclose(b.weights, torch.tensor([0.75, 0.125, 0.125])) for b in by_area)
    # the data drawn in its palette matches a palette weighted by area better than one of equal weights
    assert run_toy.reference_emd(by_area)["emd_data_in_palette"] < run_toy.reference_emd(held)["emd_data_in_palette"]

    out = tmp_path / "run"
    write_dataset(out / "data", 4, 8, seed=0)
    with pytest.raises(SystemExit, match="holds palettes in equal weights, this run asks for --palette-weights area"):
        run_toy.main(["--out", str(out), *ARGS, "--palette-weights", "area"])


def test_an_area_weighted_toy_run_reports_its_weights(tmp_path):
    out = tmp_path / "toy"
    assert run_toy.main(["--out", str(out), *ARGS, "--palette-weights", "area"]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["settings"]["palette_weights"] == "area"
    assert "weighted by the area each colour fills" in (out / "results.md").read_text()
    assert run_toy.manifest_palette_weights(out / "curated" / "manifest.jsonl") == "area"
    e = result["eval"]
    assert e["emd_data_in_palette"] < 0.4 * e["emd_data_other_palettes"]  # equal weights: x 0.53 here
