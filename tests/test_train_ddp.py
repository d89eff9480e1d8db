"""Data-parallel training with accelerate (docs/scaling.md): shards, per-sample seeds, two real CPU processes.

The fast tests check the pieces in this process: the sampler's shards, seeds that follow a sample's slot
in the step's global batch, and the gradient over images that loaded. ``test_ddp_two_processes_...``
starts ``accelerate launch`` with two CPU processes (gloo) on the tiny UNet twice (a run killed with
SIGKILL after its first checkpoint, then its resumption) and compares it with one-process runs here; it
takes 30-60 s on two shared cores; deselect it with ``-k "not ddp_two"``. Every run is the trainer with the
toy's parts, as train/toy/train_adapter.py runs it. With PALETTE_SLOW_TESTS=1 a
third test checks that a resume on the same two processes is bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("diffusers")
pytest.importorskip("accelerate")

from palette_core.errors import PaletteError  # noqa: E402
from train.data import BatchInfo, ImageDataset, ManifestError, Record, SampleKey, StepBatches, collate  # noqa: E402
from train.models import build_unet, tiny_unet_config  # noqa: E402
from train.toy.shapes import write_dataset  # noqa: E402
from train.toy.train_adapter import build_parser, parts_from_args  # noqa: E402
from train.toy.train_base import toy_scheduler  # noqa: E402
from train.train_palette_adapter import Trainer, config_from_args  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SIZE = 16


@settings(max_examples=60, deadline=None)
@given(
    weights=st.lists(st.floats(0.0, 5.0), min_size=1, max_size=12).filter(lambda w: any(x > 0 for x in w)),
    batch=st.integers(1, 4),
    world=st.integers(1, 4),
    accum=st.integers(1, 3),
    start_step=st.integers(0, 3),
)
def test_shards_of_all_processes_make_up_each_steps_global_batch(weights, batch, world, accum, start_step):
    """Process r's micro-batches are disjoint slots of one global batch per step; its records never weigh 0."""
    steps = 2
    shards = [
        list(
            StepBatches(
                weights,
                batch,
                7,
                start_step * accum,
                (start_step + steps) * accum,
                accum=accum,
                rank=r,
                world=world,
                keyed=True,
            )
        )
        for r in range(world)
    ]
    one = StepBatches(weights, batch * world * accum, 7, start_step, start_step + steps)  # one process, no accum
    for s in range(steps):
        keys = [key for r in range(world) for key in sum(shards[r][s * accum : (s + 1) * accum], [])]
        assert sorted(k.slot for k in keys) == list(range(batch * world * accum))  # disjoint, complete
        plan = one.plan(start_step + s)
        assert all(plan[k.slot] == k.index and weights[k.index] > 0 for k in keys)
    assert list(one) == [one.plan(start_step + s) for s in range(steps)]


def test_step_batches_refuse_bad_shapes():
    with pytest.raises(PaletteError, match="process 2 one of 0..1"):
        StepBatches([1.0], 2, 0, 0, 4, rank=2, world=2)
    with pytest.raises(PaletteError, match="accumulation 0 must be >= 1"):
        StepBatches([1.0], 2, 0, 0, 4, accum=0)
    with pytest.raises(ManifestError, match="no image has a positive sampling weight"):
        StepBatches([0.0, 0.0], 2, 0, 0, 4)


