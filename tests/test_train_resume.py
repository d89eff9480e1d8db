"""Resuming survives a damaged checkpoint: it is reported, set aside, and the one before it is used.

The checkpoint tests drive train/checkpoint.py with a one-layer adapter and AdamW (instant); one test runs
the trainer of tests/test_train.py (its tiny UNet and toy data set) through a cut checkpoint.
"""

from __future__ import annotations

import logging
import os

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("accelerate")

from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from test_train import SIZE, config, tiny_parts  # noqa: E402

from palette_core.adapter import FILE_VERSION, init_adapter  # noqa: E402
from palette_core.errors import AdapterError  # noqa: E402
from train.checkpoint import (  # noqa: E402
    DamagedCheckpoint,
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    resume_newest,
    save_checkpoint,
)
from train.toy.shapes import write_dataset  # noqa: E402
from train.train_palette_adapter import Trainer  # noqa: E402

LAYER = "up_blocks.0.attentions.1.transformer_blocks.0.attn2"


def setup(seed: int = 0, layer: str = LAYER, version: str = FILE_VERSION):
    adapter = init_adapter({layer: 64}, seed=seed, context_dim=32, version=version)
    return adapter, torch.optim.AdamW(adapter.parameters(), lr=1e-2)


def step(adapter, optimizer, times: int = 1) -> None:
    for _ in range(times):
        loss = sum((p - 0.5).square().sum() for p in adapter.parameters())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def snapshot(adapter, optimizer) -> tuple[dict, dict]:
    weights = {k: v.clone() for k, v in adapter.file_tensors().items()}
    state = optimizer.state_dict()["state"]
    moments = {(i, k): v.clone() for i, s in state.items() for k, v in s.items() if isinstance(v, torch.Tensor)}
    return weights, moments


def same(a: tuple[dict, dict], b: tuple[dict, dict]) -> bool:
    return all(x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x) for x, y in zip(a, b, strict=True))


def two_checkpoints(folder):
    """Checkpoints of steps 1 and 3 of one run; the state at each."""
    adapter, optimizer = setup()
    step(adapter, optimizer)
    save_checkpoint(folder, 1, adapter, optimizer, {"skipped": 1})
    first = snapshot(adapter, optimizer)
    step(adapter, optimizer, 2)
    save_checkpoint(folder, 3, adapter, optimizer, {"skipped": 3})
    return first, snapshot(adapter, optimizer)


def truncate(path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_a_truncated_newest_checkpoint_is_reported_and_the_one_before_is_used(tmp_path, caplog):
    first, _ = two_checkpoints(tmp_path)
    newest = checkpoint_path(tmp_path, 3)
    truncate(newest)
    adapter, optimizer = setup(seed=7)  # a fresh run: other weights, no optimizer state
    with caplog.at_level(logging.WARNING, logger="train.checkpoint"):
        resumed, extra, path = resume_newest(tmp_path, adapter, optimizer)
    assert (resumed, extra, path) == (1, {"skipped": 1}, checkpoint_path(tmp_path, 1))
    assert same(snapshot(adapter, optimizer), first)  # exactly the state of step 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings[0].startswith(
        f"checkpoint {newest} is damaged and is skipped: step-00000003.safetensors: unreadable"
    )
    assert warnings[0].endswith("(kept as step-00000003.safetensors.damaged)")
    assert warnings[1] == f"resuming from the older checkpoint {checkpoint_path(tmp_path, 1)} (step 1)"
    assert [s for s, _ in list_checkpoints(tmp_path)] == [1] and newest.with_name(newest.name + ".damaged").exists()
    step(adapter, optimizer)  # the restored optimizer state is usable
    save_checkpoint(tmp_path, 2, adapter, optimizer)  # pruning keeps 2 and never counts the damaged file
    assert [s for s, _ in list_checkpoints(tmp_path)] == [1, 2]


def _metadata_of(path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


def _nan_weight(path):
    tensors, meta = load_file(str(path)), _metadata_of(path)
    tensors[next(k for k in tensors if k.startswith("adapter."))][0] = float("nan")
    save_file(tensors, str(path), metadata=meta)


def _metadata(path, **changes):
    tensors, meta = load_file(str(path)), _metadata_of(path)
    save_file(tensors, str(path), metadata={**meta, **changes})


def _foreign_moment(path):
    tensors, meta = load_file(str(path)), _metadata_of(path)
    tensors["optim.9.exp_avg"] = torch.zeros(3)
    save_file(tensors, str(path), metadata=meta)


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (lambda p: truncate(p, 0.0), "unreadable"),
        (lambda p: truncate(p, 7 / p.stat().st_size), "unreadable"),
        (lambda p: truncate(p, 0.98), "unreadable"),
        (lambda p: p.write_bytes(os.urandom(16) + p.read_bytes()[16:]), "unreadable"),
        (lambda p: save_file({"x": torch.zeros(2)}, str(p)), "not a palette-adapter training checkpoint"),
        (_nan_weight, r"adapter\.\S+ holds NaN or infinite values"),
        (lambda p: _metadata(p, layers="{"), "damaged metadata"),
        (lambda p: _metadata(p, step="three"), "damaged metadata"),
        (lambda p: _metadata(p, param_groups="[]"), "optimizer state does not load"),
        (_foreign_moment, "optimizer state 9 does not fit"),
    ],
)
def test_damage_of_any_kind_is_refused_before_anything_changes(tmp_path, damage, says):
    _, newest = two_checkpoints(tmp_path)
    path = checkpoint_path(tmp_path, 3)
    damage(path)
    adapter, optimizer = setup(seed=7)
    step(adapter, optimizer)
    before = snapshot(adapter, optimizer)
    with pytest.raises(DamagedCheckpoint, match=f"step-00000003.safetensors: {says}"):
        load_checkpoint(path, adapter, optimizer)
    assert same(snapshot(adapter, optimizer), before)  # nothing half-loaded
    assert not same(before, newest)


