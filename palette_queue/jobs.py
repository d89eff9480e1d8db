"""Jobs files (CSV, JSONL or a JSON list) and the batch plan: one patched, validated prompt per row.

Everything here runs before the first job is queued, so every problem in the jobs file or the mapping
is reported at once, with file, line and column, and nothing reaches the server.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from palette_core.errors import PaletteError
from palette_core.palette import Palette

from .errors import MappingError, QueueInputError
from .workflow import Target, coerce, is_link, patch, resolve_columns, resolve_friendly

JOB_SUFFIXES = (".csv", ".jsonl", ".ndjson", ".json")
MAX_LISTED_PROBLEMS = 20


@dataclass
class JobRow:
    """One row of a jobs file: its first line number and its non-empty cells (CSV cells as text)."""

    line: int
    values: dict[str, object]


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise QueueInputError(f"{path}: no such jobs file") from None
    except IsADirectoryError:
        raise QueueInputError(f"{path}: is a folder: expected a .csv or .jsonl jobs file") from None
    except UnicodeDecodeError as e:
        raise QueueInputError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def parse_csv(text: str, where: str = "jobs.csv") -> list[JobRow]:
    """Rows of a CSV with a header line; empty cells mean 'keep the workflow's value'."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None or not any(h.strip() for h in header):
            raise QueueInputError(f"{where}: empty file: expected a header line such as 'name,palette,seed'")
        header = [h.strip() for h in header]
        dupes = sorted({h for h in header if header.count(h) > 1})
        if dupes:
            raise QueueInputError(f"{where} line 1: column {dupes[0]!r} appears more than once in the header")
        if "" in header:
            raise QueueInputError(f"{where} line 1: column {header.index('') + 1} has no name")
        rows = []
        start = reader.line_num + 1
        for cells in reader:
            if cells and any(c.strip() for c in cells):
                if len(cells) != len(header):
                    raise QueueInputError(
                        f"{where} line {start}: {len(cells)} fields, the header has {len(header)} "
                        '(quote cells that contain commas: "a, b")'
                    )
                rows.append(JobRow(start, {h: c for h, c in zip(header, cells) if c != ""}))
            start = reader.line_num + 1
    except csv.Error as e:
        raise QueueInputError(f"{where} line {reader.line_num}: {e}") from None
    return rows


def _check_object(obj: object, where: str) -> dict[str, object]:
    if not isinstance(obj, dict):
        raise QueueInputError(f'{where}: expected a JSON object {{"column": value}}, got {type(obj).__name__}')
    for key, value in obj.items():
        if isinstance(value, dict) or (isinstance(value, list) and not all(isinstance(x, str) for x in value)):
            raise QueueInputError(f"{where}: column {key!r}: expected text, a number, a boolean or a list of text")
    return {k: v for k, v in obj.items() if v is not None}


def parse_jsonl(text: str, where: str = "jobs.jsonl") -> list[JobRow]:
    """Rows of a JSON-lines file: one object per line; blank lines are skipped, null means 'keep'."""
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise QueueInputError(f"{where} line {n}: not valid JSON ({e.msg} at column {e.colno})") from None
        rows.append(JobRow(n, _check_object(obj, f"{where} line {n}")))
    return rows


def parse_json_list(text: str, where: str = "jobs.json") -> list[JobRow]:
    """Rows of a JSON file holding a list of objects (row numbers stand in for line numbers)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise QueueInputError(f"{where}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    if not isinstance(data, list):
        raise QueueInputError(f"{where}: expected a JSON list of job objects (or use .jsonl, one per line)")
    return [JobRow(i, _check_object(obj, f"{where} job {i}")) for i, obj in enumerate(data, start=1)]


def read_jobs(path: str | Path) -> list[JobRow]:
    """The rows of a jobs file, by its suffix: .csv, .jsonl/.ndjson, or .json (a list)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in JOB_SUFFIXES:
        raise QueueInputError(f"{path}: unknown jobs file type {suffix or '(none)'!r}; use {', '.join(JOB_SUFFIXES)}")
    text = _read_text(path)
    rows = {".csv": parse_csv, ".json": parse_json_list}.get(suffix, parse_jsonl)(text, str(path))
    if not rows:
        raise QueueInputError(f"{path}: no jobs in the file")
    return rows


