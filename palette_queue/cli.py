"""``palette-queue WORKFLOW.api.json JOBS.csv --out DIR``: run a workflow once per job row.

Installed by ``pip install`` as ``palette-queue``; ``python -m palette_queue`` runs the same from the
repository. The report (palette EMD, contact sheet) needs torch; it is imported only to write it. Following
the jobs needs websocket-client (the extra "queue"); --dry-run needs neither.

``--server`` may be given several times (or ``--server-file`` names a file of addresses): jobs go to
whichever server has room in its window, and the jobs of a server that does not answer for
``--server-timeout`` seconds are queued again on the others (docs/batch.md, "Several servers").

Exit status: 0 when every job is done; 1 when some job failed (on the server or rejected by it); 2 for
bad arguments, bad input or a missing package (found before anything is queued); 3 when no server answered
for longer than --retry-timeout, or one answered something unusable or is not ComfyUI; 130 on Ctrl-C.
After 1, 3 or 130, running the same command again resumes: finished jobs are skipped, unfinished ones are
followed or queued again.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from palette_core.errors import is_missing_torch, torch_missing_message

from .client import ComfyClient, default_server, normalize_url, websocket_client
from .errors import NotComfyUI, QueueInputError, ServerError, ServerUnavailable
from .jobs import Job, Plan, plan_jobs, read_jobs
from .runner import Options, Progress, Runner
from .state import STATE_FILE, State, folder_lock, server_throughput
from .workflow import describe, load_prompt

log = logging.getLogger("palette_queue")

PROG = "palette-queue"
EXAMPLE = """example:
  %(prog)s example_workflows/api/colorize_with_palette.api.json jobs.csv --out runs/colorize

jobs.csv:
  name,palette,seed,prompt
  teal,"#264653, #2a9d8f, #e9c46a",1,a colour photograph
  sunset,#e76f51:3 #f4a261 #264653,2,a colour photograph at dusk

several servers (jobs go to whichever has room; a server that stops answering has its jobs queued
again on the others after --server-timeout):
  %(prog)s wf.api.json jobs.csv --out runs/big --server http://gpu1:8188 --server http://gpu2:8188

