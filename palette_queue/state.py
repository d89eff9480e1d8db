"""The resume state: one JSON file in the output folder, rewritten atomically after every change.

A job is known by its key (the hash of its patched prompt). Its status moves
``pending -> queued -> done | failed``; ``queued`` is written, with a prompt id made here, *before*
``POST /prompt``, so a crash at any point leaves an id that the server can be asked about:

* in the server's queue (pending or running)  -> wait for it;
* in the server's history, success            -> download its images (again) and mark it done;
* in the server's history, error              -> mark it failed with the server's message;
* in neither (never sent, or the server restarted and lost its queue and history) -> queue it again.

A job marked done (its images are on disk) is never queued again.

With several servers each queued job also records its server. A job whose server stopped answering for
longer than --server-timeout is queued again elsewhere; the prompt left behind is kept in ``abandoned``
(server and prompt id) until that server is seen again: a result it sends is used only if it is the
job's first completion, and otherwise never downloaded, and a copy still waiting there is deleted
(docs/batch.md, "Several servers"). Version 1 files (one server, no such fields) are read as well.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path

from .errors import QueueInputError

STATE_FILE = "queue_state.json"
LOCK_FILE = ".palette_queue.lock"
VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: before several servers; its jobs lack the server fields, which default
PENDING, QUEUED, DONE, FAILED = "pending", "queued", "done", "failed"
WAIT, FINISH, FAIL, REQUEUE = "wait", "finish", "fail", "requeue"


@dataclass
class JobState:
    """What is known about one job across runs."""

    key: str
    number: int = 0
    name: str = ""
    status: str = PENDING
    prompt_id: str | None = None
    attempts: int = 0
    files: list[str] = field(default_factory=list)
    error: str | None = None
    server: str | None = None  # where prompt_id was sent; once done, the server that ran the job
    abandoned: list[dict[str, str]] = field(default_factory=list)  # {"server", "prompt_id"} given up on
    queued_at: float | None = None  # unix time prompt_id was sent
    finished_at: float | None = None  # unix time the job was marked done
    run_seconds: float | None = None  # the server's own time for the prompt (its history timestamps)


JOB_FIELDS = tuple(f.name for f in fields(JobState) if f.name != "key")  # the key is the entry's name


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so a reader (or a crash) sees the old file or the new one, never a mix."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:  # name the file being written, not the temporary one, which is removed
        tmp.unlink(missing_ok=True)
        raise OSError(e.errno, f"cannot write {path}: {e.strerror}") from None
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on the output folder: two runs on one folder could queue a job twice."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here; one run per folder is the user's care
        yield
        return
    with open(folder / LOCK_FILE, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise QueueInputError(f"{folder}: another palette_queue run is using this folder; wait for it") from None
        yield


class State:
    """The state file of one output folder: the websocket client id and each job's JobState."""

    def __init__(self, path: Path, client_id: str | None = None, jobs: dict[str, JobState] | None = None):
        self.path = path
        self.client_id = client_id or uuid.uuid4().hex
        self.jobs: dict[str, JobState] = jobs or {}

    @classmethod
    def load(cls, folder: Path) -> State:
        """The state in ``folder`` (a fresh one when there is none yet)."""
        path = folder / STATE_FILE
        if not path.exists():
            return cls(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("version") not in READABLE_VERSIONS:
                raise QueueInputError(
                    f"{path}: state file version {data.get('version')!r}, expected one of {READABLE_VERSIONS} "
                    "(written by a newer palette-queue?)"
                )
            jobs = {k: JobState(key=k, **{f: v for f, v in j.items() if f != "key"}) for k, j in data["jobs"].items()}
            for js in jobs.values():
                if not all(isinstance(a.get(f), str) for a in js.abandoned for f in ("server", "prompt_id")):
                    raise TypeError(f"job {js.key}: abandoned prompts need a server and a prompt_id")
            return cls(path, data.get("client_id"), jobs)
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise QueueInputError(
                f"{path}: unreadable state file ({e}); move it away to start the batch afresh "
                "(finished images stay in the folder)"
            ) from None

    def save(self) -> None:
        """Rewrite the state file atomically (write a temporary file, then rename it over the old one).

        One job a line, each compact: it is rewritten after every change, so its cost grows with the batch
        (json's C encoder, used without ``indent``, and no deep copy of each job).
        """
        head = json.dumps({"version": VERSION, "client_id": self.client_id})[:-1]
        lines = [
            f"{json.dumps(k)}: {json.dumps({f: getattr(j, f) for f in JOB_FIELDS}, separators=(',', ':'))}"
            for k, j in self.jobs.items()
        ]
        text = head + ', "jobs": {\n' + ",\n".join(lines) + "\n}}\n"
        write_atomic(self.path, text.encode("utf-8"))

    def job(self, key: str, number: int = 0, name: str = "") -> JobState:
        """The job's state, created as pending when the job is new; its row number and name are refreshed."""
        js = self.jobs.setdefault(key, JobState(key))
        js.number, js.name = number or js.number, name or js.name
        return js


def failure_message(entry: dict) -> str:
    """The server's reason for a failed history entry (the exception message of execution_error)."""
    for event, data in (entry.get("status") or {}).get("messages") or []:
        if event == "execution_error":
            msg = str(data.get("exception_message", "")).strip() or data.get("exception_type", "error")
            return f"{data.get('node_type', '?')} (node {data.get('node_id', '?')}): {msg}"
        if event == "execution_interrupted":
            return f"interrupted on the server at node {data.get('node_id', '?')} ({data.get('node_type', '?')})"
    return f"failed on the server (status {json.dumps(entry.get('status'))[:200]})"


def run_seconds(entry: dict) -> float | None:
    """The server's time for a prompt: ``execution_start`` to its end event, from the history's timestamps (ms)."""
    stamps = {}
    for message in (entry.get("status") or {}).get("messages") or []:
        if isinstance(message, list) and len(message) == 2 and isinstance(message[1], dict):
            stamp = message[1].get("timestamp")
            if isinstance(stamp, (int, float)) and not isinstance(stamp, bool):
                stamps[message[0]] = stamp
    ends = [stamps[e] for e in ("execution_success", "execution_error", "execution_interrupted") if e in stamps]
    end = ends[0] if ends else None
    if "execution_start" not in stamps or end is None or end < stamps["execution_start"]:
        return None
    return (end - stamps["execution_start"]) / 1000.0


def reconcile(prompt_id: str | None, in_queue: bool, entry: dict | None) -> tuple[str, str | None]:
    """What to do with a queued job, given the server's queue and its history entry (see the module doc)."""
    if prompt_id is not None and in_queue:
        return WAIT, None
    if prompt_id is None or entry is None:
        return REQUEUE, None
    if (entry.get("status") or {}).get("status_str") == "success":
        return FINISH, None
    return FAIL, failure_message(entry)


def output_images(entry: dict) -> list[dict]:
    """The saved images of a history entry (``type == "output"``, i.e. SaveImage), in node order."""

    def order(nid: str):
        return (0, int(nid), "") if nid.isdigit() else (1, 0, nid)

    images = []
    for nid in sorted(entry.get("outputs") or {}, key=order):
        for image in entry["outputs"][nid].get("images") or []:
            if image.get("type") == "output":
                images.append({"node": nid, **image})
    return images


def server_throughput(state: State, keys: list[str]) -> list[dict]:
    """Per server, over the done jobs among ``keys``: jobs, images, busy and wall seconds, jobs per minute.

    ``busy_s`` sums the server's own time for each prompt (its history timestamps); ``wall_s`` runs from
    the first of these jobs queued there to the last one finished, and ``jobs_per_min`` is jobs / wall_s.
    Jobs done before servers were recorded (a version 1 state file) count under the server ``""``.
    """
    groups: dict[str, list[JobState]] = {}
    for key in keys:
        js = state.jobs.get(key)
        if js is not None and js.status == DONE:
            groups.setdefault(js.server or "", []).append(js)
    rows = []
    for server, done in groups.items():
        busy = [j.run_seconds for j in done if j.run_seconds is not None]
        starts = [j.queued_at for j in done if j.queued_at is not None]
        ends = [j.finished_at for j in done if j.finished_at is not None]
        wall = max(ends) - min(starts) if starts and ends and max(ends) > min(starts) else None
        rows.append(
            {
                "server": server,
                "jobs": len(done),
                "images": sum(len(j.files) for j in done),
                "busy_s": round(sum(busy), 3) if busy else None,
                "wall_s": round(wall, 3) if wall is not None else None,
                "jobs_per_min": round(60.0 * len(done) / wall, 3) if wall else None,
            }
        )
    return rows
