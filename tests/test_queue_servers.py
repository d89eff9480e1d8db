"""The batch queue over several ComfyUI servers, against simulated servers in virtual time.

Each server is test_queue's SimulatedComfy (ComfyUI's PromptQueue semantics: a prompt is queued, running
or in the history; a restart empties all three). A script numbered by client call makes the CLI crash, a
server restart, die for a while and come back empty ("kill"), drop off the network while it goes on
running ("partition": it finishes its prompts unseen), or stop while keeping its queue ("freeze", as
SIGSTOP). The runner's clock and sleeps and the servers' work follow one virtual clock, so
--server-timeout is exercised without waiting. test_queue_servers_comfyui.py runs real servers.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_queue import COLORIZE, Crash, SimulatedClient, SimulatedComfy, sim_plan

from palette_queue import cli
from palette_queue import state as state_module
from palette_queue.errors import ServerUnavailable
from palette_queue.runner import Options, Progress, Runner
from palette_queue.state import DONE, FAILED, PENDING, QUEUED, STATE_FILE, State, run_seconds, server_throughput

INCIDENTS = ("restart", "kill", "partition", "freeze")


@pytest.fixture(autouse=True)
def no_fsync(monkeypatch):
    """The state file is still written and renamed atomically, but not flushed to the disk: durability is
    not what these tests check (test_queue.py does), and thousands of fsyncs would make them slow."""

    written: list[dict] = []

    def write(path: Path, data: bytes) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        written.append(json.loads(data))

    monkeypatch.setattr(state_module, "write_atomic", write)
    return written  # every state file written, in order


class Cluster:
    """Several simulated servers on one virtual clock, with one script of incidents over all their calls."""

    def __init__(self, n: int, script: dict | None = None, ticks: random.Random | None = None, limit: int = 20000):
        self.servers = [SimulatedComfy() for _ in range(n)]
        downloaded: set[str] = set()
        self.violations: list[str] = []
        for server in self.servers:  # "queued again after its images were downloaded" holds across servers
            server.downloaded, server.violations = downloaded, self.violations
        self.now = 0.0
        self.away_until = [0.0] * n  # unreachable (refused, or no answer) until then
        self.runs_away = [True] * n  # whether it goes on running its queue while unreachable
        self.stalled_until = [0.0] * n  # reachable, but busy with other work: runs nothing of ours
        self.script = script or {}
        self.ticks = ticks
        self.calls = 0
        self.limit = limit
        self.done: Counter[str] = Counter()  # on_job_done per job key, over every run
        self.downloads: list[tuple[int, str]] = []  # (server, job key) of every image downloaded
        self.incidents: Counter[str] = Counter()
        self.crash_after_download = 0  # the CLI dies right after this many more downloads
        self.timeline: list[tuple[float, Callable[[], None]]] = []  # things that happen at a virtual time
        self.peak = [0] * n  # the most prompts of ours each server held at once (queued or running)

    def clock(self) -> float:
        return self.now

    def reachable(self, i: int) -> bool:
        return self.now >= self.away_until[i]

    def _tick(self, times: int = 1) -> None:
        for when, happen in sorted(self.timeline, key=lambda t: t[0]):
            if when <= self.now:
                self.timeline.remove((when, happen))
                happen()
        for i, server in enumerate(self.servers):
            if self.now >= self.stalled_until[i] and (self.reachable(i) or self.runs_away[i]):
                for _ in range(times):
                    server.tick()

    def advance(self, seconds: float) -> None:
        """Virtual time passes (a sleep, or a websocket wait without events): the servers work meanwhile."""
        steps = min(200, max(1, math.ceil(seconds / 0.5)))
        for _ in range(steps):
            self.now += max(0.0, seconds) / steps
            self._tick()

    def call(self, i: int) -> str | None:
        """One client call to server ``i``: time passes, the script acts; ServerUnavailable if it is away."""
        self.calls += 1
        if self.calls > self.limit:
            raise AssertionError("the runner does not come to an end")
        self.now += 0.1
        self._tick(1 if self.ticks is None else self.ticks.choice([0, 1, 1, 2]))
        for k, server in enumerate(self.servers):
            self.peak[k] = max(self.peak[k], len(server.queue) + (server.running is not None))
        kind, target, seconds = self.script.get(self.calls, (None, 0, 0.0))
        target %= len(self.servers)
        if kind == "crash":
            raise Crash
        if kind in INCIDENTS:
            self.incidents[kind] += 1
            if kind in ("restart", "kill"):
                self.servers[target].restart()
            if kind != "restart":
                self.away_until[target] = max(self.away_until[target], self.now + seconds)
                self.runs_away[target] = kind == "partition"
        if not self.reachable(i) or (kind == "restart" and target == i):
            raise ServerUnavailable(f"cannot reach sim{i}: connection refused")
        return kind if kind in ("crash_after", "lost_reply") else None

    def executions(self) -> list[str]:
        return [key for server in self.servers for key in server.executions]


class ClusterClient(SimulatedClient):
    """The runner's client for server ``i`` of a Cluster (a recent ComfyUI: it interrupts the prompt named)."""

    def __init__(self, cluster: Cluster, i: int):
        super().__init__(cluster.servers[i], {})
        self.cluster, self.i = cluster, i
        self.url = f"http://sim{i}:8188"
        self.connected = False

    def _call(self) -> str | None:
        return self.cluster.call(self.i)

    def check_server(self):
        if not self.cluster.reachable(self.i):
            raise ServerUnavailable(f"cannot reach sim{self.i}: connection refused")
        return {"system": {"comfyui_version": "0.3.64"}, "devices": []}

    def connect(self):
        self._call()
        if not self.connected:  # a new websocket hears only what happens from now on
            self.server.events.clear()
        self.connected = True

    def close(self):
        self.connected = False

    def cancel(self, pid):
        self._call()
        server = self.server
        server.cancel(pid)
        if server.running is not None and server.running[0] == pid:  # POST /interrupt {"prompt_id": pid}
            server.history[pid] = {
                "prompt": [0, pid, server.running[1], {}, []],
                "outputs": {},
                "status": {"status_str": "error", "messages": [["execution_interrupted", {"prompt_id": pid}]]},
            }
            server.running = None
            server.events.append(("executing", {"node": None, "prompt_id": pid}))

    def event(self, timeout):
        self._call()
        if self.server.events:
            return self.server.events.pop(0)
        self.cluster.advance(timeout)
        return None

    def download(self, image, dest):
        action = self._call()
        data = self.server.files[image["filename"]]
        key = data.decode()
        if self.cluster.done[key]:
            self.cluster.violations.append(f"job {key}: an image downloaded from sim{self.i} after it was done")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        self.server.downloaded.add(key)
        self.cluster.downloads.append((self.i, key))
        self._after(action)
        if self.cluster.crash_after_download:
            self.cluster.crash_after_download -= 1
            if not self.cluster.crash_after_download:
                raise Crash


