"""Jobs files (CSV, JSONL or a JSON list) and the batch plan: one patched, validated prompt per row.

Everything here runs before the first job is queued, so every problem in the jobs file or the mapping
is reported at once, with file, line and column, and nothing reaches the server.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from palette_core.errors import PaletteError
from palette_core.image_file import ImageFileError, check_image, read_regular
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
    if path.is_dir():
        raise QueueInputError(f"{path}: is a folder: expected a .csv or .jsonl jobs file")
    if not path.exists():
        raise QueueInputError(f"{path}: no such jobs file")
    try:
        return read_regular(path, "jobs file").decode("utf-8-sig")  # a FIFO or a device is refused, not read
    except ImageFileError as e:
        raise QueueInputError(str(e)) from None
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


def upload_name(data: bytes, suffix: str) -> str:
    """The name an image is uploaded under: made from its content, so a changed file is a new job."""
    return f"palette_queue_{hashlib.sha256(data).hexdigest()[:16]}{suffix.lower()}"


def is_inside(path: Path, folder: Path) -> bool:
    """True when ``path``, with every symbolic link followed, lies inside ``folder``."""
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):  # RuntimeError: a symbolic link loop
        return False


class ImageCells:
    """The ``image`` cells of a jobs file: local files under one folder, checked once each.

    A jobs file is untrusted: a cell may name only a file inside ``folder`` (the jobs file's own folder, or
    --images-dir), symbolic links followed, and the file must decode as an image; a cell naming no local
    file is left as the name of a file already in the server's input folder, unless it could only be a
    local path (absolute, or with '..').
    """

    def __init__(self, folder: Path, named: bool = False):
        self.folder = folder
        shown = os.path.abspath(folder)
        self.origin = f"--images-dir {shown}" if named else f"{shown}, the jobs file's folder"
        self._checked: dict[Path, str] = {}

    def local(self, value: str) -> Path | None:
        """The checked local file ``value`` names, or None for a name on the server; QueueInputError otherwise."""
        path = Path(value)
        candidate = path if path.is_absolute() else self.folder / path
        try:
            present = os.path.lexists(candidate)
        except (OSError, ValueError):  # a name no file can have: too long, a NUL byte
            present = False
        hint = "put the image in that folder, or name the folder that holds the images with --images-dir"
        if not present:
            if path.is_absolute() or ".." in path.parts:
                raise QueueInputError(f"{value!r}: no such image in the images folder ({self.origin})")
            return None
        if not is_inside(candidate, self.folder):
            raise QueueInputError(f"{value!r} is outside the images folder ({self.origin}): {hint}")
        return candidate.resolve()

    def upload_name(self, local: Path, value: str) -> str:
        """The upload name of a checked file (decoded once per file; ImageFileError says what is wrong)."""
        if local not in self._checked:
            try:
                data = check_image(local)
            except ImageFileError as e:
                raise QueueInputError(f"{value!r}: {str(e).removeprefix(f'{local}: ')}") from None
            self._checked[local] = upload_name(data, local.suffix)
        return self._checked[local]


def plan_jobs(
    prompt: dict, rows: list[JobRow], jobs_file: str | Path = "jobs", images_dir: str | Path | None = None
) -> Plan:
    """Resolve the columns, patch one prompt per row, check palettes, values and images, and refuse duplicate jobs.

    ``image`` cells may name files inside ``images_dir`` only (default: the jobs file's folder).
    """
    jobs_file = Path(jobs_file)
    if images_dir is not None and not Path(images_dir).is_dir():
        raise QueueInputError(f"--images-dir {images_dir}: not a folder")
    images = ImageCells(Path(images_dir) if images_dir is not None else jobs_file.parent, images_dir is not None)
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
                    if column == "image":
                        try:
                            local = images.local(str(value))
                            if local is not None:
                                value = images.upload_name(local, str(value))
                                uploads[value] = local
                        except QueueInputError as e:
                            raise QueueInputError(f"{where}, column {column!r}: {e}") from None
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
