"""The batch loop: queue jobs a few at a time on one or more servers, follow them, download their images,
survive CLI crashes, server restarts and servers that stop answering.

Each pass visits every server that is due: (re)open its websocket, reconcile the queued jobs it holds
with its queue and history (state.reconcile) and settle the prompts abandoned on it (below); then queue
pending jobs on the servers with room (at most ``window`` of ours on each, the least loaded first); then
read websocket events until one of our prompts ends or ``poll`` seconds pass. A server that cannot be
reached is retried with exponential backoff (1, 2, 4 ... ``max_backoff`` s); when every server given has
been unreachable for ``retry_timeout`` seconds the run ends with ServerUnavailable. The reconcile step
finds out which queued jobs a server still knows (wait or download) and which it lost (queue again,
unless the images whose names were saved before downloading are all on disk already).

With several servers, the jobs of one that has not answered for ``server_timeout`` seconds are queued
again on the others, and the prompts left there are *abandoned* (recorded in the state file). When that
server answers again, an abandoned prompt is settled: one of a job already finished is deleted from its
queue (or interrupted) and its result, if any, is never downloaded; one whose result comes first (the
copy queued elsewhere has not finished) is used, and the other copy is taken off its server. A job is
marked done once, and its images have the job's own file names, so no second copy can appear.

Before a server's first pass and after every outage it is asked whether it is ComfyUI
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from palette_core.image_file import ImageFileError

from .client import ComfyClient
from .errors import PromptPartlyRejected, PromptRejected, ServerError, ServerUnavailable
from .jobs import Job, Plan, slug
from .state import (
    DONE,
    FAIL,
    FAILED,
    FINISH,
    PENDING,
    QUEUED,
    REQUEUE,
    WAIT,
    JobState,
    State,
    output_images,
    reconcile,
    run_seconds,
)

log = logging.getLogger(__name__)

IMAGES_DIR = "images"


@dataclass
class Options:
    """How the runner paces itself."""

    window: int = 2  # our prompts on each server at once: the next one is already queued when one ends
    retry_timeout: float = 600.0  # seconds without any server answering before giving up (a restart loading models)
    server_timeout: float = 120.0  # seconds one of several servers may not answer before its jobs go elsewhere
    poll: float = 10.0  # seconds between queue checks when no event arrives
    listen_slice: float = 0.25  # seconds on one websocket at a time while several servers run prompts of ours
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


class Server:
    """One server of the run: its client, whether new jobs may go to it, and its current outage."""

    def __init__(self, client: ComfyClient, listed: bool = True):
        self.client = client
        self.url: str = client.url
        self.listed = listed  # given with --server: new jobs go there (else only known from the state file)
        self.down_since: float | None = None  # start of the current outage
        self.failed_at = 0.0  # the last failed attempt to reach it
        self.retry_at = 0.0
        self.failures = 0
        self.error = ""
        self.output_classes: set[str] | None = None  # asked again after every outage: a restart may load others

    @property
    def up(self) -> bool:
        """Reached and checked on its last visit, and not lost since."""
        return self.down_since is None and self.output_classes is not None


class Unreachable:
    """The client of a server named only in the state file, when the runner was given no way to make one."""

    def __init__(self, url: str):
        self.url = url

    def check_server(self) -> dict:
        """Never answers: the jobs queued there go to another server after the server timeout."""
        raise ServerUnavailable(f"{self.url}: no client for a server that is not among --server")

    def close(self) -> None:
        """Nothing to close."""


class Runner:
    """Runs a Plan against one or more servers, recording everything in a State."""

    def __init__(
        self,
        plan: Plan,
        state: State,
        client: ComfyClient | Sequence[ComfyClient],
        out_dir: Path,
        options: Options | None = None,
        progress: Progress | None = None,
        on_job_done: Callable[[Job], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        make_client: Callable[[str], ComfyClient] | None = None,
    ):
        clients = list(client) if isinstance(client, (list, tuple)) else [client]
        if not clients:
            raise ValueError("a Runner needs at least one server")
        self.plan = plan
        self.state = state
        self.servers = [Server(c) for c in clients]
        self.out_dir = out_dir
        self.options = options or Options()
        self.progress = progress
        self.on_job_done = on_job_done  # called after a job's images are on disk and the state says done
        self.sleep = sleep
        self.clock = clock
        self.make_client = make_client  # for servers of an earlier run that are not among the servers given
        self._slept_until = float("-inf")  # a sleep counts as time passed even if ``clock`` did not move
        self._hurry = False  # a pass left work that the next pass can do at once

    @property
    def several(self) -> bool:
        """More than one server was given."""
        return sum(s.listed for s in self.servers) > 1

    def _now(self) -> float:
        return max(self.clock(), self._slept_until)

    def _server(self, url: str) -> Server:
        """The server at ``url``; one named only in the state file is added (it gets no new jobs)."""
        for server in self.servers:
            if server.url == url:
                return server
        server = Server(self.make_client(url) if self.make_client else Unreachable(url), listed=False)
        self.servers.append(server)
        log.info("%s holds prompts of an earlier run: following them there (no new jobs go to it)", url)
        return server

    def _js(self, job: Job) -> JobState:
        return self.state.jobs[job.key]

    # ----------------------------------------------------------------------------------------------

    def _prepare(self) -> list[Job]:
        active = []
        for job in self.plan.jobs:
            js = self.state.job(job.key, job.number, job.name)
            if js.status == FAILED and self.options.retry_failed:
                log.info("%s failed before (%s): queueing it again", job.label, (js.error or "").splitlines()[0])
                js.status, js.prompt_id, js.error, js.server = PENDING, None, None, None
            if js.status == DONE:
                missing = [f for f in js.files if not (self.out_dir / f).exists()]
                if missing:
                    log.warning("%s is done but %s is missing; it is not run again", job.label, missing[0])
            if js.status == QUEUED and js.server is None:  # a state file of one server (version 1)
                js.server = self.servers[0].url
            if js.status == QUEUED:
                self._server(js.server)
            for attempt in js.abandoned:
                self._server(attempt["server"])
            if js.status in (PENDING, QUEUED):
                active.append(job)
        stale = len(set(self.state.jobs) - {j.key for j in self.plan.jobs})
        if stale:
            log.info("%d job(s) in the state file are not in this batch (edited rows?); left as they are", stale)
        self.state.save()
        return active

    def _unfinished(self, active: list[Job]) -> bool:
        return any(self._js(j).status in (PENDING, QUEUED) for j in active)

    def run(self) -> Summary:
        """Run until every job is done or failed; ServerUnavailable if no server answers for too long."""
        active = self._prepare()
        if self.progress is None:
            self.progress = Progress(len(self.plan.jobs), 0)
        self.progress.start(len(self.plan.jobs) - len(active))
        try:
            while self._unfinished(active):
                self._hurry = False
                self._visit(active)
                self._check_give_up()
                self._requeue_lost(active)
                self._fill(active)
                self._check_give_up()
                self._wait(active)
                self._check_give_up()
            self._settle_leftovers()
            self._note_abandoned()
        finally:
            for server in self.servers:
                server.client.close()
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
    # Servers coming and going

    def _holds(self, server: Server, active: list[Job]) -> bool:
        """Whether a job of ours is queued on ``server`` or a prompt of ours was abandoned there."""
        return any(self._js(j).status == QUEUED and self._js(j).server == server.url for j in active) or any(
            a["server"] == server.url for j in self.plan.jobs for a in self._js(j).abandoned
        )

    def _visit(self, active: list[Job]) -> None:
        """Check, connect and reconcile every server that is due; one that fails is marked down."""
        now = self._now()
        for server in list(self.servers):
            if not (server.listed or self._holds(server, active)):
                continue
            if server.down_since is not None and now < server.retry_at:
                continue
            try:
                if server.output_classes is None:
                    self._check_server(server, active)
                server.client.connect()
                self._reconcile(server, active)
            except ServerUnavailable as e:
                self._down(server, e)
                continue
            if server.down_since is not None and self.several:
                log.info("%s answers again", server.url)
            server.down_since, server.failures = None, 0

    def _down(self, server: Server, error: Exception) -> None:
        """Record a failed attempt to reach ``server``: close its websocket and retry later, with backoff."""
        server.client.close()
        server.output_classes = None
        now = self._now()
        server.down_since = server.down_since if server.down_since is not None else now
        server.failed_at = now
        delay = min(self.options.max_backoff, 2.0**server.failures)
        server.failures += 1
        server.retry_at = now + delay
        server.error = f"{server.url}: {error}" if self.several and server.url not in str(error) else str(error)
        log.warning("%s; retrying in %.0f s", server.error, delay)

    def _check_give_up(self) -> None:
        """ServerUnavailable once no server given has answered for longer than ``retry_timeout``."""
        listed = [s for s in self.servers if s.listed]
        if any(s.down_since is None for s in listed):
            return
        since = max(s.down_since for s in listed)
        if max(s.failed_at for s in listed) - since > self.options.retry_timeout:
            last = max(listed, key=lambda s: s.failed_at)
            what = "the server" if len(listed) == 1 else f"any of the {len(listed)} servers"
            raise ServerUnavailable(f"gave up after {self.options.retry_timeout:.0f} s without {what}: {last.error}")

    def _requeue_lost(self, active: list[Job]) -> None:
        """Queue again elsewhere the jobs of a server that has not answered for ``server_timeout`` seconds."""
        if not any(s.listed and s.up for s in self.servers):
            return  # nowhere else to go: they wait for their server, as with one server
        now = self._now()
        for server in self.servers:
            if server.down_since is None or now - server.down_since < self.options.server_timeout:
                continue
            for job in active:
                js = self._js(job)
                if js.status != QUEUED or js.server != server.url:
                    continue
                if js.files and all((self.out_dir / f).exists() for f in js.files):
                    self._finish(job, js.files)  # downloaded before the CLI stopped: nothing to run again
                    continue
                js.abandoned.append({"server": server.url, "prompt_id": js.prompt_id, "queued_at": js.queued_at})
                js.status, js.prompt_id, js.server, js.queued_at = PENDING, None, None, None
                self.state.save()
                log.warning(
                    "%s: %s has not answered for %.0f s: queueing the job on another server; its prompt %s "
                    "there is abandoned (deleted if still queued when the server is back; a result it sends is "
                    "used only if it comes first)",
                    job.label,
                    server.url,
                    now - server.down_since,
                    js.abandoned[-1]["prompt_id"],
                )

    def _check_server(self, server: Server, active: list[Job]) -> None:
        """NotComfyUI at once when the address is not ComfyUI; learn which of the jobs' nodes are outputs."""
        stats = server.client.check_server()
        version = (stats.get("system") or {}).get("comfyui_version")
        classes = {node["class_type"] for job in active for node in job.prompt.values()}
        server.output_classes = server.client.output_classes(classes)
        log.debug(
            "%s: ComfyUI %s; output nodes: %s",
            server.url,
            version or "(version unknown)",
            sorted(server.output_classes),
        )

    # ----------------------------------------------------------------------------------------------
    # What each server says about our prompts

    def missing_outputs(self, job: Job, entry: dict, output_classes: set[str] | None) -> list[str]:
        """Output nodes of the job's prompt that the server left out (``outputs_to_execute`` of its history)."""
        queued = entry.get("prompt")
        if not isinstance(queued, list) or len(queued) < 5 or not isinstance(queued[4], list):
            return []  # a server that does not record what it ran: nothing to compare with
        ran = {str(n) for n in queued[4]}
        wanted = [nid for nid, node in job.prompt.items() if node["class_type"] in (output_classes or ())]
        return [nid for nid in wanted if nid not in ran]

    def _reconcile(self, server: Server, active: list[Job]) -> None:
        current = [j for j in active if self._js(j).status == QUEUED and self._js(j).server == server.url]
        abandoned = [(j, a) for j in self.plan.jobs for a in self._js(j).abandoned if a["server"] == server.url]
        if not current and not abandoned:
            return
        on_server = server.client.queue_ids()  # before any history look-up: see state.reconcile
        for job in current:
            js = self._js(job)
            if js.status == QUEUED and js.server == server.url:
                self._follow(server, job, on_server)
        for job, attempt in abandoned:
            if attempt in self._js(job).abandoned:
                self._settle(server, job, attempt, on_server)

    def _follow(self, server: Server, job: Job, on_server: set[str]) -> None:
        """The job's current prompt on ``server``: wait for it, download it, fail it or queue the job again."""
        js = self._js(job)
        in_queue = js.prompt_id in on_server
        entry = None if in_queue or js.prompt_id is None else server.client.history(js.prompt_id)
        action, message = reconcile(js.prompt_id, in_queue, entry)
        if action == WAIT:
            return
        if action == FINISH and (missing := self.missing_outputs(job, entry, server.output_classes)):
            nodes = ", ".join(f"{n} ({job.prompt[n]['class_type']})" for n in missing)
            self._fail(
                job,
                f"the server ran only part of the workflow: it dropped output node(s) {nodes}, which failed "
                "validation (see the ComfyUI log); the images of the other outputs are not used",
            )
        elif action == FINISH:
            self._download(server, job, entry)
        elif action == FAIL:
            self._fail(job, message)
        elif action == REQUEUE and js.files and all((self.out_dir / f).exists() for f in js.files):
            # the CLI stopped between downloading the images and recording it; the server since forgot the job
            self._finish(job, js.files)
        elif action == REQUEUE:
            log.warning(
                "%s (prompt %s) is not on %s any more (restarted?): queueing it again",
                job.label,
                js.prompt_id,
                "the server" if not self.several else server.url,
            )
            js.status, js.prompt_id, js.server = PENDING, None, None
            self.state.save()

    def _settle(self, server: Server, job: Job, attempt: dict, on_server: set[str]) -> None:
        """A prompt of the job abandoned on ``server``, which answers again (see the module doc)."""
        js = self._js(job)
        pid = attempt["prompt_id"]
        if js.status in (DONE, FAILED):
            if pid in on_server:
                try:
                    server.client.cancel(pid)
                except ServerError as e:  # its result is never used anyway
                    log.warning("%s: could not take prompt %s off %s: %s", job.label, pid, server.url, e)
                log.info("%s: deleted its abandoned prompt %s from %s (the job is over)", job.label, pid, server.url)
            else:
                log.info("%s: abandoned prompt %s on %s is over; its result is not used", job.label, pid, server.url)
            js.abandoned.remove(attempt)
            self.state.save()
            return
        if pid in on_server:
            if js.status == PENDING:  # not queued elsewhere yet: follow this prompt again instead
                js.abandoned.remove(attempt)
                js.status, js.prompt_id, js.server, js.queued_at = QUEUED, pid, server.url, attempt.get("queued_at")
                self.state.save()
                log.info("%s: prompt %s is still on %s: following it again", job.label, pid, server.url)
            return  # else both copies run: the first to finish is used
        entry = server.client.history(pid)
        first = (
            entry is not None
            and reconcile(pid, False, entry)[0] == FINISH
            and not self.missing_outputs(job, entry, server.output_classes)
        )
        js.abandoned.remove(attempt)
        if not first:  # failed, or lost in a restart: the copy queued elsewhere (or the next one) decides
            self.state.save()
            return
        if js.status == QUEUED:  # the copy queued elsewhere has not finished: it is abandoned in turn
            js.abandoned.append({"server": js.server, "prompt_id": js.prompt_id, "queued_at": js.queued_at})
        js.status, js.prompt_id, js.server, js.queued_at = QUEUED, pid, server.url, attempt.get("queued_at")
        self.state.save()
        log.info("%s: abandoned prompt %s on %s finished first: using its images", job.label, pid, server.url)
        self._download(server, job, entry)

    def _drop_abandoned(self, job: Job) -> None:
        """Take the job's abandoned prompts off the servers that answer now; the others wait for their server."""
        js = self._js(job)
        for attempt in list(js.abandoned):
            server = self._server(attempt["server"])
            if not server.up:
                continue
            try:
                server.client.cancel(attempt["prompt_id"])
            except ServerUnavailable as e:
                self._down(server, e)
                continue
            except ServerError as e:  # its result is never used anyway
                log.warning("%s: could not take prompt %s off %s: %s", job.label, attempt["prompt_id"], server.url, e)
            js.abandoned.remove(attempt)
            self.state.save()
            log.info("%s: took its other prompt %s off %s", job.label, attempt["prompt_id"], server.url)

    def _settle_leftovers(self) -> None:
        """Once every job is over, settle the abandoned prompts on servers not known to be down (one try each)."""
        for server in list(self.servers):
            if server.down_since is not None or not self._holds(server, []):
                continue
            try:
                if server.output_classes is None:
                    self._check_server(server, [])
                self._reconcile(server, [])
            except (ServerUnavailable, ServerError) as e:  # every job is over: this must not fail the batch
                log.warning("%s: its abandoned prompts are left for a later run: %s", server.url, e)

    def _note_abandoned(self) -> None:
        left = [(j, a) for j in self.plan.jobs for a in self._js(j).abandoned]
        if left:
            where = sorted({a["server"] for _, a in left})
            log.warning(
                "%d abandoned prompt(s) may still run on %s, which did not answer again; their results are not "
                "used, and a later run takes them off when the server answers",
                len(left),
                ", ".join(where),
            )

    # ----------------------------------------------------------------------------------------------
    # Queueing and finishing jobs

    def _fill(self, active: list[Job]) -> None:
        """Queue pending jobs on the servers given that answer, up to ``window`` each, the least loaded first."""
        targets = [s for s in self.servers if s.listed and s.up]
        load = {s.url: 0 for s in targets}
        for job in active:
            js = self._js(job)
            if js.status == QUEUED and js.server in load:
                load[js.server] += 1
        for job in active:
            js = self._js(job)
            if js.status != PENDING:
                continue
            if all(load[s.url] >= self.options.window for s in targets):
                return
            held = {a["server"] for a in js.abandoned}
            room = [s for s in targets if load[s.url] < self.options.window and s.url not in held]
            if not room:  # its abandoned prompt there is settled by the next visit, which may take it back
                self._hurry = True
                continue
            server = min(room, key=lambda s: load[s.url])
            try:
                load[server.url] += self._submit(server, job)
            except ServerUnavailable as e:
                self._down(server, e)
                targets.remove(server)

    def _submit(self, server: Server, job: Job) -> bool:
        js = self._js(job)
        js.prompt_id, js.status, js.error, js.files = uuid.uuid4().hex, QUEUED, None, []
        js.server, js.queued_at, js.run_seconds = server.url, time.time(), None
        js.attempts += 1
        self.state.save()  # the id and the server are on disk before the server can know the id
        client = server.client
        try:
            for name, local in job.uploads.items():
                client.upload(local, name)
            client.submit(job.prompt, js.prompt_id)
        except PromptPartlyRejected as e:
            self._fail(job, f"the server dropped part of the workflow: {e}")
            try:  # what it kept would run for nothing: its images are not used
                client.cancel(js.prompt_id)
            except (ServerUnavailable, ServerError) as cancel_error:
                log.warning("%s: could not remove prompt %s from the queue: %s", job.label, js.prompt_id, cancel_error)
            return False
        except PromptRejected as e:
            self._fail(job, f"rejected by the server{f' {server.url}' if self.several else ''}: {e}")
            return False
        except ImageFileError as e:  # checked before the batch, since removed or replaced
            self._fail(job, f"its image cannot be uploaded: {e}")
            return False
        self.progress.status(job, f"queued as {js.prompt_id}" + (f" on {server.url}" if self.several else ""))
        return True

    def _fail(self, job: Job, message: str | None) -> None:
        js = self._js(job)
        js.status, js.error, js.files = FAILED, message, []
        self.state.save()
        self._drop_abandoned(job)
        self.progress.finished(job, f"FAILED: {message}", failed=True)

    def _download(self, server: Server, job: Job, entry: dict) -> None:
        js = self._js(job)
        images = output_images(entry)
        stem = f"{IMAGES_DIR}/{job.number:04d}-{slug(job.name or 'job')}-{job.key[:8]}"
        files = [
            stem + (f"-{i + 1}" if len(images) > 1 else "") + (Path(image["filename"]).suffix or ".png")
            for i, image in enumerate(images)
        ]
        js.files, js.run_seconds = files, run_seconds(entry)
        self.state.save()  # the names are on disk first: a restart after a crash mid-way finds the images
        try:
            for image, rel in zip(images, files):
                server.client.download(image, self.out_dir / rel)
        except ServerError as e:
            self._fail(job, f"finished, but its images could not be downloaded: {e}")
            return
        self._finish(job, files)

    def _finish(self, job: Job, files: list[str]) -> None:
        js = self._js(job)
        js.status, js.files, js.error, js.finished_at = DONE, files, None, time.time()
        self.state.save()
        self._drop_abandoned(job)
        if not files:
            log.warning("%s finished but saved no image (the workflow has no SaveImage output?)", job.label)
        where = f" (on {js.server})" if self.several else ""
        self.progress.finished(job, f"done{where}: {', '.join(files) or 'no images'}")
        if self.on_job_done is not None:
            self.on_job_done(job)

    # ----------------------------------------------------------------------------------------------
    # Waiting

    def _next_due(self, active: list[Job]) -> float | None:
        """When a down server is to be tried again, or its jobs queued elsewhere, whichever comes first."""
        down = [s for s in self.servers if s.down_since is not None and (s.listed or self._holds(s, active))]
        times = [s.retry_at for s in down]
        if any(s.listed and s.up for s in self.servers):
            times += [
                s.down_since + self.options.server_timeout
                for s in down
                if any(self._js(j).status == QUEUED and self._js(j).server == s.url for j in active)
            ]
        return min(times) if times else None

    def _wait(self, active: list[Job]) -> None:
        """Read events until one of our prompts ends, ``poll`` seconds pass or a down server is due."""
        if self._hurry or not self._unfinished(active):
            return
        ours: dict[str, dict[str, Job]] = {}
        for job in self.plan.jobs:
            js = self._js(job)
            if js.status == QUEUED and job in active:
                ours.setdefault(js.server, {})[js.prompt_id] = job
            for attempt in js.abandoned:
                ours.setdefault(attempt["server"], {})[attempt["prompt_id"]] = job
        listening = [s for s in self.servers if s.up and ours.get(s.url)]
        now = self._now()
        due = self._next_due(active)
        deadline = now + self.options.poll if due is None else min(now + self.options.poll, due)
        if not listening:  # nothing of ours runs where we can hear it: back off until something is due
            self.sleep(max(0.0, deadline - now))
            self._slept_until = max(self._slept_until, deadline)
            return
        single = len(listening) == 1
        while listening:
            for server in list(listening):
                remaining = deadline - self._now()
                if remaining <= 0:
                    return
                try:
                    event = server.client.event(remaining if single else min(self.options.listen_slice, remaining))
                except ServerUnavailable as e:
                    self._down(server, e)
                    listening.remove(server)
                    continue
                if event is None:
                    if single:
                        return
                    continue
                kind, data = event
                job = ours[server.url].get(data.get("prompt_id"))
                if job is None:
                    continue
                if kind == "progress":
                    self.progress.step(job, str(data.get("node")), int(data.get("value", 0)), int(data.get("max", 0)))
                elif kind == "execution_start":
                    self.progress.status(job, "running" + (f" on {server.url}" if self.several else ""))
                elif kind == "executing" and data.get("node") is None:
                    return  # sent after the history entry is written: reconcile now
