"""The batch queue over three real ComfyUI servers on loopback (skipped unless COMFYUI_PATH is set; slow).

No simulation: three ComfyUI processes with this pack run a workflow that needs no checkpoint but whose
image depends on the seed (PaletteInput -> PalettePreview -> ImageScale -> ImageAddNoise -> SaveImage).
Mid-batch one server is terminated and restarted, and another is stopped with SIGSTOP (it keeps its
queue but answers nothing) and let go on later, so it finishes prompts the CLI has already queued
elsewhere. Every job must be done exactly once, each image equal to the one a one-server run makes for
the same seed, and running the command again must queue nothing. About a minute; run it with
PALETTE_SLOW_TESTS=1 (test_queue_servers.py checks the same rules in virtual time, in the default suite).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from comfyhost import requires_comfyui
from comfyserver import SLOW, ComfyServer, start_all
from PIL import Image

from palette_queue import cli
from palette_queue.state import DONE, State

pytestmark = [
    requires_comfyui,
    pytest.mark.comfyui,
    pytest.mark.slow,
    pytest.mark.skipif(not SLOW, reason="slow end-to-end test: set PALETTE_SLOW_TESTS=1"),
]

NOISY = {
    "1": {"class_type": "PaletteInput", "inputs": {"palette": "#ff0000, #00ff00"}},
    "2": {"class_type": "PalettePreview", "inputs": {"palette": ["1", 0]}},
    "3": {
        "class_type": "ImageScale",
        "inputs": {
            "image": ["2", 0],
            "upscale_method": "nearest-exact",
            "width": 384,
            "height": 384,
            "crop": "disabled",
        },
    },
    "4": {"class_type": "ImageAddNoise", "inputs": {"image": ["3", 0], "seed": 0, "strength": 0.4}},
    "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "multi"}},
}
PALETTES = ["#264653 #2a9d8f", "#e9c46a:2 #f4a261", "#e76f51 #1d3557", "#a8dadc #457b9d #f1faee"]
JOBS = 16
SERVER_TIMEOUT = 3.0


def history_ids(server: ComfyServer, client_id: str) -> set[str]:
    """Prompt ids of one CLI state in the server's history (extra_data.client_id)."""
    return {pid for pid, e in server.get("/history").items() if e["prompt"][3].get("client_id") == client_id}


def queue_ids(server: ComfyServer) -> set[str]:
    queue = server.get("/queue")
    return {item[1] for part in ("queue_running", "queue_pending") for item in queue[part]}


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_three_servers_one_killed_one_hung_every_job_once_and_images_as_one_server(tmp_path):
    workflow = tmp_path / "noisy.api.json"
    workflow.write_text(json.dumps(NOISY))
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("name,palette,seed\n" + "".join(f'n{i},"{PALETTES[i % 4]}",{1000 + i}\n' for i in range(JOBS)))
    a, b, c = (ComfyServer(tmp_path / f"comfy_{n}") for n in "abc")
    start_all([a, b, c])
    try:
        # the reference: the same jobs on one server
        ref = tmp_path / "ref"
        assert cli.main([str(workflow), str(jobs), "--out", str(ref), "--server", a.url, "--no-report"]) == 0

        out = tmp_path / "out"
        args = [str(workflow), str(jobs), "--out", str(out), "--window", "1", "--thumb", "32"]
        args += ["--server-timeout", str(SERVER_TIMEOUT)] + [x for s in (a, b, c) for x in ("--server", s.url)]
        done: Counter[str] = Counter()
        seen = {"killed": [], "hung": [], "abandoned": set()}
        threads: list[threading.Thread] = []

        def incidents(job):
            done[job.key] += 1
            state = State.load(out)
            seen["abandoned"] |= {(a["server"], a["prompt_id"]) for js in state.jobs.values() for a in js.abandoned}
            on = {
                s.url: [k for k, js in state.jobs.items() if js.status == "queued" and js.server == s.url]
                for s in (b, c)
            }
            if not seen["killed"] and sum(done.values()) >= 3 and on[b.url]:
                seen["killed"] = on[b.url]  # b dies with a job of ours on it and comes back empty
                b.stop()
                threads.append(threading.Thread(target=b.start))
                threads[-1].start()
            elif not seen["hung"] and sum(done.values()) >= 7 and on[c.url]:
                seen["hung"] = [(k, state.jobs[k].prompt_id) for k in on[c.url]]
                c.pause()  # c hangs with its job; it runs it once let go, after the server timeout
                threads.append(threading.Thread(target=lambda: (time.sleep(4 * SERVER_TIMEOUT), c.resume())))
                threads[-1].start()
            time.sleep(0.3)  # keep the batch going while b restarts and c is away

        assert cli.main(args, on_job_done=incidents) == 0
        for t in threads:
            t.join()
        state = State.load(out)

        # every job done exactly once: marked done once, one image each, the same image as on one server
        assert sorted(done.values()) == [1] * JOBS
        assert all(js.status == DONE and len(js.files) == 1 for js in state.jobs.values())
        reference = State.load(ref)
        names = sorted(p.name for p in (out / "images").iterdir())
        assert names == sorted(p.name for p in (ref / "images").iterdir()) and len(names) == JOBS
        for key, js in state.jobs.items():
            assert np.array_equal(pixels(out / js.files[0]), pixels(ref / reference.jobs[key].files[0]))
        first = [pixels(out / js.files[0]) for js in state.jobs.values()][:2]
        assert not np.array_equal(*first)  # the seeds matter: equal images are not a coincidence

        # b's job was queued again once; c's hung job was queued elsewhere after the timeout
        assert seen["killed"] and all(state.jobs[k].attempts == 2 for k in seen["killed"])
        assert seen["hung"], "c held no job when it was stopped"
        for key, pid in seen["hung"]:
            assert (c.url, pid) in seen["abandoned"]
            js = state.jobs[key]
            assert js.attempts >= 2 and (js.server != c.url or js.prompt_id == pid)
        # c, let go, ran (or was told to drop) the abandoned prompt; its late result made no second image
        deadline = time.time() + 60
        while any(pid in queue_ids(c) for _, pid in seen["hung"]):
            assert time.time() < deadline
            time.sleep(0.5)
        assert len(list((out / "images").iterdir())) == JOBS

        # report: which server ran each job, and per-server throughput
        rows = json.loads((out / "report.json").read_text())
        assert sorted(r["server"] for r in rows) == sorted(js.server for js in state.jobs.values())
        assert {r["server"] for r in rows} <= {a.url, b.url, c.url}
        report = (out / "report.md").read_text()
        for server in {js.server for js in state.jobs.values()}:
            n = sum(js.server == server for js in state.jobs.values())
            assert f"| {server} | {n} | {n} |" in report

        # the same command again: nothing new on any server, and what was abandoned is settled
        before = {s.url: history_ids(s, state.client_id) for s in (a, b, c)}
        assert cli.main(args) == 0
        assert {s.url: history_ids(s, state.client_id) for s in (a, b, c)} == before
        assert all(js.abandoned == [] for js in State.load(out).jobs.values())
        assert sorted(p.name for p in (out / "images").iterdir()) == names
    finally:
        for server in (a, b, c):
            server.stop()