def options(window: int = 2, server_timeout: float = 10.0) -> Options:
    return Options(window=window, retry_timeout=1e9, server_timeout=server_timeout, poll=5.0, listen_slice=1.0)


def run_cluster(plan, out: Path, cluster: Cluster, window=2, listed=None, server_timeout=10.0, hook=None, runs=None):
    """Run on the cluster's servers (``listed``: their indices, default all); after each crash run again.

    With ``runs`` given, a batch still unfinished after that many runs returns ``(None, state)``.
    """
    limited = runs is not None
    listed = range(len(cluster.servers)) if listed is None else listed
    runs = runs or sum(kind.startswith("crash") for kind, *_ in cluster.script.values()) + 2
    for _ in range(runs):
        clients = [ClusterClient(cluster, i) for i in range(len(cluster.servers))]

        def on_done(job):
            cluster.done[job.key] += 1
            if hook is not None:
                hook(job)

        runner = Runner(
            plan,
            State.load(out),
            [clients[i] for i in listed],
            out,
            options(window, server_timeout),
            Progress(len(plan.jobs), 0, tty=False),
            on_done,
            sleep=cluster.advance,
            clock=cluster.clock,
            make_client=lambda url, clients=clients: clients[int(url.removeprefix("http://sim").split(":")[0])],
        )
        try:
            return runner.run(), State.load(out)
        except Crash:
            continue
    if limited:
        return None, State.load(out)
    raise AssertionError("the batch did not finish")


