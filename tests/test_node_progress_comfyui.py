"""Previews on the nodes, the progress bar and Cancel, inside a real ComfyUI (skipped without COMFYUI_PATH).

In-process: the ``ui`` previews of Palette, Palette From Image, Palette Preview, Histogram Preview and Colour
Histogram From Image are the node's own image, saved in ComfyUI's temp folder; Palette Recolor and Luminance
Lock move ComfyUI's progress bar and stop at the first check after Cancel; exact Palette Guidance stops
between its VAE-decoded guidance steps. Through a real server: the previews are listed in /history and
served by /view, and POST /interrupt during a 16-image Palette Recolor ends the prompt with
``execution_interrupted`` at most one image after the interrupt was sent.
"""

from __future__ import annotations

import io
import json
import time
import urllib.request
import uuid

import numpy as np
import pytest
import torch
from comfyhost import load_comfyui, requires_comfyui, run_node, tiny_sdxl
from PIL import Image

pytestmark = [requires_comfyui, pytest.mark.comfyui]

PALETTE = "#264653, #2a9d8f, #e9c46a:2, #f4a261, #e76f51"
BATCH = 16  # images in the cancelled recolour: 16 x ~0.2 s uninterrupted


@pytest.fixture(scope="module")
def host():
    return load_comfyui()


@pytest.fixture()
def temp_dir(tmp_path, monkeypatch):
    """ComfyUI's temp folder (where node previews are saved) moved into the test's own folder."""
    import folder_paths

    monkeypatch.setattr(folder_paths, "temp_directory", str(tmp_path))
    return tmp_path


def smooth_images(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Smooth random colour fields ``[B, H, W, 3]``: many distinct colours, like photos."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, 6, 5, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear").permute(0, 2, 3, 1)


def saved_pixels(image: torch.Tensor) -> np.ndarray:
    """An IMAGE ``[H, W, 3]`` as ComfyUI writes it to PNG (x 255, clipped, truncated to 8 bits)."""
    return np.clip(255.0 * image.numpy(), 0, 255).astype(np.uint8)


def ui_of(out) -> dict:
    """A node's ``ui`` as the executor sends it (a dict, or a UI object's ``as_dict()``)."""
    return out.ui if isinstance(out.ui, dict) else out.ui.as_dict()


def shown(folder, out) -> list[np.ndarray]:
    """The pixels of the images a node's ``ui`` lists, read back from the temp folder."""
    saved = ui_of(out)["images"]
    return [np.asarray(Image.open(folder / s["subfolder"] / s["filename"]).convert("RGB")) for s in saved]


class Progress:
    """ComfyUI's global progress-bar hook, recording every update; it presses Cancel on update ``cancel_at``."""

    def __init__(self, cancel_at: int | None = None) -> None:
        self.updates: list[tuple[float, float]] = []
        self.cancel_at = cancel_at

    def __call__(self, value, total, preview, prompt_id=None, node_id=None) -> None:
        import comfy.model_management

        self.updates.append((value, total))
        if len(self.updates) == self.cancel_at:
            comfy.model_management.interrupt_current_processing(True)


@pytest.fixture()
def progress_hook(host):
    """Installs a fresh :class:`Progress` as ComfyUI's progress hook; restores the old one and the Cancel flag."""
    import comfy.model_management
    import comfy.utils

    old = comfy.utils.PROGRESS_BAR_HOOK

    def install(cancel_at: int | None = None) -> Progress:
        recorder = Progress(cancel_at)
        comfy.utils.set_progress_bar_global_hook(recorder)
        return recorder

    yield install
    comfy.utils.set_progress_bar_global_hook(old)
    comfy.model_management.interrupt_current_processing(False)


def test_preview_nodes_are_output_nodes_and_keep_their_image_outputs(host):
    classes = host.classes
    assert classes["PalettePreview"].OUTPUT_NODE is True and classes["HistogramPreview"].OUTPUT_NODE is True
    # The palette sources run when something uses their palette; a dangling one does not block a prompt.
    assert not getattr(classes["PaletteInput"], "OUTPUT_NODE", False)
    assert not getattr(classes["PaletteFromImage"], "OUTPUT_NODE", False)
    assert list(classes["PaletteInput"].RETURN_TYPES) == ["PALETTE", "IMAGE"]
    assert list(classes["PaletteFromImage"].RETURN_TYPES) == ["PALETTE", "IMAGE"]
    assert list(classes["PalettePreview"].RETURN_TYPES) == ["IMAGE"]
    assert list(classes["HistogramPreview"].RETURN_TYPES) == ["IMAGE"]
    assert list(classes["HistogramFromImage"].RETURN_TYPES) == ["COLOR_CONDITION", "FLOAT"]


