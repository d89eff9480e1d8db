"""scripts/run_comfyui.sh: its GPU choice, what it installs and runs, reruns, and stopping early when offline.

The default cases run the real script from a scratch copy of the pack with stand-ins for comfy, python3,
ComfyUI's Python and the GPU tools, on a PATH that holds nothing else but a few basic commands, so no
real tool of this machine takes part. Its network checks go to a loopback HTTP server ("online") or a
closed loopback port ("offline"); nothing else is contacted. The last case starts a real ComfyUI through
the script (skipped unless COMFYUI_PATH is set).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from comfyhost import COMFYUI_PATH, requires_comfyui
from comfyserver import free_port

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "run_comfyui.sh"
BASH = shutil.which("bash")
# What the script and the stand-ins need from the system; linked into a folder of their own for the PATH.
SYSTEM_TOOLS = ("cat", "cp", "dirname", "grep", "head", "ln", "mkdir", "rm", "tail")

pytestmark = pytest.mark.skipif(BASH is None, reason="needs bash")

LOG_PRELUDE = 'log() { local IFS=$\'\\t\'; printf \'%s\\n\' "$*" >>"$STANDIN_LOG"; }\nlog "$0" "$@"\n'

# comfy-cli: records its calls and the environment it saw; `install` lays out a ComfyUI with a stand-in Python.
COMFY = r"""
printf '%s\n' "VIRTUAL_ENV=${VIRTUAL_ENV-unset} CONDA_PREFIX=${CONDA_PREFIX-unset}" >>"$STANDIN_LOG.env"
if [ "$1" = --version ]; then  # comfy-cli 1.23 answers a pipe in JSON unless COMFY_OUTPUT=pretty
  v="${STANDIN_COMFY_VERSION:-1.23.0}"
  if [ "${COMFY_OUTPUT:-}" = pretty ]; then echo "$v"; exit 0; fi
  echo "{\"schema\": \"envelope/1\", \"ok\": true, \"command\": \"version\", \"version\": \"$v\", \"data\": {}}"
  exit 0
fi
ws="" cmd=""
while [ $# -gt 0 ]; do
  case "$1" in --workspace) ws="$2"; shift ;; install) cmd=install ;; esac
  shift
done
[ "$cmd" = install ] || exit 2
if [ -e "$ws/main.py" ]; then echo "ComfyUI is already installed at the specified path" >&2; exit 1; fi
if [ "${STANDIN_COMFY_FAIL:-}" = clone ]; then exit 1; fi
mkdir -p "$ws"
echo "# stand-in" >"$ws/main.py"
venv="${STANDIN_COMFY_VENV:-.venv}"
if [ "$venv" != none ]; then mkdir -p "$ws/$venv/bin"; cp "$STANDIN_TEMPLATES/python" "$ws/$venv/bin/python"; fi
if [ "${STANDIN_COMFY_FAIL:-}" = torch ]; then exit 1; fi
"""

# A venv's Python: the requirements check passes once pip installed them; pip installing comfy-cli adds `comfy`.
PYTHON = r"""
if [ "$1" = - ]; then [ -e "${0%/*}/requirements-installed" ]; exit $?; fi
if [ "$1 $2 $3" = "-m pip install" ]; then
  case "$*" in
    *" -r "*) : >"${0%/*}/requirements-installed" ;;
    *comfy-cli*) cp "$STANDIN_TEMPLATES/comfy" "${0%/*}/comfy" ;;
  esac
fi
exit 0
"""

# The system's python3: makes stand-in venvs (or fails like Debian without python3-venv), refuses pip,
# and runs everything else (the script's network check) with the real interpreter.
PYTHON3 = rf"""
if [ "$1 $2" = "-m venv" ]; then
  mkdir -p "$3/bin"
  if [ "${{STANDIN_VENV:-ok}}" != ok ]; then echo "ensurepip is not available" >&2; exit 1; fi
  cp "$STANDIN_TEMPLATES/python" "$3/bin/python"
  exit 0
fi
if [ "$1 $2" = "-m pip" ]; then exit 1; fi
exec "{sys.executable}" "$@"
"""

ROCMINFO_GPU = """\
*******
Agent 1
*******
  Name:                    AMD Ryzen 9 7950X 16-Core Processor
  Device Type:             CPU
*******
Agent 2
*******
  Name:                    gfx1100
  Marketing Name:          Radeon RX 7900 XTX
  Device Type:             GPU
