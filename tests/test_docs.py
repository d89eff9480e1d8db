"""Every command and repository file that README.md and docs/ name exists, so a reader's copy-paste works.

Commands of the pack's own CLIs are parsed by their real argparse parsers (the subcommand and every flag must
be accepted); scripts must exist and define every ``--flag`` the docs pass them; paths under the repository's
own folders and relative Markdown links must exist. Placeholders (``<command>``, ``...``, ``[--opt]``) are
read as what they stand for.
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import re
import shlex
from pathlib import Path

import pytest

import palette_cli.main as core_cli
from palette_queue import cli as queue_cli

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").glob("*.md"))]
if (REPO / "CONTRIBUTING.md").is_file():
    DOCS.append(REPO / "CONTRIBUTING.md")
TOP = sorted(p.name for p in REPO.iterdir() if p.is_dir() and not p.name.startswith("."))
PATH_RE = re.compile(rf"(?<![\w./-])((?:{'|'.join(map(re.escape, TOP))})/[\w./*-]*)")
LINK_RE = re.compile(r"\]\(([^)\s]+)\)")
FENCE_RE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
SPAN_RE = re.compile(r"`([^`\n]+)`")


def code_of(text: str) -> list[tuple[str, bool]]:
    """``(line, fenced)``: lines of the fenced blocks (backslash continuations joined), then inline code spans."""
    lines = [(line, True) for block in FENCE_RE.findall(text) for line in block.replace("\\\n", " ").splitlines()]
    lines += [(span, False) for span in SPAN_RE.findall(FENCE_RE.sub("", text))]
    return [(line.strip().removeprefix("$ "), fenced) for line, fenced in lines if line.strip()]


def ignored(path: str) -> bool:
    """Whether git ignores ``path`` (outputs the docs name, such as a run's folder): the .gitignore patterns."""
    parts = path.strip("/").split("/")
    for pattern in (REPO / ".gitignore").read_text().split():
        pat = pattern.strip("/")
        if pattern.startswith("/") or "/" in pat:
            if path.strip("/") == pat or path.startswith(pat + "/"):
                return True
        elif any(fnmatch.fnmatch(part, pat) for part in parts):
            return True
    return False


def commands_in(line: str) -> list[list[str]]:
    """The shell commands of one line, as argument lists (``&&`` chains split; comments dropped)."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return []
    out, cur = [], []
    for w in words:
        if w in ("&&", "||", ";", "|"):
            out.append(cur)
            cur = []
        else:
            cur.append(w)
    return [c for c in [*out, cur] if c]


def concrete(args: list[str]) -> list[str] | None:
    """Arguments with ``[--opt x]`` brackets opened and ``...`` dropped; None when a ``<placeholder>`` remains."""
    out = []
    for a in args:
        a = a.strip("[]")
        if a in ("", "...", "\u2026") or a.endswith(("...", "\u2026")):
            continue
        if a.startswith("<"):
            return None
        out.append(a)
    return out


def cli_of(cmd: list[str]):
    """(parser, arguments) when ``cmd`` runs one of the pack's own command lines, else None."""
    if cmd[:1] == ["palette"]:
        return core_cli.build_parser(), cmd[1:]
    if cmd[:1] == ["palette-queue"]:
        return queue_cli.build_parser(), cmd[1:]
    if len(cmd) >= 3 and cmd[0] in ("python", "python3") and cmd[1] == "-m":
        if cmd[2] == "palette_core":
            return core_cli.build_parser(), cmd[3:]
        if cmd[2] == "palette_queue":
            return queue_cli.build_parser(), cmd[3:]
    return None


def doc_items() -> list[tuple[str, str, bool]]:
    """``(doc, line, fenced)`` for every code line of every doc."""
    return [
        (doc.relative_to(REPO).as_posix(), line, fenced)
        for doc in DOCS
        for line, fenced in code_of(doc.read_text("utf-8"))
    ]


@pytest.mark.parametrize("doc", [d.relative_to(REPO).as_posix() for d in DOCS])
def test_relative_links_resolve(doc):
    path = REPO / doc
    for target in LINK_RE.findall(path.read_text("utf-8")):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        assert (path.parent / target.split("#")[0]).exists(), f"{doc}: the link {target} leads nowhere"


def test_named_repository_paths_exist():
    missing = []
    for doc, line, _ in doc_items():
        for p in PATH_RE.findall(line):
            p = p.rstrip(".,:")
            if not p or ignored(p) or any(REPO.glob(p)) or (REPO / p).exists():
                continue
            missing.append(f"{doc}: {p}")
    assert not missing, "paths named in the docs that the repository lacks:\n" + "\n".join(sorted(set(missing)))


def test_commands_of_the_pack_clis_parse():
    checked, bad = 0, []
    for doc, line, fenced in doc_items():
        for cmd in commands_in(line):
            found = cli_of(cmd)
            if found is None:
                continue
            parser, args = found
            args = concrete(args)
            if args is None or not args:  # "python -m palette_core <command>": the program itself is enough
                continue
            # Prose names a command without its required arguments ("`... adapter init` writes ..."): there
            # the command path must exist (--help then exits 0); a fenced line must parse as it stands.
            if not fenced:
                args = [*args, "--help"]
            try:
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    parser.parse_args(args)
            except SystemExit as e:
                if e.code != 0:
                    bad.append(f"{doc}: {line}")
            checked += 1
    assert checked >= 15, f"only {checked} commands found: the extraction is broken"
    assert not bad, "documented commands the CLI refuses:\n" + "\n".join(bad)


SCRIPT_RUNNERS = {"python", "python3", "bash", "node", "sh"}


def test_scripts_exist_and_take_the_documented_flags():
    checked, bad = 0, []
    for doc, line, _ in doc_items():
        for cmd in commands_in(line):
            if cmd[0] not in SCRIPT_RUNNERS or len(cmd) < 2 or cmd[1].startswith("-") and cmd[1] != "--test":
                continue
            target = cmd[2] if cmd[1] == "--test" and len(cmd) > 2 else cmd[1]
            if not re.search(r"\.(py|sh|mjs|js)$|/$", target) or target.startswith("<"):
                continue
            matches = list(REPO.glob(target)) or ([REPO / target] if (REPO / target).exists() else [])
            if not matches:
                bad.append(f"{doc}: {target} does not exist ({line})")
                continue
            checked += 1
            if target.endswith(".py"):
                source = matches[0].read_text("utf-8")
                for flag in (a.split("=")[0].strip("[]") for a in cmd[2:] if a.lstrip("[").startswith("--")):
                    if f'"{flag}"' not in source and f"'{flag}'" not in source:
                        bad.append(f"{doc}: {target} has no option {flag}")
    assert checked >= 8, f"only {checked} script commands found: the extraction is broken"
    assert not bad, "\n".join(bad)


def test_pytest_and_npm_paths_exist():
    bad = []
    for doc, line, _ in doc_items():
        for cmd in commands_in(line):
            if cmd[:3] in (["python", "-m", "pytest"], ["python3", "-m", "pytest"]):
                bad += [f"{doc}: {a}" for a in cmd[3:] if not a.startswith("-") and not (REPO / a).exists()]
            if cmd[:2] == ["npm", "install"] and "--prefix" in cmd:
                prefix = cmd[cmd.index("--prefix") + 1]
                if not (REPO / prefix / "package.json").is_file():
                    bad.append(f"{doc}: {prefix}/package.json")
    assert not bad, "\n".join(bad)
