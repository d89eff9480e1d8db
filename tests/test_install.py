"""``pip install`` of the repository: the ``palette`` and ``palette-queue`` commands, and nothing else.

The repository is copied, built into a wheel and installed into a fresh virtual environment with no
network (``--no-index --no-deps --no-build-isolation``: the build uses this environment's setuptools,
and the installed commands this environment's numpy, Pillow and torch, through a ``.pth`` file). The
commands then run from a folder outside the repository, as a user would run them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from palette_core.bins import pixel_counts
from palette_core.distance import quadratic_chi
from palette_core.histogram import image_histogram
from palette_core.palette import Palette
from palette_core.similarity import occupied_quadratic_chi

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("palette_core", "palette_cli", "palette_queue")
PALETTE = "#264653, #2a9d8f, #e9c46a, #f4a261, #e76f51"
# Not part of the source tree (local environments, caches, build outputs), where git cannot tell.
IGNORED = (".git", ".venv", ".hypothesis", ".comfyui", "__pycache__", "*.egg-info", "build", "dist", "node_modules")


def copy_source(dest: Path) -> None:
    """Copy the files git tracks or would track (not ignored ones) to ``dest``: the tree pip would see."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError):
        shutil.copytree(REPO, dest, ignore=shutil.ignore_patterns(*IGNORED))
        return
    for rel in filter(None, listed.split("\0")):
        if (REPO / rel).is_file():  # a tracked file deleted in the work tree is still listed
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)