"""
NVIDIA_CARD = "01:00.0 VGA compatible controller: NVIDIA Corporation AD102 [GeForce RTX 4090] (rev a1)"
INTEL_UHD = "00:02.0 VGA compatible controller: Intel Corporation Alder Lake-S GT1 [UHD Graphics 770] (rev 0c)"
AMD_NAVI = (
    "03:00.0 VGA compatible controller: Advanced Micro Devices, Inc. [AMD/ATI] Navi 31 "
    "[Radeon RX 7900 XT/7900 XTX/7900 GRE/7900M] (rev c8)"
)
AMD_RAPHAEL = "0e:00.0 VGA compatible controller: Advanced Micro Devices, Inc. [AMD/ATI] Raphael (rev c1)"
INTEL_A770 = "03:00.0 VGA compatible controller: Intel Corporation DG2 [Arc A770] (rev 08)"
METEOR_LAKE = "00:02.0 VGA compatible controller: Intel Corporation Meteor Lake-P [Intel Arc Graphics] (rev 08)"
LUNAR_LAKE = "00:02.0 VGA compatible controller: Intel Corporation Lunar Lake [Intel Arc Graphics 130V / 140V] (rev 04)"
# Made up after Intel naming the integrated GPU of its Panther Lake CPUs "Arc B390", like a discrete card.
PANTHER_LAKE = "00:02.0 VGA compatible controller: Intel Corporation Panther Lake [Intel Arc B390] (rev 04)"

# name -> (machine, comfy-cli's GPU flag, GPU kind printed)
MACHINES = {
    "nvidia": (dict(nvidia=True, lspci=[INTEL_UHD, NVIDIA_CARD]), "--nvidia", "nvidia"),
    "nvidia card, no driver": (dict(lspci=[NVIDIA_CARD]), "--cpu", "cpu"),
    "amd (rocminfo)": (dict(rocminfo=ROCMINFO_GPU, lspci=[AMD_RAPHAEL, AMD_NAVI]), "--amd", "amd"),
    "amd (rocm-smi)": (dict(rocm_smi="GPU[0]\t\t: Card series: \t\tRadeon RX 7900 XTX"), "--amd", "amd"),
    "amd (lspci + kfd)": (dict(lspci=[AMD_NAVI], kfd=True), "--amd", "amd"),
    "amd card, no kfd": (dict(lspci=[AMD_NAVI]), "--cpu", "cpu"),
    "amd igpu only": (dict(lspci=[AMD_RAPHAEL], kfd=True), "--cpu", "cpu"),
    "intel arc": (dict(lspci=[INTEL_UHD, INTEL_A770]), "--intel-arc", "intel"),
    "intel arc igpu (meteor lake)": (dict(lspci=[METEOR_LAKE]), "--cpu", "cpu"),
    "intel arc igpu (lunar lake)": (dict(lspci=[LUNAR_LAKE]), "--cpu", "cpu"),
    "intel arc igpu (panther lake)": (dict(lspci=[PANTHER_LAKE]), "--cpu", "cpu"),
    "apple silicon": (dict(os="Darwin", arch="arm64"), "--m-series", "apple"),
    "intel mac": (dict(os="Darwin", arch="x86_64"), "--cpu", "cpu"),
    "cpu": (dict(), "--cpu", "cpu"),
}
# What the script says when a card is there but its driver is not.
NOTES = {"nvidia card, no driver": "nvidia-smi does not list it", "amd card, no kfd": "no ROCm driver"}


@dataclass
class Call:
    tool: str  # the path the stand-in was run as
    args: list[str]

    @property
    def name(self) -> str:
        return Path(self.tool).name


@dataclass
class Result:
    rc: int
    out: str
    err: str
    calls: list[Call]

    def of(self, name: str) -> list[Call]:
        return [c for c in self.calls if c.name == name]

    def pythons(self, venv: Path) -> list[list[str]]:
        """Argument lists of the calls to ``venv/bin/python``."""
        return [c.args for c in self.calls if c.tool == str(venv / "bin" / "python")]


class _Probe(BaseHTTPRequestHandler):
    def do_HEAD(self):
        self.server.paths.append(self.path)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def _http_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Probe)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def probe_server(_http_server):
    """The loopback server standing in for PyPI, GitHub and download.pytorch.org; ``paths`` lists the checks."""
    _http_server.paths = []
    return _http_server


def closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}/"


class Sandbox:
    """A scratch pack with the script, stand-in tools first on PATH, and a home for .comfyui."""

    def __init__(self, tmp: Path, server: ThreadingHTTPServer):
        self.tmp = tmp
        self.pack = tmp / "pack"
        (self.pack / "scripts").mkdir(parents=True)
        shutil.copy(SCRIPT, self.pack / "scripts" / SCRIPT.name)
        shutil.copy(REPO / "requirements.txt", self.pack / "requirements.txt")
        self.bin, self.sys, self.templates = tmp / "bin", tmp / "sys", tmp / "templates"
        for folder in (self.bin, self.sys, self.templates):
            folder.mkdir()
        for tool in SYSTEM_TOOLS:
            found = shutil.which(tool)
            if found is None:
                pytest.skip(f"needs {tool}")
            (self.sys / tool).symlink_to(found)
        self.write(self.templates / "comfy", COMFY)
        self.write(self.templates / "python", PYTHON)
        self.write(self.bin / "python3", PYTHON3)
        self.home = tmp / "home"  # PALETTE_COMFYUI_HOME; the script creates it
        self.ws = self.home / "ComfyUI"
        self.cli_venv = self.home / "cli-venv"
        self.log = tmp / "calls.log"
        online = f"http://127.0.0.1:{server.server_address[1]}"
        self.env = {
            "PATH": f"{self.bin}:{self.sys}",
            "HOME": str(tmp / "user"),
            "STANDIN_LOG": str(self.log),
            "STANDIN_TEMPLATES": str(self.templates),
            "PALETTE_COMFYUI_HOME": str(self.home),
            "PALETTE_KFD_PATH": str(tmp / "kfd"),
            "PALETTE_PROBE_PYPI": online + "/pypi",
            "PALETTE_PROBE_GITHUB": online + "/github",
            "PALETTE_PROBE_PYTORCH": online + "/pytorch",
        }
        self.machine()

    @staticmethod
    def write(path: Path, body: str) -> None:
        path.write_text(f"#!{BASH}\n{LOG_PRELUDE}{body}")
        path.chmod(0o755)

    def comfy_on_path(self, version: str = "1.23.0") -> None:
        shutil.copy(self.templates / "comfy", self.bin / "comfy")
        self.env["STANDIN_COMFY_VERSION"] = version

    def machine(self, os="Linux", arch="x86_64", nvidia=False, rocminfo="", rocm_smi="", lspci=(), kfd=False):
        """Stand-ins for every GPU tool: the ones a machine lacks fail like a missing driver would."""
        self.write(self.bin / "uname", f'case "$1" in -m) echo {arch} ;; *) echo {os} ;; esac\n')
        gpu = "echo 'GPU 0: NVIDIA GeForce RTX 4090 (UUID: GPU-0b8c6c2e-1d1f-4c3a-9d0e-3f5b3e7f2a11)'\n"
        no_driver = 'echo "NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver."\nexit 9\n'
        self.write(self.bin / "nvidia-smi", gpu if nvidia else no_driver)
        self.write(self.bin / "rocminfo", f"cat <<'EOF'\n{rocminfo}EOF\n" if rocminfo else "exit 1\n")
        self.write(self.bin / "rocm-smi", f"cat <<'EOF'\n{rocm_smi}\nEOF\n" if rocm_smi else "exit 1\n")
        self.write(self.bin / "lspci", "cat <<'EOF'\n" + "".join(f"{line}\n" for line in lspci) + "EOF\n")
        kfd_path = Path(self.env["PALETTE_KFD_PATH"])
        if kfd:
            kfd_path.touch()
        else:
            kfd_path.unlink(missing_ok=True)

    def offline(self, *names: str) -> None:
        for name in names:
            self.env[f"PALETTE_PROBE_{name}"] = closed_url()

    def run(self, *args: str, **env: str) -> Result:
        self.log.write_text("")
        proc = subprocess.run(
            [BASH, str(self.pack / "scripts" / SCRIPT.name), *args],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=60,
            cwd=self.tmp,
        )
        calls = []
        for line in self.log.read_text().splitlines():
            tool, *rest = line.split("\t")
            calls.append(Call(tool, rest))
        return Result(proc.returncode, proc.stdout, proc.stderr, calls)

    def existing_comfyui(self, requirements_installed: bool = True) -> tuple[Path, Path]:
        """A ComfyUI folder with a main.py and a stand-in Python, as COMFYUI_PATH and COMFYUI_PYTHON."""
        root = self.tmp / "ComfyUI"
        (root / "custom_nodes").mkdir(parents=True)
        (root / "main.py").write_text("# stand-in\n")
        py = root / "venv" / "bin" / "python"
        py.parent.mkdir(parents=True)
        shutil.copy(self.templates / "python", py)
        if requirements_installed:
            (py.parent / "requirements-installed").touch()
        return root, py


@pytest.fixture
def box(tmp_path, probe_server) -> Sandbox:
    return Sandbox(tmp_path, probe_server)


def installs(result: Result) -> list[list[str]]:
    return [c.args for c in result.of("comfy") if "install" in c.args]


def main_py_args(result: Result, venv: Path) -> list[str]:
    runs = [args for args in result.pythons(venv) if args[:1] == ["main.py"]]
    assert len(runs) == 1, result.calls
    return runs[0][1:]


@pytest.mark.parametrize("name", list(MACHINES))
def test_detected_gpu_picks_the_install_flag(box, probe_server, name):
    machine, flag, kind = MACHINES[name]
    box.machine(**machine)
    box.comfy_on_path()
    r = box.run("--port", "8190")
    assert r.rc == 0, r.err
    assert installs(r) == [["--skip-prompt", "--workspace", str(box.ws), "install", flag]]
    assert f"GPU: {kind} (detected)" in r.out
    cpu = ["--cpu"] if kind == "cpu" else []
    assert main_py_args(r, box.ws / ".venv") == ["--port", "8190", *cpu]
    expected = ["/pypi", "/github"] + ([] if kind == "apple" else ["/pytorch"])
    assert sorted(probe_server.paths) == sorted(expected)
    assert (box.ws / ".palette-control-gpu").read_text().strip() == kind
    if name in NOTES:
        assert NOTES[name] in r.err


@pytest.mark.parametrize(
    "machine, args, env, flag, main_args",
    [
        ("nvidia", ["--gpu", "cpu"], {}, "--cpu", ["--cpu"]),
        ("cpu", [], {"PALETTE_GPU": "amd"}, "--amd", []),
        ("cpu", ["--gpu=intel"], {"PALETTE_GPU": "amd"}, "--intel-arc", []),
        ("nvidia", ["--gpu", "amd", "--", "--gpu", "x"], {}, "--amd", ["--gpu", "x"]),
    ],
)
def test_gpu_override_beats_detection(box, machine, args, env, flag, main_args):
    box.machine(**MACHINES[machine][0])
    box.comfy_on_path()
    r = box.run(*args, **env)
    assert r.rc == 0, r.err
    assert [a[-1] for a in installs(r)] == [flag]
    assert main_py_args(r, box.ws / ".venv") == main_args


def test_unknown_gpu_is_refused(box):
    box.comfy_on_path()
    r = box.run("--gpu", "tpu")
    assert r.rc != 0 and "tpu" in r.err
    assert r.calls == [] and not box.home.exists()


def test_help_changes_nothing(box):
    r = box.run("--help")
    assert r.rc == 0 and "--gpu" in r.out and "COMFYUI_PATH" in r.out
    assert r.calls == [] and not box.home.exists()


def test_cpu_flag_is_not_duplicated(box):
    box.comfy_on_path()
    r = box.run("--cpu", "--port", "8190")
    assert r.rc == 0, r.err
    assert main_py_args(r, box.ws / ".venv") == ["--cpu", "--port", "8190"]


def test_first_run_installs_and_second_reuses(box):
    box.machine(**MACHINES["nvidia"][0])
    box.comfy_on_path()
    first = box.run("--gpu", "cpu")
    assert first.rc == 0, first.err
    assert len(installs(first)) == 1
    py = box.ws / ".venv"
    assert ["-m", "pip", "install", "-q", "-r", str(box.pack / "requirements.txt")] in first.pythons(py)
    link = box.ws / "custom_nodes" / "palette-control"
    assert link.is_symlink() and link.resolve() == box.pack.resolve()

    # Offline and without --gpu: nothing is installed again, and ComfyUI still gets the --cpu its torch needs.
    box.offline("PYPI", "GITHUB", "PYTORCH")
    second = box.run("--port", "8191")
    assert second.rc == 0, second.err
    assert second.of("comfy") == []
    assert not [a for a in second.pythons(py) if a[:2] == ["-m", "pip"]]
    assert main_py_args(second, py) == ["--port", "8191", "--cpu"]
    assert "GPU: cpu (installed for)" in second.out


def test_comfy_cli_gets_its_own_venv_once(box):
    first = box.run("--gpu", "cpu")  # no comfy on PATH
    assert first.rc == 0, first.err
    venv = box.cli_venv
    assert [c.args for c in first.of("python3") if c.args[:1] == ["-m"]] == [["-m", "venv", str(venv)]]
    assert first.pythons(venv) == [["-m", "pip", "install", "-q", "comfy-cli>=1.10,<2"]]
    assert [c.tool for c in first.of("comfy")] == [str(venv / "bin" / "comfy")]
    assert len(installs(first)) == 1

    second = box.run()
    assert second.rc == 0, second.err
    assert [c.tool for c in second.calls] == [str(box.ws / ".venv" / "bin" / "python")] * 2  # check, main.py
    assert main_py_args(second, box.ws / ".venv") == ["--cpu"]

    shutil.rmtree(box.ws)
    box.comfy_on_path()
    third = box.run()  # the comfy-cli made here before wins over one on PATH
    assert third.rc == 0, third.err
    assert [c.tool for c in third.of("comfy")] == [str(venv / "bin" / "comfy")]


@pytest.mark.parametrize("output", ["", "json"])  # COMFY_OUTPUT unset (the script asks for plain text), or json
@pytest.mark.parametrize("version, used", [("1.23.0", True), ("1.10.2", True), ("2.0.0", True), ("1.9.9", False)])
def test_comfy_on_path_is_used_if_recent(box, version, used, output):
    box.comfy_on_path(version=version)  # before 1.10, comfy-cli installs ComfyUI into its own Python
    r = box.run(COMFY_OUTPUT=output) if output else box.run()
    assert r.rc == 0, r.err
    on_path = [c.args for c in r.of("comfy") if c.tool == str(box.bin / "comfy")]
    installer = box.bin / "comfy" if used else box.cli_venv / "bin" / "comfy"
    assert [c.tool for c in r.of("comfy") if "install" in c.args] == [str(installer)]
    assert on_path[0] == ["--version"] and box.cli_venv.exists() != used


def test_failed_install_is_reported(box):
    box.comfy_on_path()
    r = box.run(STANDIN_COMFY_FAIL="clone")
    assert r.rc != 0 and r.err.strip().endswith("comfy install failed") and not box.ws.exists()

    r = box.run(STANDIN_COMFY_FAIL="torch")  # stopped half-way: the folder is there
    assert r.rc != 0 and f"remove {box.ws} before running this again" in r.err
    r = box.run()
    assert r.rc == 0 and installs(r) == []
    assert f"{box.ws} has no record of a finished install" in r.out


def test_active_environments_are_hidden_from_comfy_cli(box, tmp_path):
    box.comfy_on_path()
    active = tmp_path / "active-venv"
    r = box.run(VIRTUAL_ENV=str(active), CONDA_PREFIX=str(tmp_path / "conda"))
    assert r.rc == 0, r.err
    seen = (tmp_path / "calls.log.env").read_text().splitlines()
    assert seen[-1] == "VIRTUAL_ENV=unset CONDA_PREFIX=unset"
    assert main_py_args(r, box.ws / ".venv") == ["--cpu"]


def test_python_falls_back_to_venv_then_comfy_clis(box):
    r = box.run(STANDIN_COMFY_VENV="venv")
    assert r.rc == 0, r.err
    assert main_py_args(r, box.ws / "venv") == ["--cpu"]

    shutil.rmtree(box.ws)
    r = box.run(STANDIN_COMFY_VENV="none")  # older comfy-cli: ComfyUI's packages went into comfy-cli's Python
    assert r.rc == 0, r.err
    assert ["-m", "pip", "install", "-q", "-r", str(box.pack / "requirements.txt")] in r.pythons(box.cli_venv)
    assert main_py_args(r, box.cli_venv) == ["--cpu"]


def test_no_python_found_says_so(box):
    box.comfy_on_path()  # its shebang is bash, not a Python
    r = box.run(STANDIN_COMFY_VENV="none")
    assert r.rc != 0 and "COMFYUI_PYTHON" in r.err


@pytest.mark.parametrize("comfy_on_path", [True, False])
def test_offline_first_run_stops_with_one_line(box, comfy_on_path):
    if comfy_on_path:
        box.comfy_on_path()
    box.offline("PYPI", "GITHUB", "PYTORCH")
    r = box.run()
    assert r.rc != 0
    assert r.out == "" and len(r.err.strip().splitlines()) == 1, r.err
    assert f"PyPI ({box.env['PALETTE_PROBE_PYPI']})" in r.err
    assert "COMFYUI_PATH=/path/to/ComfyUI bash scripts/run_comfyui.sh" in r.err
    assert r.of("comfy") == []
    assert [c.args for c in r.of("python3") if c.args[:1] != ["-"]] == []  # no venv, no system pip
    assert not box.home.exists()


def test_offline_names_only_what_is_unreachable(box):
    box.comfy_on_path()
    box.offline("GITHUB")
    r = box.run()
    assert r.rc != 0
    assert "GitHub" in r.err and "PyPI" not in r.err and "pytorch" not in r.err
    assert r.of("comfy") == [] and not box.home.exists()


def test_tls_trouble_still_counts_as_reachable(box, probe_server):
    # e.g. a Python without CA certificates: the site answered, and pip brings its own certificates
    box.comfy_on_path()
    r = box.run(PALETTE_PROBE_GITHUB=f"https://127.0.0.1:{probe_server.server_address[1]}/")
    assert r.rc == 0, r.err
    assert len(installs(r)) == 1


def test_relative_workspace(box, tmp_path):
    box.comfy_on_path()
    r = box.run("--workspace", "rel/ComfyUI")  # run from tmp_path
    assert r.rc == 0, r.err
    ws = tmp_path / "rel" / "ComfyUI"
    assert installs(r) == [["--skip-prompt", "--workspace", str(ws), "install", "--cpu"]]
    assert main_py_args(r, ws / ".venv") == ["--cpu"]
    assert (ws / "custom_nodes" / "palette-control").resolve() == box.pack.resolve()


def test_failed_venv_creation_points_to_python3_venv(box):
    r = box.run(STANDIN_VENV="fail")
    assert r.rc != 0
    assert len(r.err.strip().splitlines()) == 1 and "python3-venv" in r.err
    assert not box.cli_venv.exists() and r.of("comfy") == []


def test_existing_comfyui_needs_no_network(box):
    root, py = box.existing_comfyui()
    box.offline("PYPI", "GITHUB", "PYTORCH")
    r = box.run("--listen", "--port", "8190", COMFYUI_PATH=str(root))
    assert r.rc == 0, r.err
    assert r.of("comfy") == []
    assert r.pythons(py.parent.parent) == [
        ["-", str(box.pack / "requirements.txt")],
        ["main.py", "--listen", "--port", "8190", "--cpu"],
    ]
    assert (root / "custom_nodes" / "palette-control").resolve() == box.pack.resolve()
    assert not box.home.exists()


def test_existing_comfyui_gets_missing_requirements(box):
    root, py = box.existing_comfyui(requirements_installed=False)
    r = box.run(COMFYUI_PATH=str(root), COMFYUI_PYTHON=str(py))
    assert r.rc == 0, r.err
    assert ["-m", "pip", "install", "-q", "-r", str(box.pack / "requirements.txt")] in r.pythons(py.parent.parent)

    box.offline("PYPI")
    (py.parent / "requirements-installed").unlink()
    r = box.run(COMFYUI_PATH=str(root), COMFYUI_PYTHON=str(py))
    assert r.rc != 0 and "PyPI" in r.err and "pip install -r" in r.err
    assert not [a for a in r.pythons(py.parent.parent) if a[:1] != ["-"]]


def _echo_main(root: Path) -> Path:
    """A main.py that records its arguments, run by the real Python."""
    record = root / "argv.json"
    (root / "main.py").write_text(
        f"import json, os, sys\njson.dump([os.getcwd(), *sys.argv[1:]], open({str(record)!r}, 'w'))\n"
    )
    return record


@pytest.mark.parametrize(
    "extra, satisfied", [("", True), ("palette-surely-absent-dist>=1\n", False), ("numpy<1\n", False)]
)
def test_requirement_check_with_a_real_python(box, extra, satisfied):
    root, _ = box.existing_comfyui()
    record = _echo_main(root)
    with open(box.pack / "requirements.txt", "a") as f:
        f.write(extra)
    box.offline("PYPI")
    r = box.run("--gpu", "nvidia", COMFYUI_PATH=str(root), COMFYUI_PYTHON=sys.executable)
    if satisfied:
        assert r.rc == 0, r.err
        assert json.loads(record.read_text()) == [str(root)]
    else:
        assert r.rc != 0 and "PyPI" in r.err and not record.exists()


@pytest.mark.parametrize(
    "args, url, output",
    [
        ([], "http://127.0.0.1:8188", "{root}/output"),
        (["--port", "8190"], "http://127.0.0.1:8190", "{root}/output"),
        (["--listen", "--port=9001"], "http://127.0.0.1:9001", "{root}/output"),
        (["--listen", "192.168.1.7,10.0.0.2", "--port", "9002"], "http://192.168.1.7:9002", "{root}/output"),
        (["--listen=::1", "--tls-keyfile", "k.pem"], "https://[::1]:8188", "{root}/output"),
        (["--output-directory", "/srv/out"], "http://127.0.0.1:8188", "/srv/out"),
        (["--base-directory", "data"], "http://127.0.0.1:8188", "{root}/data/output"),
    ],
)
def test_prints_url_and_output_folder(box, args, url, output):
    root, py = box.existing_comfyui()
    r = box.run(*args, COMFYUI_PATH=str(root), PALETTE_GPU="nvidia")
    assert r.rc == 0, r.err
    assert f"open {url} " in r.out
    assert f"images are saved in {output.format(root=root)}\n" in r.out
    assert "Templates > Custom Nodes > palette-control > recolor_image" in r.out
    assert main_py_args(r, py.parent.parent) == args


def test_base_directory_moves_the_link(box, tmp_path):
    root, py = box.existing_comfyui()
    base = tmp_path / "base"
    r = box.run("--base-directory", str(base), COMFYUI_PATH=str(root), PALETTE_GPU="nvidia")
    assert r.rc == 0, r.err
    assert (base / "custom_nodes" / "palette-control").resolve() == box.pack.resolve()
    assert not (root / "custom_nodes" / "palette-control").exists()
    assert f"{base}/models/checkpoints" in r.out


def test_link_conflicts(box, tmp_path):
    root, py = box.existing_comfyui()
    link = root / "custom_nodes" / "palette-control"
    link.symlink_to(tmp_path / "moved-away")
    r = box.run(COMFYUI_PATH=str(root))
    assert r.rc == 0, r.err
    assert "dangling" in r.out and link.resolve() == box.pack.resolve()

    link.unlink()
    link.mkdir()
    r = box.run(COMFYUI_PATH=str(root))
    assert r.rc == 0, r.err
    assert f"{link} already exists and is not this checkout" in r.out
    assert link.is_dir() and not link.is_symlink()


@requires_comfyui
@pytest.mark.comfyui
def test_starts_a_real_comfyui_with_the_pack(tmp_path):
    checkout_link = Path(COMFYUI_PATH) / "custom_nodes" / "palette-control"
    had_link = checkout_link.is_symlink() or checkout_link.exists()
    port = free_port()
    base = tmp_path / "base"
    offline = closed_url()
    env = {k: v for k, v in os.environ.items() if k not in ("PALETTE_GPU", "PALETTE_COMFYUI_HOME")}
    env.update(COMFYUI_PYTHON=sys.executable, PALETTE_PROBE_PYPI=offline, PALETTE_PROBE_GITHUB=offline)
    log_path = tmp_path / "run.log"
    args = ["--cpu", "--listen", "127.0.0.1", "--port", str(port), "--base-directory", str(base)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [BASH, str(SCRIPT), *args], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.time() < deadline, "ComfyUI did not answer: " + log_path.read_text()[-3000:]
            try:
                with urllib.request.urlopen(url + "/system_stats", timeout=5) as resp:
                    stats = json.loads(resp.read())
                break
            except OSError:
                time.sleep(1)
        with urllib.request.urlopen(url + "/object_info", timeout=60) as resp:
            nodes = json.loads(resp.read())
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert {"PaletteInput", "PaletteRecolor", "PaletteAlign", "ApplyPaletteAdapter"} <= set(nodes)
    assert stats["system"]["argv"].count("--cpu") == 1
    assert f"open {url} in a browser" in log_path.read_text()
    assert (base / "custom_nodes" / "palette-control").resolve() == REPO
    assert (checkout_link.is_symlink() or checkout_link.exists()) == had_link