def test_each_node_shows_its_own_image_from_the_temp_folder(host, temp_dir):
    classes = host.classes
    out = classes["PaletteInput"].execute(palette=PALETTE)
    palette, stripes = out.args
    assert [s["type"] for s in ui_of(out)["images"]] == ["temp"]
    (pixels,) = shown(temp_dir, out)
    assert np.array_equal(pixels, saved_pixels(stripes[0]))
    # Stripe widths follow the weights: the heavy third colour takes 2/6 of the 512 columns.
    assert pixels[32, 0].tolist() == [0x26, 0x46, 0x53] and pixels[32, 200].tolist() == [0xE9, 0xC4, 0x6A]

    out = classes["PalettePreview"].execute(palette=palette)
    (image,) = out.args
    assert torch.equal(image, stripes) and np.array_equal(shown(temp_dir, out)[0], pixels)

    photo = smooth_images(2, 48, 40)
    out = classes["PaletteFromImage"].execute(image=photo, size=4, method="kmeans")
    extracted, stripes = out.args
    assert len(extracted.colors) == 4 and np.array_equal(shown(temp_dir, out)[0], saved_pixels(stripes[0]))

    out = classes["HistogramPreview"].execute(image=photo, bins=8)
    (bars,) = out.args
    previews = shown(temp_dir, out)
    assert len(previews) == 2 and all(np.array_equal(p, saved_pixels(b)) for p, b in zip(previews, bars))
    assert not np.array_equal(previews[0], previews[1])  # one preview per image of the batch

    out = classes["HistogramFromImage"].execute(image=photo)
    condition, entropy = out.args
    previews = shown(temp_dir, out)
    assert len(previews) == 2 and previews[0].shape == (64, 512, 3) and entropy > 0
    # The same histogram as Histogram Preview shows with its default 32 bins.
    (bars32,) = classes["HistogramPreview"].execute(image=photo, bins=32).args
    assert np.array_equal(previews[1], saved_pixels(bars32[1]))
    names = {p.name for p in temp_dir.rglob("*.png")}
    assert len(names) == 1 + 1 + 1 + 2 + 2 + 2  # every preview its own file


def test_recolor_and_lock_move_the_progress_bar_for_every_image(host, progress_hook):
    (palette, _) = run_node("PaletteInput", palette=PALETTE)
    photos = smooth_images(3, 40, 32)
    seen = progress_hook()
    (out,) = run_node(
        "PaletteRecolor",
        image=photos,
        palette=palette,
        strength=1.0,
        matching="optimal transport",
        keep_neutrals=False,
        source_colors=0,
    )
    assert seen.updates == [(1, 3), (2, 3), (3, 3)] and out.shape == photos.shape
    seen = progress_hook()
    (locked,) = run_node("LuminanceLock", image=photos[:1], lightness_source=photos)
    assert seen.updates == [(1, 3), (2, 3), (3, 3)] and locked.shape == photos.shape


@pytest.mark.parametrize("node", ["PaletteRecolor", "LuminanceLock"])
def test_cancel_stops_the_node_at_the_next_image(host, progress_hook, node):
    import comfy.model_management

    (palette, _) = run_node("PaletteInput", palette=PALETTE)
    photos = smooth_images(6, 40, 32)
    inputs = {
        "PaletteRecolor": dict(
            image=photos,
            palette=palette,
            strength=1.0,
            matching="optimal transport",
            keep_neutrals=False,
            source_colors=0,
        ),
        "LuminanceLock": dict(image=photos.flip(0), lightness_source=photos),
    }[node]
    seen = progress_hook(cancel_at=2)  # Cancel pressed while the bar shows image 2 of 6
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        run_node(node, **inputs)
    assert seen.updates == [(1, 6), (2, 6)]  # image 3 was finished, found the Cancel and never reported
    assert not comfy.model_management.processing_interrupted()  # the flag is consumed, as ComfyUI's own nodes do


def test_exact_guidance_stops_between_its_guidance_steps(host, progress_hook):
    import comfy.model_management
    from comfyhost import sample
    from test_training_free_comfyui import tiny_vae

    with torch.inference_mode():
        model = tiny_sdxl(seed=0)
    vae = tiny_vae()
    (palette, _) = run_node("PaletteInput", palette=PALETTE)
    (guided,) = run_node(
        "PaletteGuidance",
        model=model,
        palette=palette,
        strength=1.0,
        steps_per_sample=4,
        start_percent=0.0,
        end_percent=1.0,
        decoder="exact",
        vae=vae,
    )
    decodes = []

    def cancel_on_second(module, args, output):
        decodes.append(1)
        if len(decodes) == 2:  # Cancel pressed during the second guidance step's VAE decode
            comfy.model_management.interrupt_current_processing(True)

    hook = vae.first_stage_model.decoder.register_forward_hook(cancel_on_second)
    try:
        with torch.inference_mode(), pytest.raises(comfy.model_management.InterruptProcessingException):
            sample(guided, size=64, steps=2, cfg=1.0)
    finally:
        hook.remove()
    # Uncancelled, two sampling steps would decode 2 x (4 steps + 1 check) = 10 times.
    assert len(decodes) == 2


