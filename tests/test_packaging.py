"""Packaging for the Comfy Registry: .comfyignore, the workflows' cnr_id/ver, the optional websocket, BETA nodes.

Host-independent: .comfyignore read the way comfy-cli reads it (pathspec's gitwildmatch over the files git
lists) and as git would (pathspec's GitIgnoreSpec); the pack's nodes found in nodes/*.py without importing
them. With COMFYUI_PATH, the archive's files alone (copied to a scratch folder) load in a real ComfyUI,
which serves exactly the adapter nodes as experimental.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from comfyhost import COMFYUI_PATH, requires_comfyui
from pathspec import GitIgnoreSpec, PathSpec

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
EXAMPLES = REPO / "example_workflows"
VIRTUAL_NODES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
# The nodes that only do something with trained Palette-Adapter weights (README, "The Palette-Adapter in ComfyUI").
ADAPTER_NODES = {
    "PaletteAdapterLoader",
    "HistogramFromImage",
    "NegativePalette",
    "EntropyDistanceControl",
    "ApplyPaletteAdapter",
}
RUNTIME_FILES = ("__init__.py", "LICENSE", "README.md", "pyproject.toml", "requirements.txt")
RUNTIME_DIRS = ("nodes", "palette_core", "web", "example_workflows", "palette_queue")
DEV_DIRS = ("tests", "bench", "scripts", ".ci")


# --- .comfyignore -------------------------------------------------------------------------------------------


def comfyignore_lines() -> list[str]:
    """The patterns as comfy-cli takes them: stripped lines, blank lines and # comments dropped."""
    lines = (REPO / ".comfyignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def comfy_cli_spec() -> PathSpec:
    """comfy-cli's reader: ``PathSpec.from_lines("gitwildmatch", ...)`` (pathspec 1.x calls it deprecated)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return PathSpec.from_lines("gitwildmatch", comfyignore_lines())


def source_files() -> list[str]:
    """The files git tracks or would track (comfy-cli zips the tracked ones); a walk where git is missing."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", "node_modules", "__pycache__", ".hypothesis", ".ruff_cache", ".comfyui"}
        return sorted(
            p.relative_to(REPO).as_posix()
            for p in REPO.rglob("*")
            if p.is_file() and not skip & set(p.relative_to(REPO).parts)
        )
    return sorted(rel for rel in listed.split("\0") if rel and (REPO / rel).is_file())


def shipped(files: list[str]) -> list[str]:
    spec = comfy_cli_spec()
    return [f for f in files if not spec.match_file(f)]


def test_comfyignore_ships_the_runtime_and_leaves_out_tests_and_benchmarks():
    files = source_files()
    kept = set(shipped(files))
    for name in RUNTIME_FILES:
        assert name in files and name in kept, name
    for folder in RUNTIME_DIRS:
        inside = [f for f in files if f.startswith(folder + "/")]
        assert inside, folder
        assert set(inside) <= kept, f"{folder}/ files left out: {sorted(set(inside) - kept)[:5]}"
    for folder in DEV_DIRS:
        inside = [f for f in files if f.startswith(folder + "/")]
        assert inside, folder
        assert not set(inside) & kept, f"{folder}/ files shipped: {sorted(set(inside) & kept)[:5]}"
    assert "example_workflows/input/palette_example_grey.jpg" in kept  # the templates' photos
    assert "docs/images/palette_widget.png" in kept and "train/train_palette_adapter.py" in kept
    assert "requirements-dev.txt" not in kept


@pytest.mark.parametrize(
    ("path", "excluded"),
    [
        ("train/toy/out/adapter.safetensors", True),
        ("train/toy/out/plots/loss.png", True),
        ("runs/stage1/checkpoint-100/adapter.safetensors", True),
        ("nodes/__pycache__/adapter_nodes.cpython-311.pyc", True),
        ("palette_core/__pycache__/color.cpython-310.pyc", True),
        ("tests/browser/node_modules/playwright-core/index.js", True),
        (".venv/lib/python3.11/site-packages/numpy/__init__.py", True),
        (".comfyui/ComfyUI/main.py", True),
        ("bench/out/adapter.json", True),
        ("palette_control.egg-info/PKG-INFO", True),
        ("train/toy/run_toy.py", False),
        ("nodes/routes.py", False),
        ("example_workflows/api/recolor_image.api.json", False),
        ("web/palette_widget.js", False),
        ("docs/workflows.md", False),
    ],
)
def test_comfyignore_patterns_on_generated_files(path, excluded):
    assert comfy_cli_spec().match_file(path) is excluded
    assert GitIgnoreSpec.from_lines(comfyignore_lines()).match_file(path) is excluded  # git's own reading


