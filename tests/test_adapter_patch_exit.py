"""No traceback at interpreter exit: a patched model that lives until shutdown moves its patches quietly.

ComfyUI's ``ModelPatcher.__del__`` calls ``detach``, which calls ``.to(offload_device)`` on every patch
(``model_patches_to``). A model still referenced at exit (from a reference cycle, or a module global) is
finalized while Python tears modules down, when torch may no longer import or find its own globals; the
palette patch then has nothing to move and must not raise. The first test uses a stand-in for
ModelPatcher (any machine); the second the real one inside ComfyUI (COMFYUI_PATH).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from comfyhost import COMFYUI_PATH, requires_comfyui

REPO = Path(__file__).resolve().parents[1]

STAND_IN = textwrap.dedent(
    """
    import sys, torch
    sys.path.insert(0, {tests!r})
    from packimport import pack_module

    patch_mod = pack_module("nodes.adapter_patch")
    A = pack_module("palette_core.adapter")
    LAYER = "up_blocks.0.attentions.1.transformer_blocks.0.attn2"
    adapter = A.init_adapter({{LAYER: 64}}, seed=0, context_dim=32)
    run = patch_mod.AdapterRun(adapter, A.palette_condition(torch.tensor([[1.0, 0.0, 0.0]])))  # no patcher: moves

    class Patcher:  # what ModelPatcher.__del__ -> detach -> model_patches_to does
        def __init__(self, patches):
            self.patches, self.offload_device = patches, torch.device("cpu")

        def __del__(self):
            for i, p in enumerate(self.patches):
                self.patches[i] = p.to(self.offload_device)

    chained = patch_mod.PaletteAttn2Patch(run, LAYER)
    model = Patcher([run, patch_mod.PaletteAttn2Patch(run, LAYER, previous=chained)])
    model.cycle = model  # freed only by the collector at shutdown, with modules half torn down
    {extra}
    print("built", flush=True)
    """
)


def run_stand_in(extra: str = "") -> subprocess.CompletedProcess:
    script = STAND_IN.format(tests=str(REPO / "tests"), extra=extra)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)


def test_a_patch_freed_at_interpreter_exit_prints_no_traceback():
    done = run_stand_in()
    assert done.returncode == 0 and done.stdout == "built\n", done.stderr
    assert "Exception ignored" not in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_while_running_to_still_moves_the_adapter():
    done = run_stand_in(
        "model.patches[0].to(torch.float64); "
        "assert all(p.dtype == torch.float64 for p in adapter.parameters()); "
        "model.patches[1].to(torch.float32); "
        "assert all(p.dtype == torch.float32 for p in adapter.parameters())"
    )
    assert done.returncode == 0, done.stderr


COMFY = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from comfyhost import load_comfyui, run_node, tiny_sdxl
    host = load_comfyui()
    model = tiny_sdxl(seed=0)
    layers = host.pack.nodes.model_family.attention_layers_of(model)
    pa = host.pack.palette_core.adapter
    adapter = pa.init_adapter({{x.name: x.dim for x in layers}}, seed=1)
    palette = host.pack.palette_core.palette.Palette.parse("#e63946:2, #f1faee")
    (patched,) = run_node("ApplyPaletteAdapter", model=model, adapter=adapter, condition=palette, weight=1.0,
        start_percent=0.0, end_percent=1.0, blocks="up_blocks.0.attentions.1", negative=None)
    ap = host.pack.nodes.adapter_patch
    run = ap.AdapterRun(adapter, pa.palette_condition(palette.colors, palette.weights))  # no patcher: moves
    bare = model.clone()
    bare.set_model_attn2_replace(ap.PaletteAttn2Patch(run, next(iter(layers)).name), "output", 1, 0)
    keep = [patched, bare]
    keep.append(keep)  # collected at shutdown, as a model still held by a server's caches would be
    print("built", flush=True)
    """
)


@requires_comfyui
@pytest.mark.comfyui
def test_patched_comfyui_models_freed_at_exit_print_no_traceback():
    env = {**os.environ, "COMFYUI_PATH": COMFYUI_PATH}
    done = subprocess.run(
        [sys.executable, "-c", COMFY.format(tests=str(REPO / "tests"))],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env=env,
    )
    assert done.returncode == 0 and done.stdout.endswith("built\n"), done.stderr[-3000:]
    assert "Exception ignored" not in done.stderr and "adapter_patch.py" not in done.stderr, done.stderr[-3000:]