# --- through a real server -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from comfyserver import ComfyServer

    root = tmp_path_factory.mktemp("comfy")
    with ComfyServer(root) as s:
        pixels = saved_pixels(smooth_images(1, 512, 512, seed=3)[0])
        Image.fromarray(pixels).save(root / "input" / "fields.png")
        yield s


def test_previews_are_in_the_history_and_served(server):
    prompt = {
        "1": {"class_type": "PaletteInput", "inputs": {"palette": PALETTE}},
        "2": {"class_type": "PalettePreview", "inputs": {"palette": ["1", 0]}},
        "3": {"class_type": "LoadImage", "inputs": {"image": "fields.png"}},
        "4": {"class_type": "PaletteFromImage", "inputs": {"image": ["3", 0], "size": 4, "method": "median_cut"}},
        "5": {"class_type": "PalettePreview", "inputs": {"palette": ["4", 0]}},
        "6": {"class_type": "HistogramPreview", "inputs": {"image": ["3", 0], "bins": 16}},
        "7": {"class_type": "HistogramFromImage", "inputs": {"image": ["3", 0]}},
        "8": {"class_type": "PreviewAny", "inputs": {"source": ["7", 1]}},
    }
    # Nothing but our nodes and a text preview: the preview nodes are outputs in their own right.
    outputs = server.run(prompt, timeout=300)["outputs"]
    for nid in ("1", "2", "4", "5", "6", "7"):
        (entry,) = outputs[nid]["images"]
        assert entry["type"] == "temp"
        on_disk = server.root / "temp" / entry["subfolder"] / entry["filename"]
        assert on_disk.is_file() and on_disk.read_bytes() == server.image(entry)
        assert Image.open(on_disk).size == (512, 64)
    read = {nid: np.asarray(Image.open(io.BytesIO(server.image(outputs[nid]["images"][0])))) for nid in "1245"}
    assert np.array_equal(read["1"], read["2"]) and np.array_equal(read["4"], read["5"])
    assert read["1"][32, 0, :3].tolist() == [0x26, 0x46, 0x53]
    assert not np.array_equal(read["4"], read["1"])
    assert float(outputs["8"]["text"][0]) > 0  # the entropy output still wires on


def interrupt(server, prompt_id: str) -> None:
    """POST /interrupt for one prompt (ComfyUI answers 200 with an empty body once the flag is set)."""
    body = json.dumps({"prompt_id": prompt_id}).encode()
    req = urllib.request.Request(server.url + "/interrupt", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200


def test_interrupt_ends_a_recolor_batch_within_one_image(server):
    import websocket

    client = uuid.uuid4().hex
    ws = websocket.create_connection(f"ws://127.0.0.1:{server.port}/ws?clientId={client}", timeout=120)
    prompt = {
        "1": {"class_type": "PaletteInput", "inputs": {"palette": PALETTE}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "fields.png"}},
        "3": {"class_type": "RepeatImageBatch", "inputs": {"image": ["2", 0], "amount": BATCH}},
        "4": {
            "class_type": "PaletteRecolor",
            "inputs": {
                "image": ["3", 0],
                "palette": ["1", 0],
                "strength": 1.0,
                "matching": "optimal transport",
                "keep_neutrals": False,
                "source_colors": 64,  # the most colours to match: about 0.2 s per 512x512 image
            },
        },
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}},
    }
    try:
        pid = server.post("/prompt", {"prompt": prompt, "client_id": client})["prompt_id"]
        done_when_sent = None
        values, end = [], None
        while end is None:
            message = ws.recv()
            if not isinstance(message, str):
                continue  # binary preview frames
            event = json.loads(message)
            data = event.get("data", {})
            if data.get("prompt_id") != pid:
                continue
            if event["type"] == "progress" and data["node"] == "4":
                assert data["max"] == BATCH  # one 512x512 slice per image
                values.append(data["value"])
                if done_when_sent is None:
                    done_when_sent = data["value"]
                    interrupt(server, pid)
            elif event["type"] in ("execution_interrupted", "execution_success", "execution_error"):
                end = event
    finally:
        ws.close()
    assert end["type"] == "execution_interrupted" and end["data"]["node_id"] == "4", end
    assert values == list(range(1, len(values) + 1))
    # The image in progress when the interrupt arrived may finish; the next check stops the node.
    assert max(values) <= done_when_sent + 1 < BATCH
    deadline = time.time() + 30  # the history entry is stored just after the message is sent
    while pid not in (history := server.get(f"/history/{pid}")) and time.time() < deadline:
        time.sleep(0.2)
    entry = history[pid]
    assert entry["status"]["status_str"] == "error" and "5" not in entry["outputs"]
    assert any(m[0] == "execution_interrupted" for m in entry["status"]["messages"])