class Installed:
    """The fresh environment: its interpreter and a runner for commands in a folder outside the repository."""

    def __init__(self, root: Path, wheel: Path, source: Path) -> None:
        self.root, self.wheel, self.source = root, wheel, source
        self.bin = root / "venv" / ("Scripts" if os.name == "nt" else "bin")
        self.python = self.bin / ("python.exe" if os.name == "nt" else "python")
        self.cwd = root / "elsewhere"
        self.cwd.mkdir(exist_ok=True)

    def run(self, *args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        return subprocess.run(
            [str(a) for a in args],
            cwd=self.cwd,
            env={**clean, "OMP_NUM_THREADS": "1", **(env or {})},
            capture_output=True,
            text=True,
            timeout=300,
        )


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    root = tmp_path_factory.mktemp("install")
    source = root / "source"
    copy_source(source)
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(root / "venv")
    env = Installed(root, root / "dist", source)
    site = subprocess.run(
        [env.python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(site, "test_environment.pth").write_text("\n".join(sorted(ours)) + "\n")
    pip = [env.python, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    built = env.run(*pip, "wheel", "--no-index", "--no-deps", "--no-build-isolation", "-w", env.wheel, source)
    assert built.returncode == 0, built.stdout + built.stderr
    done = env.run(*pip, "install", "--no-index", "--no-deps", *env.wheel.glob("*.whl"))
    assert done.returncode == 0, done.stdout + done.stderr
    return env


def photo(path: Path, side: int = 256) -> Path:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:side, 0:side] / side
    rgb = np.stack([x, y, 1 - x * y], -1) + rng.normal(0, 0.04, (side, side, 3))
    Image.fromarray(np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8)).save(path)
    return path


def test_the_wheel_holds_only_the_three_packages(installed):
    for left_out in ("__init__.py", "nodes/__init__.py", "train", "tests"):  # in the source the build saw
        assert (installed.source / left_out).exists()
    (wheel,) = installed.wheel.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == set(PACKAGES)
    assert "__init__.py" not in names and not any(n.startswith(("nodes/", "train/", "tests/")) for n in names)
    # package data: every file of the packages in the source tree is in the wheel
    shipped = {
        str(p.relative_to(installed.source)).replace(os.sep, "/")
        for pkg in PACKAGES
        for p in (installed.source / pkg).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert shipped <= set(names)
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "palette = palette_cli.main:main" in entry_points
    assert "palette-queue = palette_queue.cli:main" in entry_points


def test_websocket_client_is_only_the_queue_extra(installed):
    (wheel,) = installed.wheel.glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        metadata = zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    websocket = [r for r in requires if r.startswith("websocket-client")]
    assert websocket == ['websocket-client>=1.6; extra == "queue"'], requires
    assert "Provides-Extra: queue" in metadata.splitlines()


def test_the_installed_files_are_the_packages_and_the_two_commands(installed):
    code = (
        "import importlib.metadata as m, palette_core, palette_cli, palette_queue\n"
        "print(palette_core.__file__); print(palette_cli.__file__); print(palette_queue.__file__)\n"
        "for f in m.distribution('palette-control').files: print(f)\n"
    )
    proc = installed.run(installed.python, "-c", code)
    assert proc.returncode == 0, proc.stderr
    core, cli, queue, *files = proc.stdout.splitlines()
    venv_dir = str(installed.root / "venv")
    assert all(f.startswith(venv_dir) for f in (core, cli, queue))  # the wheel's copy, not the repository
    for f in files:
        top = f.split("/")[0]
        assert top in PACKAGES or top.endswith(".dist-info") or f.split("/")[-1] in ("palette", "palette-queue"), f


def imported_modules(stderr: str) -> set[str]:
    """The modules a process run with PYTHONPROFILEIMPORTTIME=1 (python -X importtime) imported."""
    return {line.split("|")[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def test_palette_help_and_errors_name_the_installed_command(installed):
    proc = installed.run(installed.bin / "palette", "--help", env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: palette [-h] command")
    imported = imported_modules(proc.stderr)
    assert "palette_cli.main" in imported and not {m.split(".")[0] for m in imported} & {"numpy", "torch", "PIL"}
    bad = installed.run(installed.bin / "palette", "distance", "#fff")
    assert bad.returncode == 2
    assert bad.stderr.strip() == "palette distance: error: the following arguments are required: B (see --help)"
    missing = installed.run(installed.bin / "palette", "distance", "missing.png", "#fff")
    assert (
        missing.returncode == 2 and missing.stderr.strip() == "palette distance: error: missing.png: no such image file"
    )


def test_palette_distance_runs_from_elsewhere_without_importing_torch(installed):
    image = photo(installed.cwd / "photo.png")
    proc = installed.run(
        installed.bin / "palette", "distance", "photo.png", PALETTE, env={"PYTHONPROFILEIMPORTTIME": "1"}
    )
    assert proc.returncode == 0, proc.stderr
    imported = imported_modules(proc.stderr)
    assert {"numpy", "PIL.Image", "palette_core.similarity"} <= imported  # the listing works ...
    assert not {m for m in imported if m == "torch" or m.startswith("torch.")}  # ... and holds no torch
    pixels = np.asarray(Image.open(image).convert("RGB")).astype(np.float32) / np.float32(255)
    counts = pixel_counts(pixels.reshape(-1, 3))
    expected = float(occupied_quadratic_chi(counts / counts.sum(), Palette.parse(PALETTE).histogram_array()))
    assert proc.stdout.strip() == f"{expected:.6f}"
    # what the torch path (float32 histograms and the cached float32-ΔE00 matrix) gives, to its precision
    torch_qc = quadratic_chi(image_histogram(pixels), Palette.parse(PALETTE).histogram())
    assert float(proc.stdout) == pytest.approx(float(torch_qc), abs=2e-6)


def test_palette_queue_help(installed):
    proc = installed.run(installed.bin / "palette-queue", "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: palette-queue ")
    assert "  palette-queue example_workflows/api/colorize_with_palette.api.json jobs.csv" in proc.stdout


@pytest.mark.parametrize(
    ("command", "needle"),
    [
        ("from palette_cli.main import main; raise SystemExit(main(['histogram', 'photo.png']))", "palette histogram"),
        ("from palette_cli.main import main; raise SystemExit(main(['extract', 'photo.png']))", "palette extract"),
        (
            "from palette_queue.cli import main; raise SystemExit(main([{wf!r}, 'jobs.csv', '--out', 'out']))",
            "palette-queue",
        ),
    ],
)
def test_a_command_that_needs_torch_says_how_to_install_it(installed, command, needle):
    photo(installed.cwd / "photo.png", 32)
    (installed.cwd / "jobs.csv").write_text("seed\n1\n")
    workflow = str(REPO / "example_workflows" / "api" / "colorize_with_palette.api.json")
    blocked = "import sys; sys.modules['torch'] = None  # as if torch were not installed\n"
    proc = installed.run(installed.python, "-c", blocked + command.format(wf=workflow))
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"{needle}") and "needs PyTorch, which is not installed: pip install torch" in lines[0]
    assert not (installed.cwd / "out").exists()  # refused before anything was queued


def test_palette_queue_without_torch_runs_with_no_report(installed):
    (installed.cwd / "jobs.csv").write_text("seed\n1\n")
    workflow = str(REPO / "example_workflows" / "api" / "colorize_with_palette.api.json")
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from palette_queue.cli import main\n"
        f"raise SystemExit(main([{workflow!r}, 'jobs.csv', '--out', 'out2', '--no-report', "
        "'--server', '127.0.0.1:9', '--retry-timeout', '0']))\n"
    )
    proc = installed.run(installed.python, "-c", code)
    assert proc.returncode == 3, proc.stderr  # it got as far as the (absent) server
    assert "server error" in proc.stderr


def test_python_m_still_works_from_the_repository_and_names_itself():
    for module in ("palette_core", "palette_queue"):  # as README documents them
        proc = subprocess.run(
            [sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith(f"usage: python -m {module} ")


def test_the_package_exports_palette_and_num_bins_without_importing_numpy_or_torch_first():
    code = (
        "import sys, palette_core\n"
        "light = not {'numpy', 'torch'} & set(sys.modules)\n"
        "from palette_core import NUM_BINS, Palette\n"
        "from palette_core.palette import Palette as P\n"
        "print(light, NUM_BINS, Palette is P, Palette.parse('#f00, #00f').to_text(), 'torch' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "4080", "True", "#ff0000,", "#0000ff", "False"]