def prompt_key(prompt: dict) -> str:
    """A job's identity: the SHA-256 of the patched prompt's canonical JSON (its first 16 hex digits).

    Node titles (``_meta``) are left out: the server ignores them, so renaming a node is not a new job.
    """
    bare = {nid: {k: v for k, v in node.items() if k != "_meta"} for nid, node in prompt.items()}
    canonical = json.dumps(bare, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def slug(text: str, limit: int = 40) -> str:
    """A file-name-safe form of a job name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:limit] or "job"


@dataclass
class Job:
    """One job of the plan: its row, its fields as given, the patched prompt and its key."""

    number: int
    line: int
    name: str
    fields: dict[str, object]
    prompt: dict
    key: str
    palette: str | None = None
    seed: int | None = None
    uploads: dict[str, Path] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """How the job is named in messages."""
        return f"job {self.number} ({self.name})" if self.name else f"job {self.number}"


@dataclass
class Plan:
    """The batch: the jobs and where each column writes."""

    jobs: list[Job]
    mapping: dict[str, list[Target]]
    palette_target: Target | None
    seed_target: Target | None


def _optional_target(prompt: dict, column: str, mapping: dict[str, list[Target]]) -> Target | None:
    if column in mapping:
        return mapping[column][0]
    try:
        return resolve_friendly(prompt, column)[0]
    except MappingError:
        return None


def _upload_name(path: Path) -> str:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return f"palette_queue_{digest}{path.suffix.lower()}"


def _local_image(value: str, base: Path) -> Path | None:
    for candidate in (Path(value), base / value):
        if candidate.is_file():
            return candidate
    return None


def plan_jobs(prompt: dict, rows: list[JobRow], jobs_file: str | Path = "jobs") -> Plan:
    """Resolve the columns, patch one prompt per row, check palettes and values, and refuse duplicate jobs."""
    jobs_file = Path(jobs_file)
    columns = list(dict.fromkeys(c for row in rows for c in row.values))
    mapping = resolve_columns(prompt, columns)
    palette_target = _optional_target(prompt, "palette", mapping)
    seed_target = _optional_target(prompt, "seed", mapping)
    palette_targets = {t for c in ("palette", "negative_palette") for t in mapping.get(c, [])}
    palette_targets |= {t for ts in mapping.values() for t in ts if prompt[t.node_id]["class_type"] == "PaletteInput"}
    problems: list[str] = []
    jobs: list[Job] = []
    seen: dict[str, Job] = {}
    for number, row in enumerate(rows, start=1):
        where = f"{jobs_file} line {row.line}"
        values: dict[Target, object] = {}
        uploads: dict[str, Path] = {}
        try:
            for column, raw in row.values.items():
                for target in mapping.get(column, []):
                    current = prompt[target.node_id]["inputs"][target.input]
                    value = coerce(raw, current, f"{where}, column {column!r}")
                    if target in palette_targets:
                        try:
                            Palette.parse(value)
                        except PaletteError as e:
                            raise QueueInputError(f"{where}, column {column!r}: bad palette: {e}") from None
                    if column == "image" and (local := _local_image(str(value), jobs_file.parent)) is not None:
                        value = _upload_name(local)
                        uploads[value] = local
                    values[target] = value
        except QueueInputError as e:
            problems.append(str(e))
            continue
        patched = patch(prompt, values)
        key = prompt_key(patched)
        name = str(row.values.get("name", ""))
        job = Job(number, row.line, name, dict(row.values), patched, key, uploads=uploads)
        if palette_target is not None and not is_link(patched[palette_target.node_id]["inputs"][palette_target.input]):
            job.palette = str(patched[palette_target.node_id]["inputs"][palette_target.input])
        if seed_target is not None:
            job.seed = patched[seed_target.node_id]["inputs"][seed_target.input]
        if key in seen:
            problems.append(
                f"{where}: the same job as line {seen[key].line} (same prompt after patching): remove one or make "
                "them differ (e.g. a seed column)"
            )
            continue
        seen[key] = job
        jobs.append(job)
    if problems:
        more = len(problems) - MAX_LISTED_PROBLEMS
        listed = problems[:MAX_LISTED_PROBLEMS] + ([f"... and {more} more"] if more > 0 else [])
        raise QueueInputError("\n".join(listed))
    return Plan(jobs, mapping, palette_target, seed_target)
