"""The command line, ``python -m palette_core``: outputs and exit codes, run as a user would (subprocess).

A few error paths that need no subprocess of their own are checked in-process through ``cli.main``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import palette_cli.main as cli
from palette_core.formats import load_palette

REPO = Path(__file__).resolve().parents[1]
SQRT2 = math.sqrt(2.0)


# One torch thread per subprocess: on a shared, oversubscribed machine OpenMP spin-waiting makes the
# one-off bin-similarity build of distance/evaluate up to 10x slower with two threads than with one.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "palette_core", *map(str, args)],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )


def assert_clean_error(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """Images whose scores are known in closed form, plus a broken one and palette files."""
    d = tmp_path_factory.mktemp("cli")
    images = d / "images"
    images.mkdir()
    halves = np.zeros((32, 32, 3), np.uint8)
    halves[:, :16] = (255, 0, 0)
    halves[:, 16:] = (0, 0, 255)
    Image.fromarray(halves).save(images / "a_halves.png")
    Image.fromarray(np.full((20, 24, 3), (0, 255, 0), np.uint8)).save(images / "b_green.png")
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 0] = 255  # red under a fully transparent alpha: alpha is dropped, the pixels count as red
    Image.fromarray(rgba, "RGBA").save(images / "c_red_transparent.png")
    (images / "d_broken.png").write_bytes(b"this is not a png")
    (images / "notes.md").write_text("not an image extension: ignored")
    noise = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(d / "noise.jpg", quality=90)
    (d / "rb.gpl").write_text("GIMP Palette\n255 0 0 red\n0 0 255 blue\n")
    (d / "text.txt").write_text("hello, not a palette\n")
    return d


# --------------------------------------------------------------------------------------------------
# Subprocess: the real entry point


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("extract", "histogram", "distance", "convert", "evaluate"):
        assert command in out


def test_histogram_prints_entropy_and_top_bins_and_plots(files, tmp_path):
    plot = tmp_path / "hist.png"
    proc = run("histogram", files / "images" / "a_halves.png", "--plot", plot)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "32x32 pixels" in out
    assert "entropy        1.000 bits" in out  # two colours, half each
    assert "occupied bins  2 of 4080" in out
    # red is bin (0, 11, 9) = 119 and blue bin (22, 11, 9) = 2759, 50.0% each
    assert "bin  119" in out and "bin 2759" in out and out.count("50.0%") == 2
    with Image.open(plot) as im:
        assert im.format == "PNG" and im.width > 400


def test_distance_between_an_image_and_a_palette_file(files):
    same = run("distance", files / "images" / "a_halves.png", files / "rb.gpl")
    assert same.returncode == 0, same.stderr
    assert same.stdout.strip() == "0.000000"  # the image's histogram is exactly the palette's


def test_distance_between_palette_texts_in_process(capsys):
    from palette_core.distance import quadratic_chi
    from palette_core.palette import Palette

    assert cli.main(["distance", "#00ff00", "https://coolors.co/ff0000-0000ff"]) == 0
    expected = float(quadratic_chi(Palette.parse("#0f0").histogram(), Palette.parse("#f00, #00f").histogram()))
    assert capsys.readouterr().out.strip() == f"{expected:.6f}"
    assert expected > 0.5


def test_convert_between_formats(files, tmp_path):
    ase, js = tmp_path / "p.ase", tmp_path / "p.json"
    proc = run("convert", "https://coolors.co/264653-2a9d8f-e9c46a", ase)
    assert proc.returncode == 0, proc.stderr
    assert "3 colours" in proc.stdout and ase.read_bytes()[:4] == b"ASEF"
    proc = run("convert", ase, js)
    assert proc.returncode == 0, proc.stderr
    assert [c["hex"] for c in json.loads(js.read_text())] == ["#264653", "#2a9d8f", "#e9c46a"]


def test_evaluate_folder_scores_report_and_plot(files, tmp_path):
    report, plot = tmp_path / "report.csv", tmp_path / "report.png"
    palette = "#ff0000, #0000ff"
    proc = run("evaluate", "--images", files / "images", "--palette", palette, "--out", report, "--plot", plot)
    assert proc.returncode == 0, proc.stderr
    assert "d_broken.png" in proc.stderr and "skipped" in proc.stderr  # unreadable: skipped with a warning
    rows = {Path(r["image"]).name: r for r in csv.DictReader(report.open())}
    assert sorted(rows) == ["a_halves.png", "b_green.png", "c_red_transparent.png"]
    emd = {k: float(r["palette_emd"]) for k, r in rows.items()}
    qc = {k: float(r["quadratic_chi"]) for k, r in rows.items()}
    # Closed forms: green is sqrt(2) from red and from blue; all-red must move half its mass to blue.
    assert emd["b_green.png"] == pytest.approx(SQRT2, abs=1e-6)
    assert emd["c_red_transparent.png"] == pytest.approx(SQRT2 / 2, abs=1e-6)
    assert emd["a_halves.png"] < 0.06  # only the 1024-pixel sampling noise of a perfect match
    assert qc["a_halves.png"] == pytest.approx(0.0, abs=1e-6)
    assert qc["b_green.png"] > qc["c_red_transparent.png"] > 0
    values = list(emd.values())
    assert f"palette_emd    {np.mean(values):.4f} ± {np.std(values):.4f}" in proc.stdout
    assert "(3 images, 1 unreadable skipped)" in proc.stdout
    with Image.open(plot) as im:
        assert im.format == "PNG" and im.height > im.width / 3


def test_evaluate_palettes_csv(files, tmp_path):
    table = tmp_path / "pairs.csv"
    images = files / "images"
    table.write_text(
        f'image,palette\n{images / "b_green.png"},"#00ff00"\n{images / "a_halves.png"},{files / "rb.gpl"}\n'
    )
    proc = run("evaluate", "--palettes", table)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[1].split() == ["b_green.png", "0.0000", "0.0000"]
    assert lines[2].split()[0] == "a_halves.png" and float(lines[2].split()[2]) == 0.0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("histogram", "{files}/images/d_broken.png"), "d_broken.png: not an image"),
        (("convert", "{files}/text.txt", "{files}/out.gpl"), 'line 1: "hello" is not a colour'),
    ],
)
def test_bad_input_exits_2_with_one_line(files, args, needle):
    assert_clean_error(run(*(a.format(files=files) for a in args)), needle)


def test_extract_text_and_files(files, tmp_path):
    # 256 x 256: extraction resamples to 256 x 256 first, so these pixels reach it unblended
    halves = tmp_path / "halves.png"
    pixels = np.zeros((256, 256, 3), np.uint8)
    pixels[:, :128] = (255, 0, 0)
    pixels[:, 128:] = (0, 0, 255)
    Image.fromarray(pixels).save(halves)
    proc = run("extract", halves, "--size", "2", "--method", "median-cut")
    assert proc.returncode == 0, proc.stderr
    assert sorted(proc.stdout.strip().split(", ")) == ["#0000ff", "#ff0000"]  # equal shares: no weights
    gpl = tmp_path / "x.gpl"
    proc = run("extract", halves, "--size", "2", "--out", gpl)
    assert proc.returncode == 0, proc.stderr
    assert sorted(load_palette(gpl).hex) == ["#0000ff", "#ff0000"]
    proc = run("extract", files / "noise.jpg", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    shares = [c["weight"] for c in json.loads(proc.stdout)]
    assert len(shares) == 5 and shares == sorted(shares, reverse=True) and sum(shares) == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------------
# In-process: more error paths through cli.main (same code, no interpreter start-up per case)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["histogram", "{files}/missing.png"], "missing.png: cannot read the image"),
        (["distance", "{files}/noise.jpg", "#12345g"], '"#12345g" is not a colour'),
        (["evaluate", "--images", "{files}/images"], "give --images DIR with --palette P"),
        (["histogram", "{files}/images"], "is a folder"),
        (["distance", "{files}/missing.png", "#fff"], "missing.png: no such image file"),
        (["distance", "{files}/missing.gpl", "#fff"], "missing.gpl: cannot read"),
        (["convert", "#fff, #000", "{files}/x.aco"], 'cannot write ".aco" files'),
        (["convert", "#fff", "{files}/no/such/dir/x.gpl"], "No such file or directory"),
        (["extract", "{files}/noise.jpg", "--format", "ase"], "--format ase is binary: give --out FILE.ase"),
        (["extract", "{files}/noise.jpg", "--out", "{files}/p.xyz"], 'cannot tell the format from ".xyz"'),
        (["evaluate", "--images", "{files}/noise.jpg", "--palette", "#fff"], "not a folder"),
        (["evaluate", "--images", "{files}/empty", "--palette", "#fff"], "no images"),
        (["evaluate", "--palettes", "{files}/rb.gpl"], "line 1: expected a header with the columns image,palette"),
        (["evaluate", "--palettes", "{files}/bad.csv"], "bad.csv: line 3: "),
        (["evaluate", "--palettes", "{files}/x.csv", "--images", "{files}"], "not both"),
        (["extract", "{files}/noise.jpg", "--size", "300"], "argument --size: 300 colours"),
        ([], "the following arguments are required: command"),
        (["extract", "{files}/noise.jpg", "--method", "octree"], "argument --method: invalid choice"),
    ],
)
def test_errors_in_process(files, capsys, argv, needle):
    (files / "bad.csv").write_text('image,palette\nimages/a_halves.png,"#fff"\nimages/b_green.png,"#ggg"\n')
    (files / "empty").mkdir(exist_ok=True)
    try:
        code = cli.main([a.format(files=files) for a in argv])
    except SystemExit as e:  # argparse exits from inside parse_args
        code = e.code
    err = capsys.readouterr().err
    assert code == 2
    assert needle in err and len(err.strip().splitlines()) == 1, err


def test_evaluate_without_tqdm_and_relative_csv_paths(files, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm -> ImportError: the plain counter is used
    table = files / "rel.csv"
    table.write_text("Image,Palette,comment\nimages/b_green.png,rb.gpl,relative to the CSV\n")
    out = tmp_path / "r.csv"
    assert cli.main(["evaluate", "--palettes", str(table), "--out", str(out)]) == 0
    row = next(csv.DictReader(out.open()))
    assert float(row["palette_emd"]) == pytest.approx(SQRT2, abs=1e-6)
    assert row["palette"] == "#ff0000, #0000ff"
    assert "± 0.0000" in capsys.readouterr().out


def test_adapter_init_writes_an_untrained_sdxl_adapter(tmp_path):
    from palette_core.adapter import load_adapter, read_adapter_metadata

    out = tmp_path / "untrained.safetensors"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "palette_core",
            "adapter",
            "init",
            "--out",
            str(out),
            "--blocks",
            "mid_block.attentions.0",
            "--seed",
            "3",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert r.returncode == 0, r.stderr
    assert "untrained" in r.stdout
    announced = float(re.search(r"writing .*: (\d+) MB", r.stdout).group(1))
    assert abs(announced - out.stat().st_size / 1e6) <= 1  # the size is said before the file is written
    assert read_adapter_metadata(out)["trained_steps"] == "0"
    assert load_adapter(out).blocks == ["mid_block.attentions.0"]
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "palette_core",
            "adapter",
            "init",
            "--out",
            str(tmp_path / "x.safetensors"),
            "--blocks",
            "down_blocks.0.attentions.0",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert bad.returncode == 2
    assert "is not in SDXL; it has" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_seeds_beyond_64_bits_and_huge_numbers_are_clean_errors(tmp_path):
    out = tmp_path / "never.safetensors"
    proc = run("adapter", "init", "--out", out, "--seed", str(2**64))
    assert_clean_error(proc, f"argument --seed: {2**64} is out of range: expected a 64-bit seed, 0 to {2**64 - 1}")
    proc = run("adapter", "init", "--out", out, "--seed", "9" * 5000)
    assert_clean_error(proc, "(5000 characters) is too large")
    assert len(proc.stderr) < 400 and not out.exists()
    assert cli._seed(str(2**64 - 1)) == 2**64 - 1 and cli._seed("-1") == -1  # what torch accepts still works
    proc = run("extract", "x.png", "--size", "9" * 5000)
    assert_clean_error(proc, "argument --size:")


def test_convert_big_and_hostile_palette_files(tmp_path):
    deck = tmp_path / "deck.gpl"
    deck.write_text("GIMP Palette\n" + "".join(f"{i % 256} {i // 256} 9\tColour {i}\n" for i in range(3000)))
    proc = run("convert", deck, tmp_path / "deck.json")
    assert proc.returncode == 0 and "3000 colours" in proc.stdout, proc.stderr
    assert len(json.loads((tmp_path / "deck.json").read_text())) == 3000
    hostile = tmp_path / "hostile.json"
    hostile.write_text('[{"hex": "#fff", "weight": ' + "9" * 5000 + "}]")
    assert_clean_error(run("convert", hostile, tmp_path / "x.gpl"), "(5000 digits) is too large")
    assert_clean_error(run("distance", "#fff:" + "9" * 5000, "#000"), "is too large")