def check_cluster(plan, out: Path, cluster: Cluster, state: State, summary, failing=frozenset()) -> None:
    """Every job done (or failed as it should) exactly once, with its own image from the server recorded."""
    assert cluster.violations == []
    assert summary.pending == 0 and summary.failed == len(failing)
    urls = [f"http://sim{i}:8188" for i in range(len(cluster.servers))]
    for job in plan.jobs:
        js = state.jobs[job.key]
        if job.number - 1 in failing:
            assert js.status == FAILED and "Saving image outside" in js.error and cluster.done[job.key] == 0
            continue
        assert js.status == DONE and len(js.files) == 1 and cluster.done[job.key] == 1  # marked done once
        assert (out / js.files[0]).read_bytes() == job.key.encode()  # this job's own image
        last = [i for i, key in cluster.downloads if key == job.key][-1]
        assert js.server == urls[last]  # the report names the server whose image is on disk
    images = list((out / "images").iterdir()) if (out / "images").exists() else []
    assert len(images) == len(plan.jobs) - len(failing)


def finish_abandoned(plan, out: Path, cluster: Cluster, failing=frozenset()) -> None:
    """Once every server is back, the same command again settles what was abandoned and repeats nothing
    (but the failed jobs, which it queues again)."""
    cluster.now = max([cluster.now, *cluster.away_until]) + 1
    cluster.script = {}
    executions, downloads = len(cluster.executions()), len(cluster.downloads)
    queued = [[p for p, _ in s.queue] for s in cluster.servers]
    summary, state = run_cluster(plan, out, cluster)
    assert all(js.abandoned == [] for js in state.jobs.values())
    assert len(cluster.downloads) == downloads and all(
        set(after) <= set(before) for before, after in zip(queued, ([p for p, _ in s.queue] for s in cluster.servers))
    )
    for server in cluster.servers:  # what runs now only finishes what was there before
        server.tick()
    assert len(cluster.executions()) <= executions + len(cluster.servers) + len(failing)
    assert cluster.violations == [] and summary.pending == 0


# --------------------------------------------------------------------------------------------------
# Without incidents


def test_jobs_go_to_whichever_server_has_room(tmp_path):
    plan = sim_plan(6)
    cluster = Cluster(3)
    summary, state = run_cluster(plan, tmp_path, cluster, window=1)
    check_cluster(plan, tmp_path, cluster, state, summary)
    assert cluster.peak == [1, 1, 1]
    # window 1 each: the first three jobs start at once on the three servers
    assert [state.jobs[j.key].server for j in plan.jobs[:3]] == [f"http://sim{i}:8188" for i in range(3)]
    assert sorted(len(s.executions) for s in cluster.servers) == [2, 2, 2]
    rows = server_throughput(state, [j.key for j in plan.jobs])
    assert sorted((r["server"], r["jobs"], r["images"]) for r in rows) == [
        (f"http://sim{i}:8188", 2, 2) for i in range(3)
    ]
    assert all(js.attempts == 1 and js.abandoned == [] for js in state.jobs.values())


def test_one_server_is_todays_behaviour_even_past_the_server_timeout(tmp_path, no_fsync):
    """With one server given nothing is queued elsewhere: its jobs wait for it, however long it is away."""
    plan = sim_plan(3)
    cluster = Cluster(1, {4: ("freeze", 0, 300.0)})  # call 4: both jobs of the window are on the server
    summary, state = run_cluster(plan, tmp_path, cluster, server_timeout=1.0)
    check_cluster(plan, tmp_path, cluster, state, summary)
    assert cluster.now > 300 and sorted(cluster.executions()) == sorted(j.key for j in plan.jobs)
    assert all(js.attempts == 1 for js in state.jobs.values())
    # at no time was a job taken off the server or abandoned there: the state moved as with one server before
    for written in no_fsync:
        for js in written["jobs"].values():
            assert js["abandoned"] == [] and js["server"] in (None, "http://sim0:8188")
            assert js["status"] != "pending" or js["attempts"] == 0


# --------------------------------------------------------------------------------------------------
# A server that stops answering


def queued_on(state: State, i: int) -> list[str]:
    return [k for k, js in state.jobs.items() if js.status == QUEUED and js.server == f"http://sim{i}:8188"]


