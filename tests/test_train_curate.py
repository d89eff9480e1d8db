"""Colour-balance curation (paper §3.5): rare-colour images get more sampling weight than common ones."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from palette_core.histogram import NUM_BINS, bin_index
from train.curate_dataset import balance_weights, bin_prior, common_bins, curate
from train.data import read_manifest

SKY, WHITE, GRASS, MAGENTA = (0.35, 0.6, 0.9), (0.97, 0.97, 0.97), (0.2, 0.6, 0.2), (0.85, 0.1, 0.75)


def _image(path, colours, size=48):
    """Horizontal bands of the given colours."""
    arr = np.zeros((size, size, 3), np.uint8)
    for i, c in enumerate(colours):
        arr[i * size // len(colours) : (i + 1) * size // len(colours)] = np.round(np.array(c) * 255)
    Image.fromarray(arr).save(path)


@pytest.fixture()
def crafted(tmp_path):
    rows = []
    for i in range(8):
        _image(tmp_path / f"common{i}.png", [SKY, WHITE, GRASS][: 2 + i % 2])
        rows.append({"image": f"common{i}.png", "caption": "a meadow"})
    _image(tmp_path / "rare.png", [SKY, MAGENTA])
    rows.append({"image": "rare.png", "caption": "a magenta flower in the sky"})
    (tmp_path / "broken.png").write_bytes(b"not an image")
    rows.append({"image": "broken.png", "caption": "broken"})
    manifest = tmp_path / "raw.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def test_rare_colour_image_gets_more_weight_and_rare_mass_rises(crafted, tmp_path):
    report = curate(read_manifest(crafted), tmp_path / "out", size=32, workers=0, common_mass=0.8)
    assert report["usable"] == 9 and report["skipped"] == 1 and report["skipped_files"][0].endswith("broken.png")
    rows = {r.image.name: r for r in read_manifest(tmp_path / "out" / "manifest.jsonl")}
    assert "broken.png" not in rows
    rare = rows["rare.png"].weight
    assert rare > 1.3 * max(rows[f"common{i}.png"].weight for i in range(8))
    assert rows["rare.png"].caption == "a magenta flower in the sky"
    assert report["after"]["rare_share"] > report["before"]["rare_share"]
    assert report["after"]["effective_bins"] > report["before"]["effective_bins"]
    weights = np.array([r.weight for r in rows.values()])
    assert abs(weights.mean() - 1.0) < 1e-4
    assert (tmp_path / "out" / "bin_mass.png").stat().st_size > 0
    assert "bins covered" in (tmp_path / "out" / "report.md").read_text()


def test_common_bins_hold_the_requested_mass_and_weights_follow_inverse_frequency():
    prior = torch.zeros(NUM_BINS)
    prior[:3] = torch.tensor([0.6, 0.3, 0.09])
    prior[3:13] = 0.001
    common = common_bins(prior, 0.85)
    assert set(common.tolist()) == {0, 1}  # 0.6 + 0.3 >= 0.85 while 0.6 alone is not
    hists = torch.zeros(3, NUM_BINS)
    hists[0, 0] = 1.0  # only the commonest colour
    hists[1, 0], hists[1, 5] = 0.5, 0.5  # half a rare colour
    hists[2, 5] = 1.0  # only a rare colour
    w = balance_weights(hists, prior, alpha=0.5, max_ratio=1000.0)
    assert w[0] < w[1] < w[2] and torch.isclose(w.mean(), torch.tensor(1.0))
    assert torch.allclose(balance_weights(hists, prior, alpha=0.0), torch.ones(3))
    after = bin_prior(hists, w)
    assert after[5] > bin_prior(hists)[5]


def test_image_histograms_match_palette_core(crafted, tmp_path):
    from train.curate_dataset import compute_histograms

    records = read_manifest(crafted)
    hists, ok = compute_histograms(records, size=32, batch=4, workers=0)
    assert ok.tolist() == [True] * 9 + [False]
    rare = records[8]
    sky, magenta = (int(bin_index(torch.tensor(c).mul(255).round() / 255)) for c in (SKY, MAGENTA))
    assert hists[8, sky] == pytest.approx(0.5, abs=0.05) and hists[8, magenta] == pytest.approx(0.5, abs=0.05)
    assert rare.image.name == "rare.png" and hists[9].sum() == 0
