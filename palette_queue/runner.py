"""The batch loop: queue jobs a few at a time, follow them, download their images, survive restarts.

Each pass: (re)open the websocket, reconcile every queued job with the server's queue and history
(state.reconcile), submit pending jobs until ``window`` of ours are on the server, then read websocket
events until one of our prompts ends or ``poll`` seconds pass. Losing the server anywhere in a pass
closes the websocket and retries the pass with exponential backoff, for at most ``retry_timeout``
seconds of continuous outage; the reconcile step at the start of the next pass then finds out which
queued jobs the server still knows (wait or download) and which it lost (queue again, unless the images
whose names were saved before downloading are all on disk already).

Before the first pass and after every outage the server is asked whether it is ComfyUI
(``/system_stats``) and which node classes are outputs (``/object_info``). A job is done only when the
server ran every output node of its prompt: ComfyUI queues a prompt whose other outputs failed
validation and drops those (``node_errors`` in its answer, and a shorter ``outputs_to_execute`` in its
history entry); such a job fails with the server's message, and a rerun queues it again.
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from palette_core.image_file import ImageFileError

from .client import ComfyClient
from .errors import PromptPartlyRejected, PromptRejected, ServerError, ServerUnavailable
from .jobs import Job, Plan, slug
from .state import DONE, FAIL, FAILED, FINISH, PENDING, QUEUED, REQUEUE, WAIT, State, output_images, reconcile

log = logging.getLogger(__name__)

IMAGES_DIR = "images"


@dataclass
class Options:
    """How the runner paces itself."""

    window: int = 2  # our prompts on the server at once: the next one is already queued when one ends
    retry_timeout: float = 600.0  # seconds of continuous outage before giving up (a restart loading models)
    poll: float = 10.0  # seconds between queue checks when no event arrives
    max_backoff: float = 30.0
    retry_failed: bool = True  # queue jobs that failed in an earlier run again


@dataclass
class Summary:
    """How the batch ended."""

    total: int
    done: int
    failed: int
    pending: int

    @property
    def ok(self) -> bool:
        """Every job done."""
        return self.done == self.total


class Progress:
    """A tqdm bar over jobs (step counts in its postfix) on a terminal; log lines otherwise."""

    def __init__(self, total: int, done: int, tty: bool | None = None):
        tty = sys.stderr.isatty() if tty is None else tty
        self.bar = None
        self._quarter: dict[int, int] = {}
        if tty:
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, initial=done, unit="job", dynamic_ncols=True, file=sys.stderr)
        self.total = total
        self.count = done

    def start(self, done: int) -> None:
        """Set how many jobs count as finished before this run (done, or failed and not retried)."""
        self.count = done
        if self.bar is not None:
            self.bar.n = done
            self.bar.refresh()

    def status(self, job: Job, text: str) -> None:
        """A change in one job's state (queued, running, ...)."""
        if self.bar is not None:
            self.bar.set_postfix_str(f"{job.label}: {text}", refresh=True)
        else:
            log.info("[%d/%d] %s: %s", self.count, self.total, job.label, text)

    def step(self, job: Job, node: str, value: int, maximum: int) -> None:
        """A progress event (sampler steps) of one job."""
        if self.bar is not None:
            self.bar.set_postfix_str(f"{job.label}: node {node} {value}/{maximum}", refresh=True)
            return
        quarter = 4 * value // max(maximum, 1)
        if quarter > self._quarter.get(job.number, 0) or value == maximum:
            self._quarter[job.number] = quarter if value < maximum else 0
            log.info("[%d/%d] %s: node %s %d/%d", self.count, self.total, job.label, node, value, maximum)

    def finished(self, job: Job, text: str, failed: bool = False) -> None:
        """One job done or failed."""
        self.count += 1
        if self.bar is not None:
            self.bar.set_postfix_str(f"{job.label}: {text.splitlines()[0][:60]}", refresh=False)
            self.bar.update(1)
        (log.error if failed else log.info)("[%d/%d] %s: %s", self.count, self.total, job.label, text)

    def close(self) -> None:
        """Close the bar."""
        if self.bar is not None:
            self.bar.close()