def test_a_partitioned_servers_jobs_go_elsewhere_and_its_late_results_are_not_used(tmp_path):
    plan = sim_plan(6)
    cluster = Cluster(2)
    cut: dict[str, list[str]] = {}

    def partition_sim1(job):  # after the first job: sim1 holds a window of ours; it goes on running them unseen
        if job.number == 1:
            cut["jobs"] = queued_on(State.load(tmp_path), 1)
            cluster.away_until[1], cluster.runs_away[1] = cluster.now + 120, True

    summary, state = run_cluster(plan, tmp_path, cluster, hook=partition_sim1, server_timeout=10.0)
    check_cluster(plan, tmp_path, cluster, state, summary)
    lost = cut["jobs"]
    assert len(lost) == 2
    for key in lost:
        js = state.jobs[key]
        assert js.server == "http://sim0:8188" and js.attempts == 2  # queued once more, on the other server
        assert cluster.servers[1].executions.count(key) == 1  # sim1 finished it too, unseen ...
        assert (1, key) not in cluster.downloads  # ... and its result was never downloaded
    assert cluster.now < 120  # done on sim0 without waiting for sim1
    assert any(js.abandoned for js in state.jobs.values())  # sim1 has not answered again yet
    finish_abandoned(plan, tmp_path, cluster)
    assert len(list((tmp_path / "images").iterdir())) == 6


def test_the_abandoned_prompt_that_finishes_first_is_used_and_the_other_copy_deleted(tmp_path):
    """sim1 freezes with two jobs; they are queued again on sim0, which is busy; sim1 thaws and wins."""
    plan = sim_plan(4)
    cluster = Cluster(2)
    frozen: dict[str, list[str]] = {}

    def freeze_sim1(job):
        if job.number == 1:
            frozen["jobs"] = queued_on(State.load(tmp_path), 1)
            cluster.away_until[1], cluster.runs_away[1] = cluster.now + 15, False
            cluster.stalled_until[0] = cluster.now + 1000  # sim0 runs someone else's long job meanwhile

    summary, state = run_cluster(plan, tmp_path, cluster, hook=freeze_sim1, window=2, server_timeout=5.0)
    check_cluster(plan, tmp_path, cluster, state, summary)
    for key in frozen["jobs"]:
        js = state.jobs[key]
        assert js.server == "http://sim1:8188" and js.attempts == 2  # queued on sim0 too, but sim1 finished first
        assert js.abandoned == []  # sim0's copy was taken off its queue ...
        assert key not in cluster.servers[0].executions  # ... so it never ran
    assert all(prompt_key_of(q) not in frozen["jobs"] for _, q in cluster.servers[0].queue)
    assert cluster.now < 1000


def test_a_server_that_answers_again_before_its_jobs_were_queued_elsewhere_keeps_them(tmp_path):
    """sim1 freezes with a job; past the timeout the job waits for room on sim0 (busy); sim1 thaws: it is kept."""
    plan = sim_plan(3)
    cluster = Cluster(2)
    cluster.stalled_until[0] = 1000.0  # sim0 works on someone else's long job: our job there waits
    held: dict[str, str] = {}

    def freeze_sim1():
        held["job"] = queued_on(State.load(tmp_path), 1)[0]
        cluster.away_until[1], cluster.runs_away[1] = cluster.now + 20, False
        cluster.stalled_until[1] = cluster.now + 60  # back, but still busy when the runner asks it again

    cluster.timeline.append((1.0, freeze_sim1))
    summary, state = run_cluster(plan, tmp_path, cluster, window=1, server_timeout=5.0)
    check_cluster(plan, tmp_path, cluster, state, summary)
    js = state.jobs[held["job"]]
    assert js.server == "http://sim1:8188" and js.attempts == 1  # followed again on sim1, never queued twice
    assert sorted(cluster.executions()) == sorted(j.key for j in plan.jobs)
    assert cluster.peak == [1, 1]  # it counted in sim1's window again: the next job waited for room


def test_a_job_is_never_queued_where_its_abandoned_prompt_may_still_wait(tmp_path):
    """The job's copy on sim1 is lost in a restart while its abandoned prompt still waits on sim0: it goes to sim1."""
    plan = sim_plan(1)
    cluster = Cluster(2)
    cluster.stalled_until[0] = cluster.stalled_until[1] = 1000.0  # both busy with other work: ours wait
    cluster.timeline += [
        (1.0, lambda: freeze(cluster, 0, 16.0)),  # sim0 holds the job (pid0) and stops answering
        (20.0, cluster.servers[1].restart),  # sim1, which got the job's second copy, restarts and forgets it
    ]
    summary, state = run_cluster(plan, tmp_path, cluster, window=1, server_timeout=5.0)
    check_cluster(plan, tmp_path, cluster, state, summary)  # no violation: never queued twice on sim0
    assert state.jobs[plan.jobs[0].key].attempts == 3 and cluster.servers[1].restarts == 1