def test_comfy_cli_and_git_read_the_comfyignore_alike():
    files = source_files()
    git = GitIgnoreSpec.from_lines(comfyignore_lines())
    assert shipped(files) == [f for f in files if not git.match_file(f)]


# --- cnr_id and ver in the example workflows -------------------------------------------------------------------


def schema_node_ids(path: Path) -> dict[str, bool]:
    """node_id -> whether its io.Schema(...) says ``is_experimental=True``, read from the source without importing."""
    out = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "Schema":
            kw = {k.arg: k.value for k in node.keywords}
            node_id = kw["node_id"]
            assert isinstance(node_id, ast.Constant), f"{path.name}: node_id is not a literal"
            flag = kw.get("is_experimental")
            assert flag is None or isinstance(flag, ast.Constant), f"{path.name} {node_id.value}: not a literal"
            out[node_id.value] = bool(flag is not None and flag.value)
    return out


def pack_schemas() -> dict[str, bool]:
    schemas: dict[str, bool] = {}
    for path in sorted((REPO / "nodes").glob("*.py")):
        schemas.update(schema_node_ids(path))
    return schemas


def test_every_node_of_every_ui_workflow_names_its_pack_and_version():
    pack = set(pack_schemas())
    assert {"PaletteInput", "PaletteAlign", "LuminanceLock", "ApplyPaletteAdapter"} <= pack
    seen = set()
    workflows = sorted(EXAMPLES.glob("*.json"))
    assert len(workflows) >= 11
    for path in workflows:
        for node in json.loads(path.read_text())["nodes"]:
            where, props = f"{path.name} node {node['id']} ({node['type']})", node["properties"]
            if node["type"] in VIRTUAL_NODES:
                assert "cnr_id" not in props, where
                continue
            if node["type"] in pack:
                assert props["cnr_id"] == PROJECT["name"] == "palette-control", where
                assert props["ver"] == PROJECT["version"], where
                seen.add(node["type"])
            else:
                assert props["cnr_id"] == "comfy-core" and props["ver"] == "0.3.64", where
            assert list(props)[:2] == ["cnr_id", "ver"] and props["Node name for S&R"] == node["type"], where
    assert {"PaletteRecolor", "PaletteAdapterLoader", "PaletteGuidance"} <= seen


def test_the_api_copies_carry_no_properties():
    for path in sorted((EXAMPLES / "api").glob("*.api.json")):
        for node in json.loads(path.read_text()).values():
            assert set(node) == {"class_type", "inputs", "_meta"}, path.name


# --- experimental nodes ---------------------------------------------------------------------------------------


def test_exactly_the_adapter_nodes_are_experimental_in_their_schemas():
    schemas = pack_schemas()
    assert len(schemas) >= 20
    assert {n for n, experimental in schemas.items() if experimental} == ADAPTER_NODES
    assert set(schema_node_ids(REPO / "nodes" / "adapter_nodes.py")) == ADAPTER_NODES
    for name in ("PaletteAlign", "PaletteGuidance", "PaletteRecolor", "PaletteInput"):
        assert schemas[name] is False


# --- websocket-client is optional ------------------------------------------------------------------------------

BLOCK_WEBSOCKET = "import sys; sys.modules['websocket'] = None  # as if websocket-client were not installed\n"


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_pyproject_makes_websocket_client_the_queue_extra():
    assert not any(d.startswith("websocket-client") for d in PROJECT["dependencies"])
    assert PROJECT["optional-dependencies"]["queue"] == ["websocket-client>=1.6"]
    requirements = (REPO / "requirements.txt").read_text()
    assert "websocket" not in requirements  # nothing inside ComfyUI needs it


def test_numba_is_only_the_fast_extra():
    assert not any(d.startswith("numba") for d in PROJECT["dependencies"])
    assert PROJECT["optional-dependencies"]["fast"] == ["numba>=0.60"]
    assert "numba" not in (REPO / "requirements.txt").read_text()  # it pins numpy: never forced on a ComfyUI


