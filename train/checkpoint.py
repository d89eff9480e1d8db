"""Training checkpoints: adapter + optimizer state in one ``.safetensors`` file, written atomically (SPEC §8).

A checkpoint is written to a temporary file in the same folder, flushed to disk, then renamed over its
final name, so a run killed at any moment leaves either the previous checkpoint or the new one, never a
torn file. Non-tensor optimizer state goes into the JSON metadata (nothing is pickled).
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from pathlib import Path

import torch
from torch import Tensor

from palette_core.adapter import PaletteAdapter
from palette_core.errors import AdapterError

log = logging.getLogger(__name__)

FORMAT = "palette-adapter-training-checkpoint"
_NAME_RE = re.compile(r"^step-(\d{8})\.safetensors$")


def checkpoint_path(folder: Path, step: int) -> Path:
    """``folder/step-00000123.safetensors``."""
    return Path(folder) / f"step-{step:08d}.safetensors"


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in ``folder`` as ``(step, path)``, oldest first (temporary files are ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME_RE.match(p.name))]
    return sorted(found)


def _json_default(value):
    if isinstance(value, Tensor):
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} in checkpoint metadata")


def _atomic_write(tensors: dict[str, Tensor], meta: dict[str, str], path: Path) -> None:
    from safetensors.torch import save

    data = save(tensors, metadata=meta)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_checkpoint(
    folder: Path,
    step: int,
    adapter: PaletteAdapter,
    optimizer: torch.optim.Optimizer,
    extra: dict | None = None,
    keep: int = 2,
) -> Path:
    """Write the checkpoint of ``step`` atomically and delete all but the newest ``keep``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"adapter.{k}": v.detach().cpu().contiguous() for k, v in adapter.file_tensors().items()}
    state = optimizer.state_dict()
    scalars: dict[str, dict] = {}
    for idx, st in state["state"].items():
        for key, value in st.items():
            if isinstance(value, Tensor):
                tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    meta = {
        "format": FORMAT,
        "step": str(int(step)),
        "layers": json.dumps(adapter.layer_dims),
        "context_dim": str(adapter.context_dim),
        "param_groups": json.dumps(state["param_groups"], default=_json_default),
        "optim_scalars": json.dumps(scalars, default=_json_default),
        "extra": json.dumps(extra or {}, default=_json_default),
    }
    path = checkpoint_path(folder, step)
    _atomic_write(tensors, meta, path)
    for _, old in list_checkpoints(folder)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path, adapter: PaletteAdapter, optimizer: torch.optim.Optimizer) -> tuple[int, dict]:
    """Restore adapter weights and optimizer state in place; returns ``(step, extra)``."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != FORMAT:
            raise AdapterError(f"{path.name}: not a palette-adapter training checkpoint")
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118  (safe_open has no iterator)
    layers = json.loads(meta["layers"])
    if layers != adapter.layer_dims:
        raise AdapterError(
            f"{path.name}: the checkpoint trains layers {sorted(layers)[:3]}… ({len(layers)}), this run "
            f"{sorted(adapter.layer_dims)[:3]}… ({len(adapter.layer_dims)}); use the same --stage/--blocks or a "
            "new output folder"
        )
    own = adapter.file_tensors()
    with torch.no_grad():
        for key, target in own.items():
            target.copy_(tensors[f"adapter.{key}"])
    groups = json.loads(meta["param_groups"])
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for idx, values in json.loads(meta["optim_scalars"]).items():
        state.setdefault(int(idx), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    return int(meta["step"]), json.loads(meta["extra"])