def freeze(cluster: Cluster, i: int, seconds: float) -> None:
    cluster.away_until[i], cluster.runs_away[i] = cluster.now + seconds, False


def prompt_key_of(prompt: dict) -> str:
    from palette_queue.jobs import prompt_key

    return prompt_key(prompt)


def test_a_killed_server_comes_back_empty_and_its_jobs_run_elsewhere_once(tmp_path):
    plan = sim_plan(6)
    cluster = Cluster(3)

    def kill_sim2(job):
        if job.number == 2:
            cluster.servers[2].restart()
            cluster.away_until[2], cluster.runs_away[2] = cluster.now + 30, False

    summary, state = run_cluster(plan, tmp_path, cluster, hook=kill_sim2, window=1, server_timeout=8.0)
    check_cluster(plan, tmp_path, cluster, state, summary)
    assert sorted(set(cluster.executions())) == sorted(j.key for j in plan.jobs)
    assert len(cluster.executions()) <= len(plan.jobs) + 1  # at most the one job sim2 lost ran twice
    assert all(js.abandoned == [] for js in state.jobs.values()) or cluster.now < 30
    finish_abandoned(plan, tmp_path, cluster)


def stop_after_first(job):
    if job.number == 1:
        raise Crash


def test_a_job_on_a_server_left_out_of_the_next_run_is_collected_from_it(tmp_path):
    """Run 1 queues on sim0 and sim1 and dies; run 2 is given sim0 only: sim1's job is taken from sim1."""
    plan = sim_plan(2)
    cluster = Cluster(2)
    summary, state = run_cluster(plan, tmp_path, cluster, window=1, hook=stop_after_first, runs=1)
    on_sim1 = queued_on(state, 1)  # the run died after job 1 was done, with job 2 queued on sim1
    assert summary is None and len(on_sim1) == 1
    summary, state = run_cluster(plan, tmp_path, cluster, listed=[0])
    check_cluster(plan, tmp_path, cluster, state, summary)
    assert state.jobs[on_sim1[0]].server == "http://sim1:8188" and state.jobs[on_sim1[0]].attempts == 1
    assert sorted(cluster.executions()) == sorted(j.key for j in plan.jobs)  # nothing ran twice


def test_a_job_on_an_unreachable_server_left_out_is_queued_again_after_the_timeout(tmp_path):
    plan = sim_plan(2)
    cluster = Cluster(2)
    summary, state = run_cluster(plan, tmp_path, cluster, window=1, hook=stop_after_first, runs=1)
    assert summary is None and len(queued_on(state, 1)) == 1
    cluster.away_until[1], cluster.runs_away[1] = cluster.now + 1e6, False  # that machine is gone
    summary, state = run_cluster(plan, tmp_path, cluster, listed=[0], server_timeout=20.0)
    check_cluster(plan, tmp_path, cluster, state, summary)
    assert all(js.server == "http://sim0:8188" for js in state.jobs.values())
    assert sum(bool(js.abandoned) for js in state.jobs.values()) == 1 and cluster.now < 100


def test_without_a_way_to_reach_a_server_of_the_state_file_its_job_is_queued_again(tmp_path):
    plan = sim_plan(1)
    state = State.load(tmp_path)
    js = state.job(plan.jobs[0].key, 1, "j0")
    js.status, js.prompt_id, js.server, js.attempts = QUEUED, "p-old", "http://gone:8188", 1
    state.save()
    cluster = Cluster(1)
    runner = Runner(
        plan,
        State.load(tmp_path),
        [ClusterClient(cluster, 0)],
        tmp_path,
        options(server_timeout=5.0),
        Progress(1, 0, tty=False),
        sleep=cluster.advance,
        clock=cluster.clock,
    )
    assert runner.run().done == 1
    js = State.load(tmp_path).jobs[plan.jobs[0].key]
    assert js.server == "http://sim0:8188" and js.attempts == 2 and 5.0 <= cluster.now < 40
    assert js.abandoned == [{"server": "http://gone:8188", "prompt_id": "p-old", "queued_at": None}]


