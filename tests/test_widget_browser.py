"""The palette widget in a real browser: headless Chromium (playwright-core) on the real ComfyUI frontend.

Starts ComfyUI with the pack (tests/comfyserver.py, no checkpoint), runs
tests/browser/palette_widget.browser.mjs under ``node --test`` and then checks from Python what the server
ran: the history entry and the PNG that PreviewImage saved. Skipped unless COMFYUI_PATH is set, Node
and Chromium are present and ``npm install --prefix tests/browser`` has installed playwright-core.
``PALETTE_UPDATE_SCREENSHOTS=1`` writes the screenshots to docs/images/ (otherwise to a temp folder).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from comfyhost import requires_comfyui

REPO = Path(__file__).resolve().parents[1]
BROWSER_DIR = REPO / "tests" / "browser"
NODE = shutil.which("node")
CHROMIUM = os.environ.get("CHROMIUM") or os.environ.get("CHROMIUM_PATH") or "/usr/bin/chromium"
UPDATE_SCREENSHOTS = os.environ.get("PALETTE_UPDATE_SCREENSHOTS") == "1"
SCREENSHOTS = ("palette_widget.png", "palette_graph.png")
MAX_SCREENSHOT_BYTES = 300_000

pytestmark = [
    requires_comfyui,
    pytest.mark.comfyui,
    pytest.mark.skipif(NODE is None, reason="needs Node.js (node) on PATH"),
    pytest.mark.skipif(
        not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir(),
        reason="needs playwright-core: npm install --prefix tests/browser",
    ),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"needs Chromium at {CHROMIUM} (set CHROMIUM)"),
]


def stripe_colours(png: bytes) -> list[tuple[tuple[int, int, int], int]]:
    """The runs of equal colour along the middle row of a stripes image: [(rgb, width), ...]."""
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    row = [img.getpixel((x, img.height // 2)) for x in range(img.width)]
    runs: list[tuple[tuple[int, int, int], int]] = []
    for px in row:
        if runs and runs[-1][0] == px:
            runs[-1] = (px, runs[-1][1] + 1)
        else:
            runs.append((px, 1))
    return runs


def test_palette_widget_in_chromium(tmp_path):
    from comfyserver import ComfyServer

    root = tmp_path / "comfy"
    settings = root / "user" / "default" / "comfy.settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text(json.dumps({"Comfy.TutorialCompleted": True}))  # no first-run template browser
    shots = REPO / "docs" / "images" if UPDATE_SCREENSHOTS else tmp_path / "shots"
    shots.mkdir(parents=True, exist_ok=True)
    result_file = tmp_path / "result.json"

    with ComfyServer(root) as server:
        env = dict(
            os.environ,
            COMFY_URL=server.url,
            CHROMIUM=CHROMIUM,
            SCREENSHOT_DIR=str(shots),
            RESULT_FILE=str(result_file),
        )
        run = subprocess.run(
            [NODE, "--test", "--test-reporter=spec", "palette_widget.browser.mjs"],
            cwd=BROWSER_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-3000:]

        result = json.loads(result_file.read_text())
        entry = server.get(f"/history/{result['prompt_id']}")[result["prompt_id"]]
        assert entry["status"]["status_str"] == "success"
        runs = stripe_colours(server.image(result["image"]))

    # The PNG that PreviewImage saved shows the palette the widget produced, widths following the weights.
    assert result["text"] == "#e63946:2, #f1faee, #a8dadc, #457b9d, #1d3557"
    wide = [(rgb, width) for rgb, width in runs if width > 4]  # ignore anti-aliased seams, if any
    assert ["#{:02x}{:02x}{:02x}".format(*rgb) for rgb, _ in wide] == [
        "#e63946",
        "#f1faee",
        "#a8dadc",
        "#457b9d",
        "#1d3557",
    ]
    widths = [w for _, w in wide]
    assert sum(widths) >= 508
    assert widths[0] == pytest.approx(2 * widths[1], abs=2)

    for name in SCREENSHOTS:
        data = (shots / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name
        assert len(data) < MAX_SCREENSHOT_BYTES, f"{name}: {len(data)} bytes"
