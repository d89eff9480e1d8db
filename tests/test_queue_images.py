"""``image`` cells of a jobs file are untrusted: only decodable images inside the images folder are uploaded.

The folder is the jobs file's own, or --images-dir. Everything is refused before anything is queued,
with the line and the column; a FIFO is refused without being opened for a blocking read.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from palette_queue import cli
from palette_queue.errors import QueueInputError
from palette_queue.jobs import plan_jobs, read_jobs
from palette_queue.workflow import load_prompt

REPO = Path(__file__).resolve().parents[1]
COLORIZE = REPO / "example_workflows" / "api" / "colorize_with_palette.api.json"  # LoadImage is node 2


def png(path: Path, colour=(10, 20, 30), size=(4, 4)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def plan(folder: Path, cells: list[str], images_dir: Path | None = None):
    jobs = folder / "jobs.jsonl"
    jobs.write_text("".join(json.dumps({"image": c, "seed": i}) + "\n" for i, c in enumerate(cells)))
    return plan_jobs(load_prompt(COLORIZE), read_jobs(jobs), jobs, images_dir)


def refusal(folder: Path, cells: list[str], images_dir: Path | None = None) -> list[str]:
    with pytest.raises(QueueInputError) as caught:
        plan(folder, cells, images_dir)
    return str(caught.value).splitlines()


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    """tmp/secret.png and tmp/passwd outside; tmp/batch/ holds the jobs file, in.png and sub/in2.png."""
    png(tmp_path / "secret.png", (255, 0, 0))
    (tmp_path / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    base = tmp_path / "batch"
    png(base / "in.png")
    png(base / "sub" / "in2.png", (40, 50, 60))
    return base


def test_images_inside_the_folder_are_uploaded_under_their_content_name(layout):
    p = plan(layout, ["in.png", "sub/in2.png", str(layout / "in.png"), "./sub/../in.png", "on_server.png"])
    names = [job.prompt["2"]["inputs"]["image"] for job in p.jobs]
    digest = hashlib.sha256((layout / "in.png").read_bytes()).hexdigest()[:16]
    assert names[0] == names[2] == names[3] == f"palette_queue_{digest}.png"  # one file, one name
    assert names[1] != names[0] and names[4] == "on_server.png"  # no local file: a name in the server's input
    assert p.jobs[0].uploads == {names[0]: (layout / "in.png").resolve()} and p.jobs[4].uploads == {}


def test_paths_outside_the_folder_are_refused_with_line_and_column(layout):
    (layout / "link.png").symlink_to(layout.parent / "secret.png")
    cells = ["../secret.png", str(layout.parent / "secret.png"), "link.png", "../../../../../etc/passwd", "/etc/passwd"]
    lines = refusal(layout, ["in.png", *cells])
    where = f"{layout / 'jobs.jsonl'} line"
    assert lines == [
        f"{where} 2, column 'image': '../secret.png' is outside the images folder ({layout}, the jobs file's "
        "folder): put the image in that folder, or name the folder that holds the images with --images-dir",
        f"{where} 3, column 'image': {str(layout.parent / 'secret.png')!r} is outside the images folder "
        f"({layout}, the jobs file's folder): put the image in that folder, or name the folder that holds the "
        "images with --images-dir",
        f"{where} 4, column 'image': 'link.png' is outside the images folder ({layout}, the jobs file's folder): "
        "put the image in that folder, or name the folder that holds the images with --images-dir",
        f"{where} 5, column 'image': '../../../../../etc/passwd' is outside the images folder ({layout}, the jobs "
        "file's folder): put the image in that folder, or name the folder that holds the images with --images-dir",
        f"{where} 6, column 'image': '/etc/passwd' is outside the images folder ({layout}, the jobs file's "
        "folder): put the image in that folder, or name the folder that holds the images with --images-dir",
    ]


def test_files_that_are_not_images_are_refused(layout):
    (layout / "notes.png").write_text("not an image")
    data = (layout / "in.png").read_bytes()
    big = png(layout / "big.png", size=(300, 300))
    (layout / "cut.png").write_bytes(big.read_bytes()[: len(big.read_bytes()) // 2])
    (layout / "passwd").write_text("root:x:0:0\n")
    (layout / "folder.png").mkdir()
    (layout / "empty.png").write_bytes(b"")
    lines = refusal(layout, ["notes.png", "cut.png", "passwd", "folder.png", "empty.png", "missing/../../x.png"])
    assert [line.split(", ", 1)[1] for line in lines] == [
        "column 'image': 'notes.png': not an image (expected a PNG, JPEG, WebP, BMP, TIFF or GIF file)",
        "column 'image': 'cut.png': cannot read the image: image file is truncated",
        "column 'image': 'passwd': not an image (expected a PNG, JPEG, WebP, BMP, TIFF or GIF file)",
        "column 'image': 'folder.png': is a folder: expected a regular file",
        "column 'image': 'empty.png': not an image (expected a PNG, JPEG, WebP, BMP, TIFF or GIF file)",
        f"column 'image': 'missing/../../x.png': no such image in the images folder ({layout}, the jobs file's folder)",
    ]
    assert (layout / "in.png").read_bytes() == data


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes (POSIX)")
def test_a_fifo_is_refused_without_blocking(layout):
    fifo = layout / "pipe.png"
    os.mkfifo(fifo)
    result: list = []
    worker = threading.Thread(target=lambda: result.append(refusal(layout, ["pipe.png"])), daemon=True)
    worker.start()
    worker.join(30)
    if worker.is_alive():  # blocked opening the FIFO: unblock it (a writer that closes at once) and fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("reading the FIFO blocked")
    assert result[0][0].endswith("column 'image': 'pipe.png': is a FIFO (named pipe): expected a regular file")


def test_images_dir_names_the_folder_instead_of_the_jobs_files(layout, tmp_path):
    photos = tmp_path / "photos"
    png(photos / "a.png", (1, 2, 3))
    p = plan(layout, ["a.png", str(photos / "a.png")], images_dir=photos)
    assert {next(iter(j.uploads.values())) for j in p.jobs} == {(photos / "a.png").resolve()}
    beside = plan(layout, ["in.png"], images_dir=photos).jobs[0]  # beside the jobs file, not in --images-dir:
    assert beside.uploads == {} and beside.prompt["2"]["inputs"]["image"] == "in.png"  # a name on the server
    assert refusal(layout, ["../batch/in.png"], images_dir=photos) == [
        f"{layout / 'jobs.jsonl'} line 1, column 'image': '../batch/in.png' is outside the images folder "
        f"(--images-dir {photos}): put the image in that folder, or name the folder that holds the images with "
        "--images-dir"
    ]
    with pytest.raises(QueueInputError, match="--images-dir .*nowhere: not a folder"):
        plan(layout, ["a.png"], images_dir=tmp_path / "nowhere")


def test_the_cli_refuses_before_queueing(layout, capsys):
    (layout / "jobs.csv").write_text("image,seed\nin.png,1\n../secret.png,2\n")
    out = layout / "out"
    args = [
        str(COLORIZE),
        str(layout / "jobs.csv"),
        "--out",
        str(out),
        "--server",
        "127.0.0.1:9",
        "--retry-timeout",
        "0",
    ]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "jobs.csv line 3, column 'image': '../secret.png' is outside the images folder" in err
    assert not out.exists()  # nothing written, nothing queued (the server address is a closed port)
    (layout / "jobs.csv").write_text("image,seed\nbatch/in.png,1\nsecret.png,2\n")  # the same two, from the parent
    assert cli.main([*args, "--images-dir", str(layout.parent), "--dry-run"]) == 0
    assert "2 jobs" in capsys.readouterr().out


SEGMENTS = ["..", ".", "sub", "in.png", "in2.png", "secret.png", "out.png", "inlink.png", "batch", "passwd"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=5), absolute=st.booleans())
def test_no_cell_uploads_a_file_outside_the_folder(tmp_path_factory, parts, absolute):
    root = tmp_path_factory.mktemp("walk")
    png(root / "secret.png", (255, 0, 0))
    (root / "passwd").write_text("root:x:0:0\n")
    base = root / "batch"
    png(base / "in.png")
    png(base / "sub" / "in2.png", (40, 50, 60))
    (base / "out.png").symlink_to(root / "secret.png")
    (base / "sub" / "inlink.png").symlink_to(base / "in.png")
    cell = "/".join(parts)
    if absolute:
        cell = str(base / cell)
    target = Path(os.path.realpath(base / cell))
    inside = target.is_relative_to(base.resolve())
    try:
        p = plan(base, [cell])
    except QueueInputError as e:
        message = str(e)
        if os.path.lexists(base / cell) and not inside:
            assert "is outside the images folder" in message
        elif not os.path.lexists(base / cell):
            assert "no such image" in message and (absolute or ".." in parts)
        else:  # inside, but a folder or not an image
            assert "is a folder" in message or "not an image" in message
        return
    uploads = p.jobs[0].uploads
    if uploads:
        (local,) = uploads.values()
        assert local == target and inside and local.suffix == ".png" and local.name in ("in.png", "in2.png")
    else:  # left as a name on the server: only a relative path without '..' that names no local file
        assert not os.path.lexists(base / cell) and not absolute and ".." not in parts