def test_images_downloaded_before_a_crash_are_not_run_again_when_their_server_goes_away(tmp_path):
    """The CLI died between downloading and recording; then that server stopped answering: the job is done."""
    plan = sim_plan(1)
    cluster = Cluster(2)
    cluster.crash_after_download = 1
    summary, state = run_cluster(plan, tmp_path, cluster, runs=1)
    js = next(iter(state.jobs.values()))
    assert summary is None and js.status == QUEUED and js.files and (tmp_path / js.files[0]).exists()
    server = int(js.server.removeprefix("http://sim").split(":")[0])
    cluster.away_until[server], cluster.runs_away[server] = cluster.now + 1e6, False
    summary, state = run_cluster(plan, tmp_path, cluster, server_timeout=5.0)
    check_cluster(plan, tmp_path, cluster, state, summary)
    assert len(cluster.executions()) == 1 and state.jobs[plan.jobs[0].key].abandoned == []


# --------------------------------------------------------------------------------------------------
# The state file


def test_a_version_1_state_file_resumes_on_one_server(tmp_path):
    """A state file from before several servers: the queued job is asked on the server given, not run again."""
    plan = sim_plan(2)
    cluster = Cluster(1)
    server = cluster.servers[0]
    first, second = plan.jobs
    server.submit(copy.deepcopy(first.prompt), "p-first")
    server.tick(), server.tick()  # it ran while the old CLI was dead
    (tmp_path / STATE_FILE).write_text(
        json.dumps(
            {
                "version": 1,
                "client_id": "c1",
                "jobs": {
                    first.key: {
                        "number": 1,
                        "name": "j0",
                        "status": "queued",
                        "prompt_id": "p-first",
                        "attempts": 1,
                        "files": [],
                        "error": None,
                    }
                },
            }
        )
    )
    summary, state = run_cluster(plan, tmp_path, cluster)
    check_cluster(plan, tmp_path, cluster, state, summary)
    assert state.client_id == "c1" and state.jobs[first.key].attempts == 1
    assert server.executions == [first.key, second.key]
    assert json.loads((tmp_path / STATE_FILE).read_text())["version"] == 2
    assert state.jobs[first.key].server == "http://sim0:8188"


def test_abandoned_prompts_survive_a_crash_in_the_state_file(tmp_path):
    plan = sim_plan(4)
    cluster = Cluster(2)
    marked = {}

    def freeze_then_crash(job):
        if job.number == 1:
            cluster.away_until[1], cluster.runs_away[1] = cluster.now + 40, False
        js_abandoned = [js for js in State.load(tmp_path).jobs.values() if js.abandoned]
        if js_abandoned and "crashed" not in marked:
            marked["crashed"] = [dict(a) for js in js_abandoned for a in js.abandoned]
            raise Crash

    summary, state = run_cluster(plan, tmp_path, cluster, hook=freeze_then_crash, server_timeout=5.0, runs=3)
    check_cluster(plan, tmp_path, cluster, state, summary)
    assert marked["crashed"] and all(a["server"] == "http://sim1:8188" for a in marked["crashed"])
    finish_abandoned(plan, tmp_path, cluster)


TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
OPTIONAL_TIME = st.one_of(st.none(), st.floats(0, 2e9, allow_nan=False))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    jobs=st.dictionaries(
        st.text("0123456789abcdef", min_size=1, max_size=16),
        st.fixed_dictionaries(
            {
                "number": st.integers(0, 10**6),
                "name": TEXT,
                "status": st.sampled_from([PENDING, QUEUED, DONE, FAILED]),
                "prompt_id": st.one_of(st.none(), TEXT),
                "attempts": st.integers(0, 50),
                "files": st.lists(TEXT, max_size=3),
                "error": st.one_of(st.none(), TEXT),
                "server": st.one_of(st.none(), TEXT),
                "abandoned": st.lists(
                    st.fixed_dictionaries({"server": TEXT, "prompt_id": TEXT, "queued_at": OPTIONAL_TIME}), max_size=3
                ),
                "queued_at": OPTIONAL_TIME,
                "finished_at": OPTIONAL_TIME,
                "run_seconds": OPTIONAL_TIME,
            }
        ),
        max_size=5,
    )
)
def test_the_state_file_reads_back_what_was_written(tmp_path_factory, jobs):
    folder = tmp_path_factory.mktemp("state")
    state = State.load(folder)
    for key, fields in jobs.items():
        js = state.job(key)
        for name, value in fields.items():
            setattr(js, name, copy.deepcopy(value))
    state.save()
    back = State.load(folder)
    assert back.client_id == state.client_id and back.jobs == state.jobs
    assert json.loads((folder / STATE_FILE).read_text())["version"] == 2