def test_collate_keeps_slots_of_loaded_images_and_names_skipped_records(tmp_path):
    write_dataset(tmp_path, 2, SIZE, seed=0, broken=1)  # records 0, 1 good, 2 unreadable
    ds = ImageDataset(
        [Record(tmp_path / r) for r in ("images/000000.png", "images/000001.png", "images/broken-0.png")], SIZE
    )
    idx, images, info = collate([ds[SampleKey(5, 1)], ds[SampleKey(6, 2)], ds[SampleKey(7, 0)]])
    assert idx.tolist() == [1, 0] and images.shape == (2, 3, SIZE, SIZE)
    assert info == BatchInfo(slots=[5, 7], skipped=[2])
    idx, _, info = collate([ds[0], ds[2], ds[1]])  # plain indices: slots are the positions
    assert idx.tolist() == [0, 1] and info == BatchInfo([0, 2], [2])


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread here: the launched processes have one each, and on two shared cores more threads
    mostly spin (the recipe's first call builds a 4080 x 4080 similarity: 1.7 s on one thread, 15 s on two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny SDXL-layout UNet folder (32-dim text, clean-sample prediction) and 12 toy images + 2 broken ones."""
    root = tmp_path_factory.mktemp("ddp")
    model = root / "unet"
    build_unet(
        tiny_unet_config(32, (1, 1, 1), in_channels=3, sample_size=SIZE, context_dim=32), seed=0
    ).save_pretrained(model)
    # the clean-sample target: the adapter sees the image's colours, so its loss falls within a few steps
    toy_scheduler("sample").save_pretrained(model / "scheduler")
    return model, write_dataset(root / "data", 12, SIZE, seed=0, broken=2)


def argv(setup, out: Path, batch: int, steps: int = 8, *extra: str) -> list[str]:
    model, data = setup
    return [
        *("--model", str(model), "--data", str(data), "--output", str(out)),
        *("--constant-text", "zeros", "--text-tokens", "2", "--resolution", str(SIZE), "--palette-resize", "0"),
        *("--batch-size", str(batch), "--max-steps", str(steps), "--lr", "1e-2", "--checkpoint-every", "2"),
        *("--keep-checkpoints", "10", "--validate-every", "0", "--no-progress", "--mixed-precision", "no", *extra),
    ]


def trainer(setup, out: Path, batch: int, *extra: str) -> Trainer:
    """The trainer that the toy's command line (train/toy/train_adapter.py) with these flags runs."""
    args = build_parser().parse_args(argv(setup, out, batch, 8, *extra))
    return Trainer(config_from_args(args), parts_from_args(args))


def test_the_trainer_refuses_an_empty_batch_or_accumulation(setup, tmp_path):
    with pytest.raises(PaletteError, match="--batch-size 0 and --grad-accum 1 must be at least 1"):
        trainer(setup, tmp_path / "r", 0)
    with pytest.raises(PaletteError, match="--grad-accum 0 must be at least 1"):
        trainer(setup, tmp_path / "r", 2, "--grad-accum", "0")


def test_a_samples_randomness_follows_its_slot_not_its_place_in_the_micro_batch(setup, tmp_path):
    t = trainer(setup, tmp_path / "r", 4)
    idx = torch.tensor([0, 3, 5, 7])
    images = torch.stack([t.dataset[int(i)][1] for i in idx])
    with torch.no_grad():
        whole = t.sample_losses(3, idx, images, slots=[4, 5, 6, 7])
        halves = torch.cat(
            [
                t.sample_losses(3, idx[:2], images[:2], slots=[4, 5]),
                t.sample_losses(3, idx[2:], images[2:], slots=[6, 7]),
            ]
        )
        moved = t.sample_losses(3, idx, images, slots=[0, 1, 2, 3])
    assert torch.allclose(whole, halves, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(whole, moved, rtol=1e-3)  # other slots: other noise, timesteps and conditions


def test_the_step_gradient_is_the_mean_over_the_images_that_loaded(setup, tmp_path):
    """Three of four planned images loaded: the update uses the mean of those three, not the sum over four."""
    t = trainer(setup, tmp_path / "r", 4, "--max-grad-norm", "1e9")
    idx = torch.tensor([0, 1, 2])
    images = torch.stack([t.dataset[i][1] for i in range(3)])
    t.sample_losses(9, idx, images, slots=[0, 2, 3]).mean().backward()
    expected = {n: p.grad.clone() for n, p in t.palette_model.adapter.named_parameters()}
    t.optimizer.zero_grad(set_to_none=True)
    seen = {}

    def capture():
        seen.update({n: p.grad.clone() for n, p in t.palette_model.adapter.named_parameters()})

    t.optimizer.step = capture
    loss, _, n = t.train_step(9, iter([(idx, images, BatchInfo([0, 2, 3], [13]))]))
    assert n == 3 and t.skipped == 1
    assert all(float((seen[k] - expected[k]).norm()) <= 1e-5 * float(expected[k].norm()) for k in expected)


def test_accumulation_splits_the_global_batch_as_processes_do(setup, tmp_path):
    """8 images a step as one micro-batch or as two of 4: the same samples, seeds and mean gradient."""
    whole = trainer(setup, tmp_path / "whole", 8, "--max-steps", "2")
    whole.train()
    split = trainer(setup, tmp_path / "split", 4, "--max-steps", "2", "--grad-accum", "2")
    split.train()
    init = trainer(setup, tmp_path / "init", 8).palette_model.adapter.file_tensors()
    a, b = whole.palette_model.adapter.file_tensors(), split.palette_model.adapter.file_tensors()
    assert close(a, b, init) == []
    for x, y in zip(log_rows(tmp_path / "whole"), log_rows(tmp_path / "split"), strict=True):
        assert float(x["loss"]) == pytest.approx(float(y["loss"]), rel=1e-5)


def test_a_resume_with_another_global_batch_warns_and_names_the_exact_one(setup, tmp_path, caplog):
    trainer(setup, tmp_path / "r", 4, "--max-steps", "2").train()
    with caplog.at_level("WARNING", logger="train_palette_adapter"):
        trainer(setup, tmp_path / "r", 4, "--max-steps", "3", "--grad-accum", "2").train()
    assert "with 8 images per optimizer step where the checkpoint trained with 4" in caplog.text
    assert "--grad-accum = 4 for an exact continuation" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="train_palette_adapter"):
        trainer(setup, tmp_path / "r", 2, "--max-steps", "4", "--grad-accum", "4").train()  # 8 again: exact
    assert "images per optimizer step" not in caplog.text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: list[str], tmp: Path) -> subprocess.Popen:
    """``accelerate launch`` of the toy's trainer on two CPU processes (gloo; no accelerate config of the user's)."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", ACCELERATE_USE_CPU="true", HF_HOME=str(tmp / "hf"))
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    cmd += ["--main_process_port", str(_free_port()), str(REPO / "train" / "toy" / "train_adapter.py"), *args]
    return subprocess.Popen(cmd, env=env, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-4000:]
    return out


def kill_after(proc: subprocess.Popen, checkpoint: Path) -> None:
    """SIGKILL the launcher's worker processes (and the launcher) once ``checkpoint`` exists."""
    deadline = time.monotonic() + 300
    while not checkpoint.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0][-4000:]
        time.sleep(0.005)
    workers = [
        int(pid) for task in Path(f"/proc/{proc.pid}/task").iterdir() for pid in (task / "children").read_text().split()
    ]
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    proc.kill()
    out = proc.communicate(timeout=60)[0]
    assert len(workers) == 2, (workers, out[-4000:])


