"""The toy proof's driver (train/toy/run_toy.py) end to end at a size CI can afford: every phase, the report, resume.

The figures of a tiny run mean nothing; what is checked is that the phases chain, the report holds every
claim with consistent ratios, and a rerun reuses the finished phases and reproduces the evaluation.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("accelerate")

from train.toy import run_toy  # noqa: E402

ARGS = [
    "--train-images", "12", "--base-steps", "3", "--base-batch", "4", "--base-channels", "32",
    "--adapter-steps", "2", "--adapter-batch", "4", "--eval-palettes", "2", "--eval-seeds", "1",
    "--validate-every", "0",
]  # fmt: skip


def test_seen_palettes_are_uniform_median_cuts_of_the_training_images():
    images = torch.zeros(2, 3, 16, 16)
    images[0, 0] = 1.0  # red
    images[1, :, :8] = 1.0  # top half white, bottom half black
    red, white_black = run_toy.seen_palettes(images, 5)
    assert torch.allclose(red.colors[0].float(), torch.tensor([1.0, 0.0, 0.0]), atol=1e-3)
    found = {tuple(round(float(v)) for v in c) for c in white_black.colors}
    assert found == {(0, 0, 0), (1, 1, 1)}
    assert torch.allclose(
        white_black.weights.float(), torch.full((len(white_black.colors),), 1 / len(white_black.colors))
    )


def test_toy_run_chains_its_phases_reports_every_claim_and_resumes(tmp_path):
    out = tmp_path / "toy"
    assert run_toy.main(["--out", str(out), *ARGS]) == 0
    result = json.loads((out / "results.json").read_text())
    e = result["eval"]
    assert e["palettes"] == 2 and e["images_per_setting"] == 2
    keys = ("emd_without_adapter", "emd_with_adapter", "emd_seen_without_adapter", "emd_seen_with_adapter")
    for key in (*keys, "emd_base_colour_captions", "emd_base_colour_captions_cfg1"):
        assert math.isfinite(e[key]) and 0.0 <= e[key] <= 2.0, key
    assert e["emd_ratio"] == pytest.approx(e["emd_with_adapter"] / e["emd_without_adapter"])
    assert 0.0 <= e["negative_near_share_with"] <= 1.0
    assert e["emd_data_in_palette"] < e["emd_data_other_palettes"]
    assert result["adapter_steps"] == 2 and (out / "adapter" / "palette_adapter.safetensors").is_file()
    report = (out / "results.md").read_text()
    assert "negative colour" in report and "median-cut palettes" in report and "the best reachable" in report
    assert "exact colours as caption words" in report
    assert "What the EMD is made of" in report and "'textured' vs 'flat'" in report
    for name, b in {**e["colour_breakdown"], "data": e["colour_breakdown_data"]}.items():
        assert 0.0 <= b["colours_not_drawn"] <= 1.0 and 0.0 <= b["area_gap"] <= 1.0, name
        assert 0.0 <= b["pixel_distance"] <= 3**0.5, name
    assert set(e["base_entropy_bits_by_texture_word"]) == {"flat", "textured"}
    for name in ("base", "adapter", "negative", "seen_palettes", "entropy_low", "entropy_high"):
        assert (out / f"eval_{name}.png").is_file(), name

    base_mtime = (out / "base" / "config.json").stat().st_mtime_ns
    assert run_toy.main(["--out", str(out), *ARGS]) == 0
    again = json.loads((out / "results.json").read_text())
    assert (out / "base" / "config.json").stat().st_mtime_ns == base_mtime  # the base was reused
    assert again["eval"] == e  # same models, same seeds: the same figures


def test_reference_emd_separates_images_drawn_in_the_palette_from_images_in_other_palettes():
    ref = run_toy.reference_emd(run_toy.held_out_palettes(4), per=4)
    assert 0.0 < ref["emd_data_in_palette"] < 0.5 * ref["emd_data_other_palettes"]
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