def test_state_file_errors(tmp_path):
    (tmp_path / STATE_FILE).write_text(json.dumps({"version": 3, "jobs": {}}))
    with pytest.raises(Exception, match=r"state file version 3, expected one of \(1, 2\)"):
        State.load(tmp_path)
    bad = {"version": 2, "jobs": {"k": {"abandoned": [{"server": "http://a"}]}}}
    (tmp_path / STATE_FILE).write_text(json.dumps(bad))
    with pytest.raises(Exception, match="unreadable state file.*abandoned prompts need a server and a prompt_id"):
        State.load(tmp_path)


def test_run_seconds_from_the_history_timestamps():
    entry = {
        "status": {
            "messages": [
                ["execution_start", {"timestamp": 1_000_000}],
                ["execution_cached", {"timestamp": 1_000_010}],
                ["execution_success", {"timestamp": 1_002_500}],
            ]
        }
    }
    assert run_seconds(entry) == 2.5
    assert run_seconds({"status": {"messages": [["execution_start", {"timestamp": 5}]]}}) is None
    assert run_seconds({}) is None


def test_server_throughput_sums_per_server():
    state = State(Path("unused"))
    for key, server, t0, t1, busy, files in [
        ("a", "http://g1", 100.0, 110.0, 4.0, 1),
        ("b", "http://g1", 105.0, 130.0, 6.0, 2),
        ("c", "http://g2", 100.0, 160.0, None, 1),
        ("d", "http://g2", 100.0, 100.0, 1.0, 1),
    ]:
        js = state.job(key)
        js.status, js.server, js.queued_at, js.finished_at, js.run_seconds = DONE, server, t0, t1, busy
        js.files = [f"{key}{i}.png" for i in range(files)]
    state.job("e").status = FAILED
    rows = {r["server"]: r for r in server_throughput(state, ["a", "b", "c", "d", "e"])}
    assert rows["http://g1"] == {
        "server": "http://g1",
        "jobs": 2,
        "images": 3,
        "busy_s": 10.0,
        "wall_s": 30.0,
        "jobs_per_min": 4.0,
    }
    assert rows["http://g2"]["busy_s"] == 1.0 and rows["http://g2"]["jobs_per_min"] == 2.0
    assert set(rows) == {"http://g1", "http://g2"}


# --------------------------------------------------------------------------------------------------
# Any sequence of crashes and server incidents