def test_palette_queue_imports_and_dry_runs_without_websocket_client(tmp_path):
    (tmp_path / "jobs.csv").write_text("seed\n1\n2\n")
    workflow = EXAMPLES / "api" / "colorize_with_palette.api.json"
    code = (
        BLOCK_WEBSOCKET + "import importlib, pkgutil, palette_queue\n"
        "for m in pkgutil.iter_modules(palette_queue.__path__):\n"
        "    if m.name != '__main__':\n"
        "        importlib.import_module('palette_queue.' + m.name)\n"
        "from palette_queue.cli import main\n"
        f"raise SystemExit(main([{str(workflow)!r}, 'jobs.csv', '--out', 'out', '--dry-run']))\n"
    )
    proc = run_python(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("2 jobs; columns:") and "seed ->" in proc.stdout


def test_palette_queue_without_websocket_client_says_what_to_install(tmp_path):
    (tmp_path / "jobs.csv").write_text("seed\n1\n")
    workflow = EXAMPLES / "api" / "colorize_with_palette.api.json"
    code = (
        BLOCK_WEBSOCKET + "from palette_queue.cli import main\n"
        f"raise SystemExit(main([{str(workflow)!r}, 'jobs.csv', '--out', 'out', '--server', '127.0.0.1:9']))\n"
    )
    proc = run_python(code, tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("palette-queue: error: following the batch's progress")
    assert "pip install 'websocket-client>=1.6'" in lines[0] and "'.[queue]'" in lines[0]
    assert not (tmp_path / "out").exists()  # refused before anything was queued or written


def test_the_client_raises_missing_dependency_where_the_websocket_is_opened(tmp_path):
    code = (
        BLOCK_WEBSOCKET + "from palette_queue.client import ComfyClient\n"
        "from palette_queue.errors import MissingDependency, QueueInputError\n"
        "client = ComfyClient('http://127.0.0.1:9', 'test')\n"
        "for call in (client.connect, lambda: client.event(0.1)):\n"
        "    try:\n"
        "        call()\n"
        "    except MissingDependency as e:\n"
        "        assert isinstance(e, QueueInputError) and 'websocket-client' in str(e), e\n"
        "    else:\n"
        "        raise AssertionError('no MissingDependency')\n"
        "print('ok')\n"
    )
    proc = run_python(code, tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


# --- a real ComfyUI -----------------------------------------------------------------------------------------

LOAD_PACK = """
import asyncio, json, sys
comfy_path, pack, inputs = sys.argv[1:4]
sys.path.insert(0, comfy_path)
from comfy.cli_args import args
args.cpu = True
import comfy.model_management
import folder_paths
folder_paths.set_input_directory(inputs)
import nodes
if not asyncio.run(nodes.load_custom_node(pack)):
    raise SystemExit("ComfyUI failed to load the pack")
module = sys.modules[pack.replace(".", "_x_")]
info = {cls.GET_SCHEMA().node_id: cls.GET_NODE_INFO_V1() for cls in module.NODE_LIST}
print(json.dumps({k: [v.get("experimental", False), v["python_module"]] for k, v in info.items()}))
"""


@requires_comfyui
@pytest.mark.comfyui
def test_the_published_files_alone_load_in_comfyui_with_the_adapter_nodes_experimental(tmp_path):
    pack = tmp_path / "custom_nodes" / "palette-control"
    for rel in shipped(source_files()):
        (pack / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, pack / rel)
    assert not (pack / "tests").exists() and (pack / "nodes" / "adapter_nodes.py").is_file()
    (tmp_path / "input").mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", LOAD_PACK, str(Path(COMFYUI_PATH).resolve()), str(pack), str(tmp_path / "input")],
        cwd=COMFYUI_PATH,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    served = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(served) == set(pack_schemas())
    assert {n for n, (experimental, _) in served.items() if experimental} == ADAPTER_NODES
    assert {module for _, module in served.values()} == {"custom_nodes.palette-control"}
    # the pack copied the templates' photos into the input folder from its own example_workflows/input
    assert {p.name for p in (tmp_path / "input").iterdir()} >= {"palette_example_grey.jpg"}