def test_when_every_checkpoint_is_damaged_the_run_stops(tmp_path):
    two_checkpoints(tmp_path)
    for s in (1, 3):
        truncate(checkpoint_path(tmp_path, s))
    with pytest.raises(DamagedCheckpoint, match=r"every checkpoint is damaged .* pass --restart to start over"):
        resume_newest(tmp_path, *setup())


def test_a_whole_checkpoint_of_other_layers_is_not_damage(tmp_path):
    two_checkpoints(tmp_path)
    other = "down_blocks.1.attentions.0.transformer_blocks.0.attn2"
    with pytest.raises(AdapterError, match="trains layers") as caught:
        resume_newest(tmp_path, *setup(layer=other))
    assert not isinstance(caught.value, DamagedCheckpoint)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [1, 3]  # nothing set aside


def test_a_checkpoint_of_another_adapter_version_is_refused_and_left_in_place(tmp_path):
    adapter, optimizer = setup(version="3")
    step(adapter, optimizer)
    path = save_checkpoint(tmp_path, 1, adapter, optimizer)
    assert _metadata_of(path)["version"] == "3"
    # the same tensors, trained under another attention (docs/design.md §6): refused, not taken as damage
    with pytest.raises(
        AdapterError, match="trains a version 3 adapter, this run makes version 4; pass --adapter-version 3"
    ) as caught:
        resume_newest(tmp_path, *setup(version="4"))
    assert not isinstance(caught.value, DamagedCheckpoint) and list_checkpoints(tmp_path) == [(1, path)]
    same_version = setup(seed=5, version="3")
    assert resume_newest(tmp_path, *same_version)[0] == 1
    assert same(snapshot(*same_version), snapshot(adapter, optimizer))


@pytest.mark.parametrize(("version", "loads_into"), [("3", ("2", "3")), ("1", ("1",))])
def test_a_checkpoint_written_before_versions_were_recorded_loads_only_into_the_versions_it_can_be(
    tmp_path, version, loads_into
):
    adapter, optimizer = setup(version=version)
    step(adapter, optimizer)
    path = save_checkpoint(tmp_path, 1, adapter, optimizer)
    tensors, meta = load_file(str(path)), _metadata_of(path)
    del meta["version"]
    save_file(tensors, str(path), metadata=meta)
    for other in ("1", "2", "3", "4"):
        if other in loads_into:
            assert load_checkpoint(path, *setup(version=other))[0] == 1
        else:
            with pytest.raises(AdapterError, match="written before checkpoints named their version"):
                load_checkpoint(path, *setup(version=other))


def test_the_trainer_resumes_past_a_cut_checkpoint_to_the_weights_of_an_uninterrupted_run(
    tmp_path, monkeypatch, caplog
):
    # the recipe's Quadratic-Chi distance (palette_core.adapter.image_scalars looks it up at each call)
    # builds a 4080 x 4080 matrix once per process (most of a test's time on a CPU); resuming does not
    # depend on its values, so both runs use a cheap stand-in
    monkeypatch.setattr("palette_core.distance.quadratic_chi", lambda a, b: (a - b).abs().sum(-1))
    data = write_dataset(tmp_path / "toy", 8, SIZE, seed=0)
    run = tmp_path / "run"
    full = Trainer(config(run, data, max_steps=2, checkpoint_every=1, batch_size=1), tiny_parts())
    full.train()
    done = {k: v.clone() for k, v in full.palette_model.adapter.file_tensors().items()}
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [1, 2]
    truncate(checkpoint_path(run / "checkpoints", 2), 0.6)

    resumed = Trainer(config(run, data, max_steps=2, checkpoint_every=1, batch_size=1), tiny_parts())
    with caplog.at_level(logging.INFO):
        assert resumed.train()["step"] == 2
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith(f"checkpoint {checkpoint_path(run / 'checkpoints', 2)} is damaged") for m in messages)
    assert "resumed from step-00000001.safetensors (step 1)" in messages
    after = resumed.palette_model.adapter.file_tensors()
    assert all(torch.equal(after[k], done[k]) for k in done)  # step 2 redone exactly
    rows = (run / "train_log.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [1, 2]
    assert load_checkpoint(checkpoint_path(run / "checkpoints", 2), *setup_like(resumed))[0] == 2


def setup_like(trainer):
    adapter = init_adapter(
        trainer.palette_model.adapter.layer_dims, context_dim=trainer.palette_model.adapter.context_dim
    )
    return adapter, torch.optim.AdamW(adapter.parameters())
