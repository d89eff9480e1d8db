"""Make the example workflows' thumbnails: example_workflows/<name>.jpg, 512 px wide JPEG under 150 KB.

    cd tests/browser && npm install && cd ../..
    COMFYUI_PATH=~/ComfyUI <ComfyUI's python> scripts/workflow_thumbnails.py [NAME ...]

Starts a real ComfyUI with the pack (tests/workflowhost.py: empty placeholder model files, the example
inputs) and loads every workflow into the real frontend in headless Chromium (tests/browser/workflow_shots.mjs).
* Workflows that need model weights: a screenshot of the graph's first group (the pack's nodes; the whole
  graph when there is no group), with the previews that need no weights (palette swatches, histogram bars)
  executed first so they show.
* Workflows that need none (recolor_image): the workflow's real output, run over the HTTP API: the input
  photo beside the result, over the palette's stripes.
colorize_with_palette keeps its own thumbnail (docs/recolor.md) unless named explicitly.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO)]

from workflowhost import api_copy, browser_unavailable, example_server, ui_workflows, workflow_shots  # noqa: E402

from palette_core.palette import Palette  # noqa: E402
from palette_core.render import palette_stripes  # noqa: E402

log = logging.getLogger("workflow_thumbnails")
WIDTH = 512
MAX_BYTES = 150_000
KEEP = {"colorize_with_palette"}  # thumbnails made elsewhere, regenerated only when named
RUN_OUTPUT = {"recolor_image"}  # thumbnails that show the workflow's real output


def save_jpeg(image: Image.Image, path: Path) -> int:
    """Save 512 px wide at the best JPEG quality that stays under 150 KB; return the size in bytes."""
    image = image.convert("RGB")
    if image.width != WIDTH:
        image = image.resize((WIDTH, round(image.height * WIDTH / image.width)), Image.LANCZOS)
    for quality in range(92, 40, -4):
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=quality, optimize=True, progressive=True)
        if buf.tell() < MAX_BYTES:
            path.write_bytes(buf.getvalue())
            return buf.tell()
    raise RuntimeError(f"{path.name}: no JPEG quality gets it under {MAX_BYTES} bytes")


def crop_to_graph(shot: Image.Image, margin: int = 24) -> Image.Image:
    """Crop a canvas screenshot to what differs from its (dotted) background, plus a margin."""
    rgb = np.asarray(shot.convert("RGB")).astype(np.int16)
    background = np.median(rgb.reshape(-1, 3), axis=0)
    ink = np.abs(rgb - background).max(axis=-1) > 40
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        raise RuntimeError("the screenshot is empty")
    top, bottom = max(rows[0] - margin, 0), min(rows[-1] + margin + 1, rgb.shape[0])
    left, right = max(cols[0] - margin, 0), min(cols[-1] + margin + 1, rgb.shape[1])
    return shot.crop((left, top, right, bottom))


def output_thumbnail(server, name: str) -> Image.Image:
    """Run a model-free workflow's API copy; the loaded photo beside the saved result, over the palette's stripes."""
    prompt = json.loads(api_copy(REPO / "example_workflows" / f"{name}.json").read_text())
    outputs = server.run(prompt)["outputs"]
    saved = next(out["images"][0] for nid, out in outputs.items() if prompt[nid]["class_type"] == "SaveImage")
    result = Image.open(io.BytesIO(server.image(saved))).convert("RGB")
    loaded = next(n for n in prompt.values() if n["class_type"] == "LoadImage")["inputs"]["image"]
    photo = Image.open(server.root / "input" / loaded).convert("RGB").resize(result.size)
    text = next(n for n in prompt.values() if n["class_type"] == "PaletteInput")["inputs"]["palette"]
    palette = Palette.parse(text)
    pair = Image.new("RGB", (result.width * 2, result.height))
    pair.paste(photo, (0, 0))
    pair.paste(result, (result.width, 0))
    band_h = max(pair.height // 12, 8)
    band = palette_stripes(palette.colors, palette.weights, height=band_h, width=pair.width)
    band_img = Image.fromarray((band.clamp(0, 1).numpy() * 255).round().astype(np.uint8))
    sheet = Image.new("RGB", (pair.width, pair.height + band_h))
    sheet.paste(pair, (0, 0))
    sheet.paste(band_img, (0, pair.height))
    return sheet


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="workflow names (default: all but colorize_with_palette)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not os.environ.get("COMFYUI_PATH"):
        parser.error("set COMFYUI_PATH to a ComfyUI checkout and run with ComfyUI's Python")
    reason = browser_unavailable()
    if reason:
        parser.error(reason)
    files = [p for p in ui_workflows() if (p.stem in args.names if args.names else p.stem not in KEEP)]
    unknown = set(args.names) - {p.stem for p in files}
    if unknown:
        parser.error(f"no such workflow: {', '.join(sorted(unknown))}")
    with tempfile.TemporaryDirectory(prefix="palette-thumbs-") as tmp, example_server(Path(tmp)) as server:
        report = workflow_shots(server.url, Path(tmp) / "shots", files)
        for path in files:
            entry = report[path.stem]
            if entry["missing"] or entry["errors"] or entry["runError"]:
                raise RuntimeError(f"{path.stem}: the frontend reported {entry}")
            if path.stem in RUN_OUTPUT:
                image = output_thumbnail(server, path.stem)
            else:
                image = Image.open(Path(tmp) / "shots" / f"{path.stem}.png")
                image = image if entry["group"] else crop_to_graph(image)
            size = save_jpeg(image, path.with_suffix(".jpg"))
            log.info("%s.jpg: %d bytes", path.stem, size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