class Runner:
    """Runs a Plan against one server, recording everything in a State."""

    def __init__(
        self,
        plan: Plan,
        state: State,
        client: ComfyClient,
        out_dir: Path,
        options: Options | None = None,
        progress: Progress | None = None,
        on_job_done: Callable[[Job], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.plan = plan
        self.state = state
        self.client = client
        self.out_dir = out_dir
        self.options = options or Options()
        self.progress = progress
        self.on_job_done = on_job_done  # called after a job's images are on disk and the state says done
        self.sleep = sleep
        self.output_classes: set[str] | None = None  # the server's output node classes, asked once per connection

    # ----------------------------------------------------------------------------------------------

    def _prepare(self) -> list[Job]:
        active = []
        for job in self.plan.jobs:
            js = self.state.job(job.key, job.number, job.name)
            if js.status == FAILED and self.options.retry_failed:
                log.info("%s failed before (%s): queueing it again", job.label, (js.error or "").splitlines()[0])
                js.status, js.prompt_id, js.error = PENDING, None, None
            if js.status == DONE:
                missing = [f for f in js.files if not (self.out_dir / f).exists()]
                if missing:
                    log.warning("%s is done but %s is missing; it is not run again", job.label, missing[0])
            if js.status in (PENDING, QUEUED):
                active.append(job)
        stale = len(set(self.state.jobs) - {j.key for j in self.plan.jobs})
        if stale:
            log.info("%d job(s) in the state file are not in this batch (edited rows?); left as they are", stale)
        self.state.save()
        return active

    def run(self) -> Summary:
        """Run until every job is done or failed; ServerUnavailable if the server stays away too long."""
        active = self._prepare()
        if self.progress is None:
            self.progress = Progress(len(self.plan.jobs), 0)
        self.progress.start(len(self.plan.jobs) - len(active))
        outage_since: float | None = None
        failures = 0
        try:
            while any(self.state.jobs[j.key].status in (PENDING, QUEUED) for j in active):
                try:
                    if self.output_classes is None:
                        self._check_server(active)
                    self.client.connect()
                    self._reconcile(active)
                    outage_since, failures = None, 0
                    self._fill(active)
                    if any(self.state.jobs[j.key].status == QUEUED for j in active):
                        self._wait(active)
                except ServerUnavailable as e:
                    self.client.close()
                    self.output_classes = None  # a restarted server may load other nodes
                    now = time.monotonic()
                    outage_since = outage_since or now
                    if now - outage_since > self.options.retry_timeout:
                        raise ServerUnavailable(
                            f"gave up after {self.options.retry_timeout:.0f} s without the server: {e}"
                        ) from e
                    delay = min(self.options.max_backoff, 2.0**failures)
                    failures += 1
                    log.warning("%s; retrying in %.0f s", e, delay)
                    self.sleep(delay)
        finally:
            self.client.close()
            self.progress.close()
        return self.summary()

    def summary(self) -> Summary:
        """Counts over the plan's jobs."""
        status = [self.state.jobs[j.key].status for j in self.plan.jobs]
        return Summary(
            len(status),
            status.count(DONE),
            status.count(FAILED),
            len(status) - status.count(DONE) - status.count(FAILED),
        )

    # ----------------------------------------------------------------------------------------------

    def _check_server(self, active: list[Job]) -> None:
        """NotComfyUI at once when the address is not ComfyUI; learn which of the jobs' nodes are outputs."""
        stats = self.client.check_server()
        version = (stats.get("system") or {}).get("comfyui_version")
        classes = {node["class_type"] for job in active for node in job.prompt.values()}
        self.output_classes = self.client.output_classes(classes)
        log.debug("ComfyUI %s; output nodes: %s", version or "(version unknown)", sorted(self.output_classes))

    def missing_outputs(self, job: Job, entry: dict) -> list[str]:
        """Output nodes of the job's prompt that the server left out (``outputs_to_execute`` of its history)."""
        queued = entry.get("prompt")
        if not isinstance(queued, list) or len(queued) < 5 or not isinstance(queued[4], list):
            return []  # a server that does not record what it ran: nothing to compare with
        ran = {str(n) for n in queued[4]}
        wanted = [nid for nid, node in job.prompt.items() if node["class_type"] in (self.output_classes or ())]
        return [nid for nid in wanted if nid not in ran]

    def _reconcile(self, active: list[Job]) -> None:
        queued = [j for j in active if self.state.jobs[j.key].status == QUEUED]
        if not queued:
            return
        on_server = self.client.queue_ids()  # before any history look-up: see state.reconcile
        for job in queued:
            js = self.state.jobs[job.key]
            in_queue = js.prompt_id in on_server
            entry = None if in_queue or js.prompt_id is None else self.client.history(js.prompt_id)
            action, message = reconcile(js.prompt_id, in_queue, entry)
            if action == WAIT:
                continue
            if action == FINISH and (missing := self.missing_outputs(job, entry)):
                nodes = ", ".join(f"{n} ({job.prompt[n]['class_type']})" for n in missing)
                self._fail(
                    job,
                    f"the server ran only part of the workflow: it dropped output node(s) {nodes}, which failed "
                    "validation (see the ComfyUI log); the images of the other outputs are not used",
                )
            elif action == FINISH:
                self._download(job, entry)
            elif action == FAIL:
                self._fail(job, message)
            elif action == REQUEUE and js.files and all((self.out_dir / f).exists() for f in js.files):
                # the CLI stopped between downloading the images and recording it; the server since forgot the job
                self._finish(job, js.files)
            elif action == REQUEUE:
                log.warning(
                    "%s (prompt %s) is not on the server any more (restarted?): queueing it again",
                    job.label,
                    js.prompt_id,
                )
                js.status, js.prompt_id = PENDING, None
                self.state.save()

    def _fill(self, active: list[Job]) -> None:
        on_server = sum(self.state.jobs[j.key].status == QUEUED for j in active)
        for job in active:
            if on_server >= self.options.window:
                return
            if self.state.jobs[job.key].status == PENDING:
                on_server += self._submit(job)

    def _submit(self, job: Job) -> bool:
        js = self.state.jobs[job.key]
        js.prompt_id, js.status, js.error, js.files = uuid.uuid4().hex, QUEUED, None, []
        js.attempts += 1
        self.state.save()  # the id is on disk before the server can know it
        try:
            for name, local in job.uploads.items():
                self.client.upload(local, name)
            self.client.submit(job.prompt, js.prompt_id)
        except PromptPartlyRejected as e:
            self._fail(job, f"the server dropped part of the workflow: {e}")
            try:  # what it kept would run for nothing: its images are not used
                self.client.cancel(js.prompt_id)
            except (ServerUnavailable, ServerError) as cancel_error:
                log.warning("%s: could not remove prompt %s from the queue: %s", job.label, js.prompt_id, cancel_error)
            return False
        except PromptRejected as e:
            self._fail(job, f"rejected by the server: {e}")
            return False
        except ImageFileError as e:  # checked before the batch, since removed or replaced
            self._fail(job, f"its image cannot be uploaded: {e}")
            return False
        self.progress.status(job, f"queued as {js.prompt_id}")
        return True

    def _fail(self, job: Job, message: str | None) -> None:
        js = self.state.jobs[job.key]
        js.status, js.error, js.files = FAILED, message, []
        self.state.save()
        self.progress.finished(job, f"FAILED: {message}", failed=True)

    def _download(self, job: Job, entry: dict) -> None:
        js = self.state.jobs[job.key]
        images = output_images(entry)
        stem = f"{IMAGES_DIR}/{job.number:04d}-{slug(job.name or 'job')}-{job.key[:8]}"
        files = [
            stem + (f"-{i + 1}" if len(images) > 1 else "") + (Path(image["filename"]).suffix or ".png")
            for i, image in enumerate(images)
        ]
        js.files = files
        self.state.save()  # the names are on disk first: a restart after a crash mid-way finds the images
        try:
            for image, rel in zip(images, files):
                self.client.download(image, self.out_dir / rel)
        except ServerError as e:
            self._fail(job, f"finished, but its images could not be downloaded: {e}")
            return
        self._finish(job, files)

    def _finish(self, job: Job, files: list[str]) -> None:
        js = self.state.jobs[job.key]
        js.status, js.files, js.error = DONE, files, None
        self.state.save()
        if not files:
            log.warning("%s finished but saved no image (the workflow has no SaveImage output?)", job.label)
        self.progress.finished(job, f"done: {', '.join(files) or 'no images'}")
        if self.on_job_done is not None:
            self.on_job_done(job)

    def _wait(self, active: list[Job]) -> None:
        ours = {self.state.jobs[j.key].prompt_id: j for j in active if self.state.jobs[j.key].status == QUEUED}
        deadline = time.monotonic() + self.options.poll
        while (remaining := deadline - time.monotonic()) > 0:
            event = self.client.event(remaining)
            if event is None:
                return
            kind, data = event
            job = ours.get(data.get("prompt_id"))
            if job is None:
                continue
            if kind == "progress":
                self.progress.step(job, str(data.get("node")), int(data.get("value", 0)), int(data.get("max", 0)))
            elif kind == "execution_start":
                self.progress.status(job, "running")
            elif kind == "executing" and data.get("node") is None:
                return  # sent after the history entry is written: reconcile now
