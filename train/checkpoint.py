"""Training checkpoints: adapter + optimizer state in one ``.safetensors`` file, written atomically.

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
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    except OSError as e:
        raise OSError(e.errno, f"cannot write the checkpoint {path}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:  # name the checkpoint, not the temporary file that is deleted below
        raise OSError(e.errno, f"cannot write the checkpoint {path}: {e.strerror}") from None
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
        "version": adapter.file_version,
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


class DamagedCheckpoint(AdapterError):
    """A checkpoint file is truncated, corrupt or not a training checkpoint: resuming falls back to an older one."""


def _read(path: Path) -> tuple[dict[str, str], dict[str, Tensor]]:
    """The metadata and tensors of a checkpoint file (DamagedCheckpoint when it cannot be read whole)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise DamagedCheckpoint(f"{path.name}: not a palette-adapter training checkpoint")
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118  (safe_open has no iterator)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:  # a cut or overwritten file
        raise DamagedCheckpoint(
            f"{path.name}: unreadable ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
        ) from None
    return meta, tensors


def _parse(path: Path, meta: dict[str, str]) -> tuple[int, dict, list, dict, dict]:
    try:
        step = int(meta["step"])
        layers = json.loads(meta["layers"])
        groups = json.loads(meta["param_groups"])
        scalars = json.loads(meta["optim_scalars"])
        extra = json.loads(meta["extra"])
        if not (isinstance(layers, dict) and isinstance(groups, list) and isinstance(scalars, dict)):
            raise TypeError("metadata of the wrong shape")
    except (KeyError, ValueError, TypeError) as e:  # json.JSONDecodeError is a ValueError
        raise DamagedCheckpoint(f"{path.name}: damaged metadata ({e})") from None
    return step, layers, groups, scalars, extra


def _check_version(path: Path, meta: dict[str, str], tensors: dict[str, Tensor], adapter: PaletteAdapter) -> None:
    """Refuse a checkpoint of another adapter file version: the same tensors would go on training another
    attention (docs/design.md §6). Checkpoints from before the version was recorded hold version 1 (with a
    ``scalar_norm``), 2 or 3."""
    found = meta.get("version")
    if found is None:
        found = "1" if "adapter.scalar_norm.weight" in tensors else "3"
        same = found == adapter.file_version or (found == "3" and adapter.file_version == "2")
        written = f"version {found if found == '1' else '2 or 3'} (written before checkpoints named their version)"
    else:
        same, written = found == adapter.file_version, f"version {found}"
    if not same:
        raise AdapterError(
            f"{path.name}: the checkpoint trains a {written} adapter, this run makes version "
            f"{adapter.file_version}; pass --adapter-version {found} to go on with it, or use a new output folder"
        )


def load_checkpoint(path: Path, adapter: PaletteAdapter, optimizer: torch.optim.Optimizer) -> tuple[int, dict]:
    """Restore adapter weights and optimizer state in place; returns ``(step, extra)`` (docs/training.md).

    The whole file is read and checked before anything is changed, so a DamagedCheckpoint (truncated,
    corrupt, non-finite values) leaves the adapter and the optimizer as they were; an AdapterError says
    that the checkpoint is whole but trains other layers.
    """
    meta, tensors = _read(path)
    step, layers, groups, scalars, extra = _parse(path, meta)
    _check_version(path, meta, tensors, adapter)
    if layers != adapter.layer_dims:
        raise AdapterError(
            f"{path.name}: the checkpoint trains layers {sorted(layers)[:3]}… ({len(layers)}), this run "
            f"{sorted(adapter.layer_dims)[:3]}… ({len(adapter.layer_dims)}); use the same --stage/--blocks or a "
            "new output folder"
        )
    own = adapter.file_tensors()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for key, target in own.items():
        value = tensors.get(f"adapter.{key}")
        if value is None or value.shape != target.shape:
            raise DamagedCheckpoint(f"{path.name}: adapter tensor {key} is missing or has the wrong shape")
    for idx, values in state.items():
        if idx >= len(params) or any(v.ndim > 0 and v.shape != params[idx].shape for v in values.values()):
            raise DamagedCheckpoint(f"{path.name}: optimizer state {idx} does not fit the adapter's parameters")
    bad = next((k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if bad is not None:
        raise DamagedCheckpoint(f"{path.name}: {bad} holds NaN or infinite values")
    for g in groups:
        if isinstance(g, dict) and "betas" in g:
            g["betas"] = tuple(g["betas"])
    for idx, values in scalars.items():
        state.setdefault(int(idx), {}).update(values)
    try:  # checks the groups against the optimizer's before changing it
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, TypeError) as e:
        raise DamagedCheckpoint(f"{path.name}: optimizer state does not load ({e})") from None
    with torch.no_grad():
        for key, target in own.items():
            target.copy_(tensors[f"adapter.{key}"])
    return step, extra


def resume_newest(
    folder: Path, adapter: PaletteAdapter, optimizer: torch.optim.Optimizer
) -> tuple[int, dict, Path | None]:
    """Load the newest checkpoint that reads whole: ``(step, extra, path)``, or ``(0, {}, None)`` with none.

    A damaged newer one is reported (a warning naming the file) and renamed to ``*.damaged`` beside it, so
    later runs and the pruning of old checkpoints ignore it (docs/training.md, "Resumable"); when every
    checkpoint is damaged, the run stops rather than silently starting over.
    """
    found = list_checkpoints(folder)
    damaged = []
    for _, path in reversed(found):
        try:
            step, extra = load_checkpoint(path, adapter, optimizer)
        except DamagedCheckpoint as e:
            aside = path.with_name(path.name + ".damaged")
            try:
                os.replace(path, aside)
            except OSError as move_error:
                aside = path
                log.debug("could not rename %s: %s", path, move_error)
            log.warning("checkpoint %s is damaged and is skipped: %s (kept as %s)", path, e, aside.name)
            damaged.append(path.name)
            continue
        if damaged:
            log.warning("resuming from the older checkpoint %s (step %d)", path, step)
        return step, extra, path
    if damaged:
        raise DamagedCheckpoint(
            f"{folder}: every checkpoint is damaged ({', '.join(damaged)}, now *.damaged); "
            "pass --restart to start over, or put back a good checkpoint"
        )
    return 0, {}, None