# PALETTE_QUEUE_EXAMPLES=2000 searches longer (a few minutes)
@settings(
    max_examples=int(os.environ.get("PALETTE_QUEUE_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    servers=st.integers(2, 3),
    n=st.integers(1, 6),
    window=st.integers(1, 2),
    failing=st.frozensets(st.integers(0, 5), max_size=2),
    script=st.dictionaries(
        st.integers(1, 60),  # a clean run of up to 6 jobs makes 10 to 50 calls
        st.tuples(
            st.sampled_from(["crash", "crash_after", "lost_reply", *INCIDENTS]),
            st.integers(0, 2),
            st.sampled_from([2.0, 12.0, 60.0]),
        ),
        max_size=6,
    ),
    tick_seed=st.integers(0, 2**16),
)
@example(servers=2, n=4, window=2, failing=frozenset(), script={6: ("partition", 1, 60.0)}, tick_seed=0)
@example(servers=2, n=4, window=2, failing=frozenset({1}), script={6: ("freeze", 1, 12.0)}, tick_seed=3)
def test_any_crash_or_server_incident_loses_nothing_and_repeats_nothing(
    tmp_path_factory, servers, n, window, failing, script, tick_seed
):
    failing = frozenset(i for i in failing if i < n)
    out = tmp_path_factory.mktemp("cluster")
    plan = sim_plan(n, failing)
    cluster = Cluster(servers, script, random.Random(tick_seed))
    summary, state = run_cluster(plan, out, cluster, window=window, server_timeout=10.0)
    check_cluster(plan, out, cluster, state, summary, failing)
    crashes = sum(kind.startswith("crash") for kind, *_ in script.values())
    incidents = sum(cluster.incidents.values())
    # a job runs again only when an incident took its server (or a failure was retried after a crash)
    assert len(cluster.executions()) <= n + incidents * window + crashes * len(failing)
    finish_abandoned(plan, out, cluster, failing)


# --------------------------------------------------------------------------------------------------
# Command line


def cli_inputs(tmp_path: Path) -> list[str]:
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("seed\n1\n")
    return [str(COLORIZE), str(jobs), "--out", str(tmp_path / "out")]


@pytest.mark.parametrize(
    ("extra", "file_text", "message"),
    [
        (["--server", "127.0.0.1:9", "--server", "http://127.0.0.1:9/"], None, "is given twice (also --server"),
        (["--server", "ftp://x"], None, "--server ftp://x: server URL 'ftp://x': expected http://host:port"),
        ([], "127.0.0.1:9\n# a comment\n\n127.0.0.1:9  # again\n", "servers.txt line 4: http://127.0.0.1:9 is given"),
        ([], "# nothing\n", "no addresses in it"),
        (["--server-timeout", "-1"], None, "--server-timeout -1.0: must be >= 0"),
    ],
)
def test_bad_server_lists_exit_2_before_anything(tmp_path, capsys, extra, file_text, message):
    args = cli_inputs(tmp_path) + extra
    if file_text is not None:
        (tmp_path / "servers.txt").write_text(file_text)
        args += ["--server-file", str(tmp_path / "servers.txt")]
    assert cli.main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_server_list_from_options_and_file(tmp_path, monkeypatch):
    (tmp_path / "servers.txt").write_text("gpu2:8188  # the second box\n\nhttps://gpu3.example/comfy/\n")
    args = cli.build_parser().parse_args(
        [*cli_inputs(tmp_path), "--server", "gpu1:8188", "--server-file", str(tmp_path / "servers.txt")]
    )
    assert cli.server_list(args) == ["http://gpu1:8188", "http://gpu2:8188", "https://gpu3.example/comfy"]
    monkeypatch.delenv("COMFYUI_URL", raising=False)
    assert cli.server_list(cli.build_parser().parse_args(cli_inputs(tmp_path))) == ["http://127.0.0.1:8188"]
    monkeypatch.setenv("COMFYUI_URL", "box:8000/")
    assert cli.server_list(cli.build_parser().parse_args(cli_inputs(tmp_path))) == ["http://box:8000"]


def test_every_server_unreachable_exits_3_with_the_state_kept(tmp_path, capsys):
    args = [*cli_inputs(tmp_path), "--server", "127.0.0.1:9", "--server", "127.0.0.1:7", "--retry-timeout", "0"]
    assert cli.main(args) == 3
    err = capsys.readouterr().err
    assert "gave up after 0 s without any of the 2 servers" in err and "run the same command again" in err
    js = next(iter(State.load(tmp_path / "out").jobs.values()))
    assert js.status == PENDING and js.attempts == 0


# --------------------------------------------------------------------------------------------------
# Report


def test_the_report_names_each_jobs_server_and_each_servers_throughput(tmp_path):
    from PIL import Image

    from palette_queue.report import write_reports

    plan = sim_plan(3)
    state = State.load(tmp_path)
    for job, server, t0, t1 in zip(plan.jobs, ["http://g1", "http://g2", "http://g1"], [0.0, 0.0, 30.0], [30, 45, 60]):
        js = state.job(job.key, job.number, job.name)
        js.status, js.server, js.queued_at, js.finished_at, js.run_seconds = DONE, server, t0, t1, 5.0
        js.files = [f"images/{job.number}.png"]
        (tmp_path / "images").mkdir(exist_ok=True)
        Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / js.files[0])
    paths = write_reports(plan, state, tmp_path, "wf.api.json", "jobs.jsonl", thumb=32)
    rows = json.loads(paths["json"].read_text())
    assert [r["server"] for r in rows] == ["http://g1", "http://g2", "http://g1"]
    assert "server" in paths["csv"].read_text().splitlines()[0].split(",")
    md = paths["md"].read_text()
    assert "| http://g1 | 2 | 2 | 10.0 | 60.0 | 2.00 |" in md  # 2 jobs in the 60 s from first queued to last done
    assert "| http://g2 | 1 | 1 | 5.0 | 45.0 | 1.33 |" in md
    assert "| job | name | status | image | seed | palette EMD | server |" in md
    assert "| 2 | j1 | done | [2.png](images/2.png) |  | " in md and md.count("| http://g2 |") == 2