friendly columns: prompt, negative_prompt, palette, negative_palette, seed, steps, cfg, denoise, width,
height, weight (ApplyPaletteAdapter), negative_weight (NegativePalette), strength, image (LoadImage; a file in
the jobs file's folder or --images-dir is checked and uploaded), name (a label only); any other input as
'<node id>.<input>' or '<node title>.<input>'.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The argument parser; ``prog`` is the program name that usage and errors show."""
    p = _Parser(
        prog=prog,
        description="Queue an API-format ComfyUI workflow once per row of a CSV/JSONL jobs file, download the "
        "images, resume after crashes or server restarts, and report each image's palette EMD.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "workflow", help="the workflow in API format (Workflow > Export (API)), e.g. example_workflows/*.api.json"
    )
    p.add_argument("jobs", help="jobs file: .csv with a header line, .jsonl (one object per line) or .json (a list)")
    p.add_argument("--out", "-o", required=True, help="output folder: images/, the state file and the report")
    p.add_argument(
        "--server",
        action="append",
        metavar="URL",
        help=f"ComfyUI address; give it several times to spread the jobs over several servers "
        f"(default $COMFYUI_URL or {default_server()})",
    )
    p.add_argument(
        "--server-file",
        metavar="FILE",
        help="a text file of ComfyUI addresses, one a line (# starts a comment), used with any --server",
    )
    p.add_argument(
        "--images-dir",
        metavar="DIR",
        help="the folder that 'image' cells may name files in (default: the jobs file's folder)",
    )
    p.add_argument("--dry-run", action="store_true", help="check the jobs and print the column mapping; queue nothing")
    p.add_argument("--window", type=int, default=2, help="jobs of ours on the server at once (default %(default)s)")
    p.add_argument(
        "--retry-timeout",
        type=float,
        default=600.0,
        help="seconds to keep retrying while no server answers (default %(default)s)",
    )
    p.add_argument(
        "--server-timeout",
        type=float,
        default=120.0,
        help="with several servers: seconds one may not answer before its jobs are queued again on the others; "
        "also the longest wait for one answer of it, at most 30 s (default %(default)s)",
    )
    p.add_argument("--skip-failed", action="store_true", help="do not queue again jobs that failed in an earlier run")
    p.add_argument("--no-report", action="store_true", help="skip the report and the contact sheet")
    p.add_argument("--thumb", type=int, default=192, help="contact-sheet thumbnail size (default %(default)s)")
    p.add_argument("--quiet", "-q", action="store_true", help="only warnings and errors")
    return p


def load_plan(workflow: str, jobs: str, images_dir: str | None = None) -> Plan:
    """Read and check the workflow and the jobs file; QueueInputError with every problem found."""
    prompt = load_prompt(workflow)
    return plan_jobs(prompt, read_jobs(jobs), jobs, images_dir)


def mapping_lines(plan: Plan) -> list[str]:
    """``column -> '7.seed' (KSampler 'KSampler')`` for each mapped column."""
    prompt = plan.jobs[0].prompt
    return [f"  {c} -> {', '.join(describe(prompt, t) for t in ts)}" for c, ts in plan.mapping.items()]


def run(args: argparse.Namespace, on_job_done: Callable[[Job], None] | None = None, tty: bool | None = None) -> int:
    """Run the batch described by parsed arguments; returns the exit status (see the module doc)."""
    plan = load_plan(args.workflow, args.jobs, args.images_dir)
    print(f"{len(plan.jobs)} jobs; columns:", *mapping_lines(plan), sep="\n")
    if args.dry_run:
        for job in plan.jobs:
            print(f"  {job.label}: key {job.key}" + (f", palette {job.palette}" if job.palette else ""))
        return 0
    websocket_client()  # a missing optional package is found before anything is queued, like torch below
    reporter = None if args.no_report else _report_writer()
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise QueueInputError(f"{out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    with folder_lock(out):
        return _run_locked(args, plan, out, on_job_done, tty, reporter)


def _report_writer() -> Callable[..., dict[str, Path]]:
    """``write_reports``, imported before anything is queued: it needs torch, and no torch is bad input."""
    try:
        from .report import write_reports
    except ModuleNotFoundError as e:
        if not is_missing_torch(e):
            raise
        raise QueueInputError(f"{torch_missing_message('the report')}; or pass --no-report to skip it") from None
    return write_reports


def server_list(args: argparse.Namespace) -> list[str]:
    """The addresses of --server and --server-file, normalised, in order; QueueInputError for a bad or repeated one."""
    given = [(f"--server {u}", u) for u in args.server or []]
    if args.server_file:
        path = Path(args.server_file)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise QueueInputError(f"--server-file {path}: cannot read it ({e})") from None
        for n, line in enumerate(text.splitlines(), start=1):
            address = line.split("#", 1)[0].strip()
            if address:
                given.append((f"{path} line {n}", address))
        if not given:
            raise QueueInputError(f"--server-file {path}: no addresses in it (one a line, # starts a comment)")
    if not given:
        given = [("the default server", default_server())]
    seen: dict[str, str] = {}
    for where, address in given:
        try:
            url = normalize_url(address)
        except QueueInputError as e:
            raise QueueInputError(f"{where}: {e}") from None
        if url in seen:
            raise QueueInputError(f"{where}: {url} is given twice (also {seen[url]})")
        seen[url] = where
    return list(seen)


def _run_locked(
    args: argparse.Namespace,
    plan: Plan,
    out: Path,
    on_job_done: Callable[[Job], None] | None,
    tty: bool | None,
    reporter: Callable[..., dict[str, Path]] | None,
) -> int:
    state = State.load(out)
    urls = server_list(args)
    # with several servers one hung request must not hold the others up for longer than a server may be away
    timeout = 30.0 if len(urls) == 1 else max(2.0, min(30.0, args.server_timeout))
    clients = [ComfyClient(url, state.client_id, timeout) for url in urls]
    options = Options(
        window=args.window,
        retry_timeout=args.retry_timeout,
        server_timeout=args.server_timeout,
        retry_failed=not args.skip_failed,
    )
    already = sum(state.jobs.get(j.key) is not None and state.jobs[j.key].status == "done" for j in plan.jobs)
    progress = Progress(len(plan.jobs), already, tty)
    runner = Runner(
        plan,
        state,
        clients,
        out,
        options,
        progress,
        on_job_done=on_job_done,
        make_client=lambda url: ComfyClient(url, state.client_id, timeout),
    )
    if already:
        print(f"resuming: {already} of {len(plan.jobs)} jobs already done ({out / STATE_FILE})")
    try:
        summary = runner.run()
    finally:
        if reporter is not None:
            paths = reporter(plan, state, out, args.workflow, args.jobs, args.thumb)
            print("report:", *(str(p) for p in paths.values()))
    print(f"{summary.done} done, {summary.failed} failed, {summary.pending} not finished, of {summary.total} jobs")
    if len(urls) > 1:
        for row in server_throughput(state, [j.key for j in plan.jobs]):
            rate = "" if row["jobs_per_min"] is None else f", {row['jobs_per_min']:.1f} jobs/min"
            print(f"  {row['server']}: {row['jobs']} jobs, {row['images']} images{rate}")
    return 0 if summary.ok else 1


def _check_args(args: argparse.Namespace) -> None:
    if args.window < 1:
        raise QueueInputError(f"--window {args.window}: must be at least 1")
    if args.thumb < 16:
        raise QueueInputError(f"--thumb {args.thumb}: must be at least 16 pixels")
    if args.retry_timeout < 0:
        raise QueueInputError(f"--retry-timeout {args.retry_timeout}: must be >= 0")
    if args.server_timeout < 0:
        raise QueueInputError(f"--server-timeout {args.server_timeout}: must be >= 0")
    server_list(args)  # a bad or repeated address is bad input, found before anything is written


def main(argv: Sequence[str] | None = None, on_job_done: Callable[[Job], None] | None = None, prog: str = PROG) -> int:
    """Entry point run as ``prog``; ``on_job_done`` is a hook for tests (called after each job's images are saved)."""
    args = build_parser(prog).parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr
    )
    tty = sys.stderr.isatty()
    redirect = contextlib.nullcontext()
    if tty:
        with contextlib.suppress(ImportError):
            from tqdm.contrib.logging import logging_redirect_tqdm

            redirect = logging_redirect_tqdm()
    try:
        _check_args(args)
        with redirect:
            return run(args, on_job_done, tty)
    except QueueInputError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except NotComfyUI as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 3
    except (ServerUnavailable, ServerError) as e:
        print(f"{prog}: server error: {e}\nthe state is saved: run the same command again to resume", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
