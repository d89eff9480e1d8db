"""What the batch queue itself costs per job, with one server and with several (docs/batch.md "Several servers").

The servers are in-process stand-ins that finish a prompt the moment it is queued, so every second measured
is the CLI's: its bookkeeping, the state file rewritten (and fsynced) at every change, the image written.
Anchor: the same jobs on one such server, in the same run. The time per job bounds how many real servers
one CLI can keep busy: with N servers at T seconds per image it needs N / T jobs a second.

Run from the repository root: ``python bench/bench_queue_servers.py [--jobs 200] [--servers 4]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from palette_queue.jobs import parse_jsonl, plan_jobs  # noqa: E402
from palette_queue.runner import Options, Progress, Runner  # noqa: E402
from palette_queue.state import State  # noqa: E402
from palette_queue.workflow import check_prompt  # noqa: E402

PROMPT = {
    "1": {"class_type": "PaletteInput", "inputs": {"palette": "#ff0000, #00ff00"}},
    "2": {"class_type": "PalettePreview", "inputs": {"palette": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "q"}},
}
PNG = b"\x89PNG\r\n\x1a\n" + bytes(4096)  # the size of a small image; its content is not read


class InstantServer:
    """A ComfyUI stand-in that runs a prompt as soon as it is queued: queue, history and events in memory."""

    def __init__(self, url: str):
        self.url = url
        self._history: dict[str, dict] = {}
        self.events: list[tuple[str, dict]] = []

    def check_server(self):
        return {"system": {"comfyui_version": "0.3.64"}, "devices": []}

    def output_classes(self, classes):
        return set(classes) & {"SaveImage"}

    def connect(self):
        pass

    def close(self):
        pass

    def queue_ids(self):
        return set()

    def history(self, pid):
        return self._history.get(pid)

    def submit(self, prompt, pid):
        image = {"filename": f"q_{pid}.png", "subfolder": "", "type": "output"}
        self._history[pid] = {
            "prompt": [0, pid, prompt, {}, ["3"]],
            "outputs": {"3": {"images": [image]}},
            "status": {"status_str": "success", "messages": []},
        }
        self.events.append(("executing", {"node": None, "prompt_id": pid}))

    def upload(self, local, name):
        pass

    def download(self, image, dest):
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(PNG)

    def cancel(self, pid):
        pass

    def event(self, timeout):
        return self.events.pop(0) if self.events else None


def run_batch(jobs: int, servers: int, window: int) -> float:
    """Seconds for ``jobs`` jobs on ``servers`` instant servers, from an empty output folder."""
    rows = parse_jsonl("".join(json.dumps({"3.filename_prefix": f"q{i}"}) + "\n" for i in range(jobs)))
    plan = plan_jobs(check_prompt(PROMPT), rows)
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        clients = [InstantServer(f"http://gpu{i}:8188") for i in range(servers)]
        runner = Runner(plan, State.load(out), clients, out, Options(window=window), Progress(jobs, 0, tty=False))
        t0 = time.perf_counter()
        summary = runner.run()
        seconds = time.perf_counter() - t0
    assert summary.done == jobs
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--servers", type=int, default=4)
    parser.add_argument("--window", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    logging.disable(logging.INFO)  # the per-job log lines are not what is measured
    run_batch(10, 1, args.window)  # warm-up
    anchor = min(run_batch(args.jobs, 1, args.window) for _ in range(args.repeat))
    ours = min(run_batch(args.jobs, args.servers, args.window) for _ in range(args.repeat))
    print(f"{args.jobs} jobs, window {args.window}, best of {args.repeat}:")
    print(f"  1 server (anchor): {anchor * 1e3 / args.jobs:.2f} ms per job, {args.jobs / anchor:.0f} jobs/s")
    print(
        f"  {args.servers} servers: {ours * 1e3 / args.jobs:.2f} ms per job, {args.jobs / ours:.0f} jobs/s, "
        f"{ours / anchor:.2f}x the anchor's time"
    )


if __name__ == "__main__":
    main()