def killed_run(args: list[str], out: Path, tmp: Path) -> None:
    """A two-process run killed right after its first checkpoint (step 2), tried again on the rare machine
    so loaded that the run finished before the kill landed."""
    for _ in range(3):
        kill_after(launch(args, tmp), out / "checkpoints" / "step-00000002.safetensors")
        if not (out / "palette_adapter.safetensors").exists():
            return
        shutil.rmtree(out)
    pytest.fail("the run finished each time before it could be killed")


def weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def log_rows(folder: Path) -> list[dict]:
    with (folder / "train_log.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], init: dict[str, torch.Tensor]) -> list[str]:
    """Tensors where ``a`` and ``b`` differ by more than 1e-3 of the training's change (Adam amplifies rounding
    where a gradient nearly cancels, so elementwise tolerances would not fit; a wrong shard or seed differs by ~1)."""
    assert a.keys() == b.keys() == init.keys()
    return [k for k in a if float((a[k] - b[k]).norm()) > 1e-3 * float((b[k] - init[k]).norm())]


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the launcher's workers in /proc (Linux)")
def test_ddp_two_processes_killed_and_resumed_match_one_process(setup, tmp_path):
    """Two processes x 4 images, killed after step 2 and resumed: the one-process run of 8 images a step."""
    cut, other_n = tmp_path / "cut", tmp_path / "cut-one-process"
    val = ("--validate-every", "4", "--val-steps", "2", "--val-size", str(SIZE))
    killed_run(argv(setup, cut, 4, 8, *val), cut, tmp_path)
    shutil.copytree(cut, other_n)
    resumed_run = launch(argv(setup, cut, 4, 8, *val), tmp_path)

    # meanwhile, here: the same global batch (8) and seeds in one process
    one = trainer(setup, tmp_path / "one", 8)
    init = {k: v.clone() for k, v in one.palette_model.adapter.file_tensors().items()}
    good = [i for i in range(len(one.dataset)) if one.dataset[i][1] is not None]
    idx = torch.tensor(good * 4)
    images = torch.stack([one.dataset[int(i)][1] for i in idx])

    def held_out_loss() -> float:  # fixed noise, timesteps and conditions (a step the runs never reach)
        with torch.no_grad():
            return float(one.sample_losses(10**6, idx, images).mean())

    before = held_out_loss()
    one.train()
    ref = {k: v.clone() for k, v in one.palette_model.adapter.file_tensors().items()}
    out = finish(resumed_run)
    assert "2 process(es) x batch 4 x 1 accumulation = 8 images per optimizer step" in out
    assert "resumed from step-0000000" in out

    # the two-process adapter, resumed, equals the uninterrupted one-process one to float rounding
    ddp = weights(cut / "palette_adapter.safetensors")
    assert close(ddp, ref, init) == []
    rows, one_rows = log_rows(cut), log_rows(tmp_path / "one")
    assert [r["step"] for r in rows] == [str(s) for s in range(1, 9)]  # one row a step: only the main process logs
    assert [r["skipped_images"] for r in rows] == [r["skipped_images"] for r in one_rows]  # counted over both
    assert int(rows[-1]["skipped_images"]) > 0  # broken files were drawn and skipped on some process
    for a, b in zip(rows, one_rows):  # the global batch's loss and gradient norm, logged to 6 and 4 decimals
        assert float(a["loss"]) == pytest.approx(float(b["loss"]), rel=1e-4, abs=2e-6)
        assert float(a["grad_norm"]) == pytest.approx(float(b["grad_norm"]), rel=1e-3, abs=1e-4)
    val_rows = (cut / "validation.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in val_rows[1:]] == ["0", "4", "8"]
    assert sorted(p.name for p in (cut / "validation").iterdir()) == [f"step-{s:08d}.png" for s in (0, 4, 8)]

    # it learns: the loss on held-out draws falls (1.0 % in 8 steps here, on a random base)
    with torch.no_grad():
        for k, v in one.palette_model.adapter.file_tensors().items():
            v.copy_(ddp[k])
    after = held_out_loss()
    assert after < 0.995 * before, (before, after)

    # the killed run resumed in one process with the same global batch: the one-process run too
    alone = trainer(setup, other_n, 8, *val)
    alone.train()
    assert close(alone.palette_model.adapter.file_tensors(), ref, init) == []


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("PALETTE_SLOW_TESTS") != "1", reason="three more launches: set PALETTE_SLOW_TESTS=1")
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the launcher's workers in /proc (Linux)")
def test_ddp_resume_with_the_same_processes_is_bit_identical(setup, tmp_path):
    """Killed and resumed on two processes: bit for bit the uninterrupted two-process run, and its log."""
    full, cut = tmp_path / "full", tmp_path / "cut"
    finish(launch(argv(setup, full, 4), tmp_path))
    killed_run(argv(setup, cut, 4), cut, tmp_path)
    finish(launch(argv(setup, cut, 4), tmp_path))
    a, b = weights(full / "palette_adapter.safetensors"), weights(cut / "palette_adapter.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    keys = ("step", "loss", "lr", "grad_norm", "skipped_images")
    assert [[r[k] for k in keys] for r in log_rows(cut)] == [[r[k] for k in keys] for r in log_rows(full)]
