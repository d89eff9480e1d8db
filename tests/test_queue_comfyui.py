"""The batch queue CLI against a real ComfyUI server (skipped unless COMFYUI_PATH is set).

Fast tests use a workflow that needs no checkpoint (PaletteInput -> PalettePreview -> SaveImage): the
server is restarted mid-batch, and the CLI is killed with SIGKILL mid-batch; nothing may be lost and no
job may run twice. The slow test (PALETTE_SLOW_TESTS=1; run it under ``flock /work/sdxl.lock``) runs a
txt2img workflow with ApplyPaletteAdapter on the random-weight SDXL checkpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from comfyhost import requires_comfyui
from comfyserver import CACHE, SLOW, ComfyServer
from PIL import Image

from palette_core.palette import Palette
from palette_queue import cli
from palette_queue.report import image_emd, load_rgb
from palette_queue.state import DONE, FAILED, State

pytestmark = [requires_comfyui, pytest.mark.comfyui]

REPO = Path(__file__).resolve().parents[1]
PREVIEW = {
    "1": {"class_type": "PaletteInput", "inputs": {"palette": "#ff0000, #00ff00"}, "_meta": {"title": "Palette"}},
    "2": {"class_type": "PalettePreview", "inputs": {"palette": ["1", 0]}},
    "3": {
        "class_type": "SaveImage",
        "inputs": {"images": ["2", 0], "filename_prefix": "queue"},
        "_meta": {"title": "Save"},
    },
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ComfyServer(tmp_path_factory.mktemp("comfy")) as s:
        yield s


def write_inputs(folder: Path, palettes: list[str], extra: str = "") -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    workflow = folder / "preview.api.json"
    workflow.write_text(json.dumps(PREVIEW))
    jobs = folder / "jobs.csv"
    jobs.write_text(
        "name,palette,Save.filename_prefix\n" + "".join(f'p{i},"{p}",\n' for i, p in enumerate(palettes)) + extra
    )
    return workflow, jobs


def ours(server: ComfyServer, client_id: str) -> dict[str, dict]:
    """History entries of prompts queued by one CLI state (extra_data.client_id)."""
    return {pid: e for pid, e in server.get("/history").items() if e["prompt"][3].get("client_id") == client_id}


def check_images(out: Path, state: State, palettes: list[str]) -> None:
    """Each done job has one image: the stripes of its own palette (so no job got another's image)."""
    for i, palette in enumerate(palettes):
        js = next(j for j in state.jobs.values() if j.number == i + 1)
        assert js.status == DONE and len(js.files) == 1
        pixels = np.asarray(Image.open(out / js.files[0]).convert("RGB"))
        first = Palette.parse(palette).colors[0].mul(255).round().int().tolist()
        assert pixels.shape == (64, 512, 3) and pixels[32, 0].tolist() == first
    assert len(list((out / "images").iterdir())) == len(palettes)


def test_server_restart_mid_batch_loses_nothing_and_repeats_nothing(server, tmp_path):
    palettes = ["#ff0000:2, #0000ff", "#264653 #2a9d8f #e9c46a", "#e76f51:3 #f4a261", "#000000 #ffffff", "#123456"]
    workflow, jobs = write_inputs(tmp_path, palettes, 'bad,"#ffffff",../escape\n')
    out = tmp_path / "out"
    before: dict = {}

    def restart_after_first_job(job):
        if job.number == 1:
            state = State.load(out)
            before["state"] = {k: (j.status, j.prompt_id) for k, j in state.jobs.items()}
            server.stop()
            server.start()

    args = [str(workflow), str(jobs), "--out", str(out), "--server", server.url, "--thumb", "64"]
    assert cli.main(args, on_job_done=restart_after_first_job) == 1  # the 'bad' job fails
    state = State.load(out)
    check_images(out, state, palettes)
    bad = next(j for j in state.jobs.values() if j.name == "bad")
    assert bad.status == FAILED and "Saving image outside the output folder" in bad.error

    # before the restart: job 1 done, job 2 on the server (window 2); the restarted server has neither
    first, second = (next(j for j in state.jobs.values() if j.number == n) for n in (1, 2))
    assert before["state"][first.key] == (DONE, first.prompt_id)
    assert before["state"][second.key][0] == "queued" and second.attempts == 2  # queued again exactly once
    history = ours(server, state.client_id)
    assert first.prompt_id not in history
    assert set(history) == {j.prompt_id for j in state.jobs.values() if j.number != 1}
    assert all(j.attempts == 1 for j in state.jobs.values() if j.number > 2)

    report = (out / "report.md").read_text()
    assert "6 jobs, 5 done, 1 failed" in report and "Saving image outside" in report
    rows = json.loads((out / "report.json").read_text())
    assert all(r["palette_emd"] < 0.05 for r in rows if r["status"] == "done")  # each image is its palette
    assert (out / "contact_sheet.png").exists()

    # the same command again: nothing new with --skip-failed; without it only the failed job, once
    assert cli.main([*args, "--skip-failed"]) == 1
    assert set(ours(server, state.client_id)) == set(history)
    assert cli.main(args) == 1
    again = ours(server, state.client_id)
    assert set(again) - set(history) == {State.load(out).jobs[bad.key].prompt_id}


def test_killed_cli_resumes_without_repeating(server, tmp_path):
    palettes = ["#aa0000", "#00aa00", "#0000aa", "#aaaa00", "#00aaaa"]
    workflow, jobs = write_inputs(tmp_path, palettes)
    out = tmp_path / "out"
    args = [str(workflow), str(jobs), "--out", str(out), "--server", server.url]
    killer = textwrap.dedent(
        f"""
        import os, signal, sys
        from palette_queue.cli import main

        def hook(job):
            if job.number == 2:
                os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, like a crash or kill -9

        sys.exit(main({args!r}, on_job_done=hook))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    killed = subprocess.run([sys.executable, "-c", killer], cwd=REPO, env=env, capture_output=True, timeout=300)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    state = State.load(out)
    assert sum(j.status == DONE for j in state.jobs.values()) == 2
    resumed = subprocess.run(
        [sys.executable, "-m", "palette_queue", *args], cwd=REPO, env=env, capture_output=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    assert "resuming: 2 of 5 jobs already done" in resumed.stdout.decode()
    state = State.load(out)
    check_images(out, state, palettes)
    history = ours(server, state.client_id)
    # every job ran exactly once on the server: one successful history entry each, under the recorded ids
    assert sorted(history) == sorted(j.prompt_id for j in state.jobs.values())
    assert all(e["status"]["status_str"] == "success" for e in history.values())
    assert all(j.attempts == 1 for j in state.jobs.values())


def test_server_rejection_and_unknown_node_are_clear(server, tmp_path):
    workflow, jobs = write_inputs(tmp_path, ["#ff0000"])
    bad = dict(PREVIEW, **{"1": {"class_type": "PaletteInput", "inputs": {"palette": "#ff0000"}}})
    bad["3"] = {
        "class_type": "SaveImage",
        "inputs": {"images": ["2", 0], "filename_prefix": "x"},
        "_meta": {"title": "Save"},
    }
    bad["2"] = {"class_type": "NoSuchNode", "inputs": {"palette": ["1", 0]}}
    workflow.write_text(json.dumps(bad))
    out = tmp_path / "out"
    assert cli.main([str(workflow), str(jobs), "--out", str(out), "--server", server.url]) == 1
    js = next(iter(State.load(out).jobs.values()))
    assert js.status == FAILED and js.error.startswith("rejected by the server:") and "NoSuchNode" in js.error


def test_a_branch_the_server_drops_fails_the_job_and_a_rerun_redoes_it(server, tmp_path):
    """ComfyUI queues a prompt whose other output fails validation (200 with node_errors): not done with half."""
    workflow, jobs = write_inputs(tmp_path, ["#ff0000", "#0000ff"])
    two = dict(PREVIEW)
    two["4"] = {"class_type": "LoadImage", "inputs": {"image": "queue_missing_input.png"}}
    two["5"] = {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "second"}}
    workflow.write_text(json.dumps(two))
    out = tmp_path / "out"
    args = [str(workflow), str(jobs), "--out", str(out), "--server", server.url, "--no-report"]
    assert cli.main(args) == 1
    state = State.load(out)
    assert [j.status for j in state.jobs.values()] == [FAILED, FAILED]
    for js in state.jobs.values():
        assert js.error.startswith("the server dropped part of the workflow:") and js.files == []
        assert "node 4 (LoadImage)" in js.error and "queue_missing_input.png" in js.error
    assert not (out / "images").exists()

    Image.new("RGB", (8, 8), (0, 128, 255)).save(server.root / "input" / "queue_missing_input.png")
    assert cli.main(args) == 0  # the failed jobs are queued again and now run whole
    state = State.load(out)
    assert all(j.status == DONE and len(j.files) == 2 and j.attempts == 2 for j in state.jobs.values())
    second = [np.asarray(Image.open(out / j.files[1]).convert("RGB")) for j in state.jobs.values()]
    assert all(img.shape == (8, 8, 3) and img[0, 0].tolist() == [0, 128, 255] for img in second)


def test_image_column_uploads_local_files(server, tmp_path):
    recolor = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
        "2": {"class_type": "PaletteInput", "inputs": {"palette": "#ff0000"}},
        "3": {
            "class_type": "PaletteRecolor",
            "inputs": {
                "image": ["1", 0],
                "palette": ["2", 0],
                "strength": 1.0,
                "matching": "optimal transport",
                "keep_neutrals": False,
                "source_colors": 0,
            },
        },
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "recolor"}},
    }
    workflow = tmp_path / "recolor.api.json"
    workflow.write_text(json.dumps(recolor))
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)).save(tmp_path / f"{name}.png")
    jobs = tmp_path / "jobs.csv"
    jobs.write_text('name,image,palette\na,a.png,"#264653, #e9c46a"\nb,b.png,"#e76f51, #2a9d8f, #ffffff"\n')
    out = tmp_path / "out"
    assert cli.main([str(workflow), str(jobs), "--out", str(out), "--server", server.url]) == 0
    rows = json.loads((out / "report.json").read_text())
    assert [(r["name"], r["width"], r["height"]) for r in rows] == [("a", 40, 48), ("b", 40, 48)]
    for r in rows:  # recoloured toward the palette: closer than the random source image
        source = image_emd(load_rgb(tmp_path / f"{r['name']}.png"), Palette.parse(r["palette"]))
        assert r["palette_emd"] < source
    uploaded = sorted(p.name for p in (server.root / "input").iterdir() if p.name.startswith("palette_queue_"))
    assert len(uploaded) == 2 and all(p.endswith(".png") for p in uploaded)


@pytest.mark.slow
@pytest.mark.skipif(not SLOW, reason="slow end-to-end test: set PALETTE_SLOW_TESTS=1 (and run under flock)")
def test_adapter_txt2img_batch_on_random_sdxl(tmp_path):
    import random_sdxl

    from palette_core.adapter import write_untrained_sdxl

    ckpt = random_sdxl.build(CACHE / "random_sdxl.safetensors")
    adapter = write_untrained_sdxl(tmp_path / "untrained.safetensors")
    from test_queue import adapter_prompt

    workflow = tmp_path / "txt2img.api.json"
    prompt = adapter_prompt()
    prompt["4"]["inputs"]["ckpt_name"] = ckpt.name
    workflow.write_text(json.dumps(prompt))
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(
        "".join(
            json.dumps(j) + "\n"
            for j in [
                {
                    "name": "red",
                    "palette": "#e63946:2, #f1faee",
                    "negative_palette": "#1d3557",
                    "seed": 1,
                    "prompt": "a red poster",
                    "width": 256,
                    "height": 256,
                    "steps": 1,
                    "cfg": 5,
                    "weight": 1.0,
                },
                {
                    "name": "teal",
                    "palette": ["#264653", "#2a9d8f"],
                    "negative_palette": "#e76f51",
                    "seed": 2,
                    "prompt": "a teal poster",
                    "width": 256,
                    "height": 256,
                    "steps": 1,
                    "cfg": 5,
                    "weight": 0.5,
                },
            ]
        )
    )
    out = tmp_path / "out"
    with ComfyServer(tmp_path / "comfy", checkpoints=[ckpt], adapters=[adapter]) as server:
        assert cli.main([str(workflow), str(jobs), "--out", str(out), "--server", server.url]) == 0
        state = State.load(out)
        history = ours(server, state.client_id)
    assert len(history) == 2 and all(e["status"]["status_str"] == "success" for e in history.values())
    rows = json.loads((out / "report.json").read_text())
    assert [(r["name"], r["width"], r["height"], r["seed"]) for r in rows] == [
        ("red", 256, 256, 1),
        ("teal", 256, 256, 2),
    ]
    assert all(0 < r["palette_emd"] < 2 for r in rows)
    a, b = (np.asarray(Image.open(out / r["file"])) for r in rows)
    assert np.abs(a.astype(int) - b).mean() > 1  # different seeds, prompts and palettes
    assert (out / "contact_sheet.png").exists()
