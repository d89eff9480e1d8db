"""Train the Palette-Adapter on a frozen SDXL UNet with diffusers + accelerate (paper §3.2, docs/design.md §8).

Stage 1 trains adapters on every cross-attention layer (70 in SDXL); ``analyse_blocks.py`` then ranks the
blocks and stage 2 trains on the chosen ones. Runs resume from the newest checkpoint in the output folder
and reach exactly the weights of an uninterrupted run. The result, ``palette_adapter.safetensors``, is
the docs/design.md §6 file that ComfyUI's PaletteAdapterLoader reads.

    accelerate launch train/train_palette_adapter.py --model sdxl-base/ --data curated.jsonl \
        --text-cache captions.safetensors --output runs/stage1 --stage 1 --mixed-precision bf16

``accelerate launch --num_processes N`` (or an accelerate config for several GPUs or machines) trains
data-parallel: ``--batch-size`` per process, N x batch x ``--grad-accum`` images per optimizer step.
See docs/training.md for the whole procedure and docs/scaling.md for several GPUs and machines.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a script: make the repository root importable
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import csv
import ctypes
import json
import logging
import math
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from palette_core.adapter import (
    CONTEXT_DIM,
    FILE_VERSION,
    READABLE_VERSIONS,
    ColorCondition,
    PaletteAdapter,
    copy_weights,
    init_adapter,
    load_adapter,
    palette_condition,
)
from palette_core.blocks import AttentionLayers, diffusers_unet_layers, text_kv
from palette_core.distance import palette_emd
from palette_core.errors import AdapterError, PaletteError
from palette_core.palette import Palette
from palette_core.render import palette_stripes
from train.checkpoint import resume_newest, save_checkpoint
from train.data import (
    BatchInfo,
    CachedText,
    ImageDataset,
    LatentCache,
    StepBatches,
    collate,
    manifest_palettes,
    read_manifest,
    step_seed,
)
from train.models import VaeCodec, load_unet, load_vae, noise_scheduler
from train.processor import PaletteUNet, generate, time_ids
from train.recipe import PALETTE_SOURCES, DrawnConditions, Recipe, draw_conditions
from train.schedule import LR_SCHEDULES, learning_rate

log = logging.getLogger("train_palette_adapter")

DEFAULT_VAL_PALETTES = (
    "#e63946, #f1faee, #a8dadc, #457b9d, #1d3557",
    "#264653, #2a9d8f, #e9c46a, #f4a261, #e76f51",
    "#ff00ff, #00ffff, #ffff00",
    "#3c1518, #69140e, #a44200, #d58936, #fffb46",
)
DEFAULT_VAL_PROMPTS = ("a cosy living room, interior photo", "a landscape painting of hills at dusk")
TRAIN_LOG = "train_log.csv"
VAL_LOG = "validation.csv"
ADAPTER_FILE = "palette_adapter.safetensors"


@dataclass
class TrainConfig:
    """Every setting of a training run (the CLI flags, with ``-`` for ``_``)."""

    output: Path = Path("runs/palette-adapter")
    data: Path | None = None
    model: Path | None = None
    vae: Path | None = None
    text_cache: Path | None = None
    resolution: int = 512
    min_size: int | None = None
    stage: int = 1
    blocks: list[str] | None = None
    blocks_from: Path | None = None
    init_adapter: Path | None = None
    adapter_version: str | None = None  # file version of a new adapter (docs/design.md §6); None: the newest
    batch_size: int = 4
    grad_accum: int = 1
    max_steps: int = 1000
    lr: float = 1e-4
    warmup_steps: int = 0
    lr_schedule: str = "constant"  # or "cosine": to a tenth of lr at max_steps (train/schedule.py)
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    mixed_precision: str | None = None  # None: as accelerate's config or launch flag says ("no" without one)
    gradient_checkpointing: bool = False
    adam8bit: bool = False
    seed: int = 0
    recipe: Recipe = field(default_factory=Recipe)
    checkpoint_every: int = 250
    keep_checkpoints: int = 2
    validate_every: int = 250
    val_palettes: list[str] = field(default_factory=lambda: list(DEFAULT_VAL_PALETTES))
    val_prompts: list[str] = field(default_factory=lambda: list(DEFAULT_VAL_PROMPTS))
    val_seeds: int = 1
    val_steps: int = 20
    val_guidance: float = 5.0
    val_size: int | None = None
    num_workers: int = 0
    recipe_ahead: int | None = None  # micro-steps of recipe drawn ahead in a thread (None: 2 on a GPU, 0 on CPU)
    latent_cache: Path | None = None
    restart: bool = False
    progress: bool = True


@dataclass
class ModelParts:
    """What the trainer trains on, given in place of the SDXL parts from ``--model``, ``--vae`` and ``--text-cache``.

    The one way in for other models: the toy's pixel-space UNet, codec and encoder-free text
    (train/toy/parts.py), the tests' tiny UNet, the benchmarks' stand-ins.
    """

    unet: torch.nn.Module  # a diffusers UNet2DConditionModel with SDXL's layout
    codec: Any  # images <-> latents: encode/decode, and moments/sample for a VAE (what --latent-cache stores)
    text: Any  # embed(captions) and empty(batch): (text [B, L, width], pooled [B, 1280])
    context_dim: int | None = CONTEXT_DIM  # the adapter's text width; None: the UNet's own (it then fits no SDXL)


def _weight_dtype(mixed_precision: str) -> torch.dtype:
    table = {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if mixed_precision not in table:
        raise PaletteError(f"mixed precision {mixed_precision!r}: choose no, bf16 or fp16")
    return table[mixed_precision]


def build_adapter(
    unet, layers: AttentionLayers, seed: int, init_from: Path | None = None, version: str | None = None
) -> PaletteAdapter:
    """A new adapter for ``layers`` in file ``version`` (default the newest): W_k/W_v from the text to_k/to_v,
    or from a stage-1 file where it has them (in that file's version, so an older file's scalar token goes on
    training as it was)."""
    if version is not None and version not in READABLE_VERSIONS:
        raise PaletteError(f"--adapter-version {version!r}: choose one of {', '.join(READABLE_VERSIONS)}")
    src = None
    if init_from is not None:
        src = load_adapter(init_from, model_layers=diffusers_unet_layers(unet, layers.context_dim))
        if version is not None and version != src.file_version:
            raise PaletteError(
                f"--adapter-version {version} but --init-adapter {init_from} is a version {src.file_version} "
                "adapter: leave --adapter-version out to go on in the file's version"
            )
    version = version or (FILE_VERSION if src is None else src.file_version)
    adapter = init_adapter(layers.dims, seed, text_kv(unet, layers), layers.context_dim, version=version)
    if src is not None:
        copy_weights(adapter, src, [x.name for x in layers if x.name in src.layer_dims])
    return adapter


def chosen_blocks(config: TrainConfig) -> list[str] | None:
    """The blocks this run trains: all (stage 1), ``--blocks``, or ``--blocks-from`` an analysis JSON."""
    if config.blocks:
        return list(config.blocks)
    if config.blocks_from is not None:
        data = json.loads(Path(config.blocks_from).read_text())
        blocks = data.get("recommended") if isinstance(data, dict) else None
        if not blocks:
            raise PaletteError(f"{config.blocks_from}: no 'recommended' block list (write it with analyse_blocks.py)")
        return list(blocks)
    if config.stage == 2:
        raise PaletteError("stage 2 trains chosen blocks: give --blocks or --blocks-from (analyse_blocks.py output)")
    return None


def reuse_freed_memory() -> bool:
    """Make glibc keep freed blocks of up to 32 MB for reuse; True where it took the settings (docs/performance.md).

    A CPU step frees and allocates again the adapter's gradients (1.5 GB for SDXL's 70 layers, in blocks of
    5-10 MB) and the UNet's activations. By default glibc maps each such block fresh from the kernel and
    pays a page fault per 4 KB on its first touch: 0.7 µs each on the project's machine, about 0.3 s a step
    for the gradients alone. The settings are process-wide; jemalloc or tcmalloc reuse by themselves.
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl): nothing to set
        return False
    # M_MMAP_THRESHOLD (-3): blocks below it come from the heap, 32 MB is glibc's ceiling; M_TRIM_THRESHOLD
    # (-1): return free heap to the kernel only beyond 1 GiB
    return bool(mallopt(-3, 32 << 20)) and bool(mallopt(-1, 1 << 30))


class Trainer:
    """One training run, on SDXL from the config's paths or on the given ``parts`` (toy runs, tests)."""

    def __init__(self, config: TrainConfig, parts: ModelParts | None = None, records=None) -> None:
        from accelerate import Accelerator, DistributedDataParallelKwargs

        self.config = c = config
        if c.batch_size < 1 or c.grad_accum < 1:
            raise PaletteError(f"--batch-size {c.batch_size} and --grad-accum {c.grad_accum} must be at least 1")
        if c.lr_schedule not in LR_SCHEDULES:
            raise PaletteError(f"--lr-schedule {c.lr_schedule!r}: choose one of {', '.join(LR_SCHEDULES)}")
        # gradients as views of DDP's all-reduce buckets: no second copy of the adapter's gradients
        ddp = DistributedDataParallelKwargs(gradient_as_bucket_view=True)
        self.accelerator = acc = Accelerator(mixed_precision=c.mixed_precision, kwargs_handlers=[ddp])
        self.device = acc.device
        if self.device.type == "cpu":
            reuse_freed_memory()
        self.weight_dtype = _weight_dtype(acc.mixed_precision)
        self.out = Path(c.output)
        # the output folder is the main process's alone: other machines need not see it (docs/scaling.md)
        if acc.is_main_process:
            if c.restart:
                for name in ("checkpoints", TRAIN_LOG, VAL_LOG, "validation"):
                    p = self.out / name
                    shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
            self.out.mkdir(parents=True, exist_ok=True)

        parts = self._sdxl_parts() if parts is None else parts
        self.unet = parts.unet.requires_grad_(False).eval().to(self.device, self.weight_dtype)
        if c.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
        self.layers = diffusers_unet_layers(self.unet, parts.context_dim).select(chosen_blocks(c))
        adapter = build_adapter(self.unet, self.layers, c.seed, c.init_adapter, c.adapter_version)
        self.adapter = adapter.to(self.device).train()
        self.adapter.requires_grad_(True)
        self.model = PaletteUNet(self.unet, self.adapter)
        self.optimizer = self._optimizer()
        if acc.num_processes > 1:
            # every process loads the same frozen base itself; DDP's start-up broadcast of its weights (5 GB
            # for SDXL) would only copy them again. The adapter's are still broadcast from process 0.
            frozen = [n for n, p in self.model.named_parameters() if not p.requires_grad]
            frozen += [n for n, _ in self.model.named_buffers()]
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(self.model, frozen)
        self.model, self.optimizer = acc.prepare(self.model, self.optimizer)
        self.scheduler = noise_scheduler(c.model)
        self.codec = parts.codec
        self.text = parts.text
        self.records = records if records is not None else read_manifest(self._need(c.data, "--data"))
        self.dataset = ImageDataset(self.records, c.resolution, c.min_size)
        self.palettes = manifest_palettes(self.records) if c.recipe.palette_source == "manifest" else None
        # only a VAE's encoder is worth caching (a pixel codec's "encoding" is a reshape)
        cache = c.latent_cache and hasattr(self.codec, "moments")
        self.latents = LatentCache(c.latent_cache, c.resolution) if cache else None
        self.skipped = 0
        self.skipped_paths: set[str] = set()
        self.base_emd: float | None = None
        self.history: list[tuple[int, float]] = []

    @staticmethod
    def _need(value, flag: str):
        if value is None:
            raise PaletteError(f"{flag} is required")
        return value

    def _optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        params = [p for p in self.adapter.parameters() if p.requires_grad]
        if c.adam8bit:
            try:
                import bitsandbytes as bnb
            except ImportError as e:
                raise ImportError("--adam8bit needs bitsandbytes (pip install -r train/requirements.txt)") from e
            return bnb.optim.AdamW8bit(params, lr=c.lr, weight_decay=c.weight_decay)
        try:  # the fused kernel is ~8x faster than the per-tensor loop (the 4080 x 8192 projection dominates)
            return torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay, fused=True)
        except (RuntimeError, ValueError):
            return torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)

    def _sdxl_parts(self) -> ModelParts:
        """SDXL's UNet, VAE and cached text embeddings from ``--model``, ``--vae`` and ``--text-cache``."""
        c = self.config
        if c.model is None:
            raise PaletteError("give --model (a diffusers SDXL folder or a single-file .safetensors checkpoint)")
        if c.text_cache is None:
            raise PaletteError("give --text-cache (captions encoded with encode_text_cache)")
        unet = load_unet(c.model)
        return ModelParts(unet, VaeCodec(load_vae(c.vae or c.model), self.device), CachedText(c.text_cache))

    @property
    def palette_model(self) -> PaletteUNet:
        """The unwrapped UNet + adapter."""
        return self.accelerator.unwrap_model(self.model)

    # ---- one micro-batch -------------------------------------------------------------------------

    def _latents(self, idx: Tensor, images: Tensor, gens: Sequence[torch.Generator]) -> Tensor:
        codec = self.codec
        if self.latents is not None:
            moments = self.latents.moments(codec, [self.records[int(i)].image for i in idx], images)
        elif hasattr(codec, "moments") and hasattr(codec, "sample"):  # a VAE: encode the batch, sample per image
            moments = codec.moments(images.to(self.device))
        else:
            return torch.cat([codec.encode(images[k : k + 1].to(self.device), g) for k, g in enumerate(gens)])
        return torch.cat([codec.sample(moments[k : k + 1], g) for k, g in enumerate(gens)]).to(self.device)

    def draw(
        self, step: int, images: Tensor, slots: Sequence[int] | None = None, idx: Tensor | None = None
    ) -> tuple[DrawnConditions, list[torch.Generator]]:
        """Colour conditions and one generator per image, advanced past them (CPU work that can run ahead).

        ``idx``: the images' record indices, which the manifest palette source needs.

        Image ``k`` draws from the seed of (seed, step, ``slots[k]``), its place in the optimizer step's
        global batch (``slots`` None: 0, 1, ...), so the same global batch split over any number of processes
        or micro-steps draws the same conditions, noise and timesteps.
        """
        c = self.config
        slots = range(images.shape[0]) if slots is None else slots
        gens = [torch.Generator().manual_seed(step_seed(c.seed, step, 1, int(s))) for s in slots]
        pixels = images.permute(0, 2, 3, 1)
        palettes = None if self.palettes is None or idx is None else [self.palettes[int(i)] for i in idx]
        parts = [
            draw_conditions(pixels[k : k + 1], c.recipe, g, None if palettes is None else palettes[k : k + 1])
            for k, g in enumerate(gens)
        ]
        drawn = DrawnConditions(
            ColorCondition.cat([d.condition for d in parts]),
            torch.cat([d.drop_text for d in parts]),
            torch.cat([d.kind_drawn for d in parts]),
        )
        return drawn, gens

    def sample_losses(
        self,
        step: int,
        idx: Tensor,
        images: Tensor,
        drawn: tuple[DrawnConditions, list[torch.Generator]] | None = None,
        slots: Sequence[int] | None = None,
    ) -> Tensor:
        """The noise-prediction MSE of each image ``[B]`` (all its randomness from its step and slot)."""
        c = self.config
        drawn, gens = drawn or self.draw(step, images, slots, idx)
        latents = self._latents(idx, images, gens).to(self.weight_dtype)
        b = latents.shape[0]
        noise = torch.cat([torch.randn((1, *latents.shape[1:]), generator=g) for g in gens])
        noise = noise.to(self.device, latents.dtype)
        t_max = self.scheduler.config.num_train_timesteps
        steps = torch.cat([torch.randint(0, t_max, (1,), generator=g) for g in gens]).to(self.device)
        noisy = self.scheduler.add_noise(latents, noise, steps)
        if self.scheduler.config.prediction_type == "v_prediction":
            target = self.scheduler.get_velocity(latents, noise, steps)
        elif self.scheduler.config.prediction_type == "sample":
            target = latents
        else:
            target = noise
        emb, pooled = self.text.embed([self.records[int(i)].caption for i in idx])
        e_emb, e_pooled = self.text.empty(b)
        drop = drawn.drop_text
        emb = torch.where(drop[:, None, None], e_emb, emb).to(self.device, self.weight_dtype)
        pooled = torch.where(drop[:, None], e_pooled, pooled).to(self.device, self.weight_dtype)
        size = c.resolution
        pred = self.model(
            noisy, steps, emb, pooled, time_ids(b, size, size, self.device), drawn.condition.to(self.device)
        )
        return (pred.float() - target.float()).square().flatten(1).mean(1)

    def micro_loss(
        self,
        step: int,
        idx: Tensor,
        images: Tensor,
        drawn: tuple[DrawnConditions, list[torch.Generator]] | None = None,
        slots: Sequence[int] | None = None,
    ) -> Tensor:
        """The mean noise-prediction MSE of one micro-batch."""
        return self.sample_losses(step, idx, images, drawn, slots).mean()

    def prepared(self, batches: Iterable, first_micro: int = 0, ahead: int = 2) -> Iterator[tuple]:
        """``batches`` with their conditions drawn ``ahead`` micro-steps early in a worker thread.

        Loading and the colour recipe (histograms, median cuts) are CPU work; done here they overlap the
        GPU's step instead of stalling it. Each micro-step still draws from its own seed, so results are
        the same as drawing in the step.
        """
        it = iter(batches)

        def task(micro: int) -> tuple | None:
            item = next(it, None)
            if item is None:
                return None
            idx, images, info = item
            step = micro // self.config.grad_accum
            return idx, images, info, (self.draw(step, images, info.slots, idx) if images.shape[0] else None)

        pool = ThreadPoolExecutor(1, thread_name_prefix="palette-recipe")
        pending = deque(pool.submit(task, first_micro + k) for k in range(ahead))
        micro = first_micro + ahead
        try:
            while (item := pending.popleft().result()) is not None:
                pending.append(pool.submit(task, micro))
                micro += 1
                yield item
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    # ---- the loop --------------------------------------------------------------------------------

    def _resume(self) -> int:
        """The step to continue from: the main process reads the newest checkpoint and shares its state."""
        acc = self.accelerator
        step, extra = self._load_newest() if acc.is_main_process else (0, {})
        if acc.num_processes > 1:
            step, extra = self._share_checkpoint(step, extra)
        self.skipped = int(extra.get("skipped", 0))
        self.base_emd = extra.get("base_emd")
        if step and acc.is_main_process:
            self._check_batch(extra)
        return step

    def _load_newest(self) -> tuple[int, dict]:
        # a damaged newest checkpoint is reported and set aside, and the one before it is used
        step, extra, path = resume_newest(self.out / "checkpoints", self.palette_model.adapter, self.optimizer)
        if path is not None:
            log.info("resumed from %s (step %d)", path.name, step)
        return step, extra

    def _share_checkpoint(self, step: int, extra: dict) -> tuple[int, dict]:
        """Broadcast the main process's resumed step, adapter and optimizer state to every process.

        Only the main process reads the output folder, so the other machines need no shared storage, and
        every process continues from bit-identical state.
        """
        import torch.distributed as dist

        main = self.accelerator.is_main_process
        state = self.optimizer.state_dict()["state"] if main else {}
        layout = {
            i: {k: (v.shape, v.dtype, v.device.type == "cpu") if isinstance(v, Tensor) else v for k, v in st.items()}
            for i, st in state.items()
        }
        header = [step, extra, layout]
        dist.broadcast_object_list(header, src=0)
        step, extra, layout = header
        if step == 0:  # a fresh run: the seeded adapter is the same everywhere (and DDP broadcast it)
            return 0, extra
        with torch.no_grad():
            for p in self.palette_model.adapter.parameters():
                dist.broadcast(p.data, src=0)
        shared: dict[int, dict] = {}
        for i in sorted(layout):
            for key, spec in layout[i].items():
                if not isinstance(spec, tuple):
                    shared.setdefault(i, {})[key] = spec
                    continue
                shape, dtype, on_cpu = spec
                buf = state[i][key].to(self.device) if main else torch.empty(shape, dtype=dtype, device=self.device)
                dist.broadcast(buf, src=0)
                shared.setdefault(i, {})[key] = buf.cpu() if on_cpu else buf
        if not main:
            full = self.optimizer.state_dict()
            full["state"] = shared
            self.optimizer.load_state_dict(full)
        return step, extra

    def _check_batch(self, extra: dict) -> None:
        """Warn when a resumed run's global batch differs from its checkpoint's (the steps then see other data)."""
        was, now = extra.get("global_batch"), self.global_batch
        if was is not None and int(was) != now:
            log.warning(
                "resuming with %d images per optimizer step where the checkpoint trained with %d: steps from here "
                "on draw other data than the interrupted run would have; give --batch-size x processes x "
                "--grad-accum = %d for an exact continuation",
                now,
                int(was),
                int(was),
            )

    @property
    def global_batch(self) -> int:
        """Images per optimizer step: per-process batch x processes x gradient accumulation."""
        return self.config.batch_size * self.accelerator.num_processes * self.config.grad_accum

    def _truncate_logs(self, step: int) -> None:
        for name in (TRAIN_LOG, VAL_LOG):
            p = self.out / name
            if not p.is_file():
                continue
            with p.open(newline="") as f:
                rows = list(csv.reader(f))
            keep = rows[:1] + [r for r in rows[1:] if r and int(r[0]) <= step]
            with p.open("w", newline="") as f:
                csv.writer(f).writerows(keep)

    def _log_row(self, name: str, header: Sequence[str], row: Sequence) -> None:
        p = self.out / name
        new = not p.is_file()
        with p.open("a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(header)
            w.writerow(row)

    def _lr(self, step: int) -> float:
        c = self.config
        return learning_rate(step, c.max_steps, c.lr, c.warmup_steps, c.lr_schedule)

    def save(self, step: int) -> Path:
        """Write the training checkpoint of ``step`` (main process only)."""
        extra = {
            "skipped": self.skipped,
            "base_emd": self.base_emd,
            "config": _jsonable(asdict(self.config)),
            "global_batch": self.global_batch,
            "processes": self.accelerator.num_processes,
        }
        return save_checkpoint(
            self.out / "checkpoints",
            step,
            self.palette_model.adapter,
            self.optimizer,
            extra,
            self.config.keep_checkpoints,
        )

    def export(self, step: int, path: Path | None = None) -> Path:
        """Write the docs/design.md §6 adapter file (what ComfyUI loads)."""
        from palette_core.adapter import save_adapter

        c = self.config
        meta = {"stage": str(c.stage), "blocks": json.dumps(self.palette_model.adapter.blocks)}
        if c.model is not None:
            meta["trained_on"] = Path(c.model).name
        return save_adapter(self.palette_model.adapter, path or self.out / ADAPTER_FILE, trained_steps=step, **meta)

    def train(self, stop: Callable[[int], bool] | None = None) -> dict:
        """Run (or resume) to ``max_steps``; returns a summary.

        ``stop(step)``, asked after each step is logged and checkpointed, ends the run there when true, as a
        kill would (how the tests and the toy's ``--stop-after`` try resuming).
        """
        c = self.config
        acc = self.accelerator
        start = self._resume()
        if acc.is_main_process:
            self._truncate_logs(start)
            log.info(
                "%d process(es) x batch %d x %d accumulation = %d images per optimizer step",
                acc.num_processes,
                c.batch_size,
                c.grad_accum,
                self.global_batch,
            )
        if start == 0 and c.validate_every > 0 and acc.is_main_process:
            self.validate(0)
        ahead = c.recipe_ahead if c.recipe_ahead is not None else (2 if self.device.type != "cpu" else 0)
        if ahead <= 0:  # on a CPU a recipe thread only competes with the step for the same cores
            return self._loop(start, self.loader(start), stop)
        with closing(self.prepared(self.loader(start), start * c.grad_accum, ahead)) as batches:
            return self._loop(start, batches, stop)

    def _loop(self, start: int, batches: Iterator, stop: Callable[[int], bool] | None) -> dict:
        from tqdm.auto import tqdm

        c = self.config
        acc = self.accelerator
        bar = tqdm(total=c.max_steps, initial=start, disable=not (c.progress and acc.is_main_process), unit="step")
        step = start
        last_loss = math.nan
        while step < c.max_steps:
            t0 = time.perf_counter()
            last_loss, grad_norm, n_images = self.train_step(step, batches)
            step += 1
            seconds = time.perf_counter() - t0
            if acc.num_processes > 1 and (step % c.checkpoint_every == 0 or step == c.max_steps):
                self._check_replicas(step)
            if acc.is_main_process:
                self.history.append((step, last_loss))
                self._log_row(
                    TRAIN_LOG,
                    ("step", "loss", "lr", "grad_norm", "skipped_images", "images_per_s"),
                    (
                        step,
                        f"{last_loss:.6f}",
                        f"{self._lr(step - 1):.3g}",
                        f"{grad_norm:.4f}",
                        self.skipped,
                        f"{n_images / max(seconds, 1e-9):.2f}",
                    ),
                )
                bar.update(1)
                bar.set_postfix(loss=f"{last_loss:.4f}", skipped=self.skipped)
                if c.validate_every > 0 and step % c.validate_every == 0:
                    self.validate(step)
                if step % c.checkpoint_every == 0 or step == c.max_steps:
                    self.save(step)
            if stop is not None and step < c.max_steps and stop(step):
                bar.close()
                return {"step": step, "stopped": True, "loss": last_loss, "skipped": self.skipped}
        bar.close()
        result = {"step": step, "stopped": False, "loss": last_loss, "skipped": self.skipped}
        if acc.is_main_process:
            result["adapter"] = str(self.export(step))
            result["plot"] = str(plot_logs(self.out))
        acc.wait_for_everyone()
        return result

    def train_step(self, step: int, batches: Iterator) -> tuple[float, float, int]:
        """One optimizer step over ``grad_accum`` micro-batches: ``(mean loss, grad norm, images)``, all processes.

        ``batches`` yields ``(idx, images, BatchInfo)`` from :meth:`loader`, or with the drawn conditions
        added from :meth:`prepared`. The gradient is the mean over the step's loaded images on all processes
        (the global batch less skipped files); DDP all-reduces it once, in the last micro-step's backward.
        """
        c = self.config
        acc = self.accelerator
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr(step)
        local = torch.zeros(3, dtype=torch.float64)  # loss sum, images, skipped images of this process
        for k in range(c.grad_accum):
            idx, images, info, *drawn = next(batches)
            local[2] += self._count_skipped(info.skipped)
            last = k == c.grad_accum - 1
            weight = 1.0
            if images.shape[0] == 0:
                if not (last and acc.num_processes > 1):
                    continue
                # every process must join the last backward's all-reduce: a blank image that weighs nothing
                idx, images, info, drawn, weight = idx.new_zeros(1), self._blank(), BatchInfo([0], []), [], 0.0
            with nullcontext() if last else acc.no_sync(self.model):
                losses = self.sample_losses(step, idx, images, *drawn, slots=info.slots)
                # scaled as a mean over the planned global batch; corrected below for skipped images
                acc.backward(losses.sum() * (weight / (c.batch_size * c.grad_accum)))
            if weight:
                local[0] += float(losses.detach().sum())
                local[1] += losses.shape[0]
        total = acc.reduce(local.to(self.device), "sum").cpu() if acc.num_processes > 1 else local
        loss_sum, n, skipped = total.tolist()
        self.skipped += int(skipped)
        grad_norm = math.nan
        if n > 0:
            if n != self.global_batch:
                for p in self.palette_model.adapter.parameters():
                    if p.grad is not None:
                        p.grad.mul_(self.global_batch / n)
            grad_norm = float(acc.clip_grad_norm_(self.palette_model.adapter.parameters(), c.max_grad_norm))
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return (loss_sum / n if n else math.nan), grad_norm, int(n)

    def _check_replicas(self, step: int) -> None:
        """Refuse to go on when the processes' adapters differ: under DDP they must stay bit-identical."""
        acc = self.accelerator
        params = [p.detach().double() for p in self.palette_model.adapter.parameters()]
        probe = torch.stack([torch.stack([p.sum(), p.square().sum()]) for p in params]).flatten()
        every = acc.gather(probe[None])
        if not bool((every == every[0]).all()):
            raise PaletteError(
                f"after step {step} the adapters of the {acc.num_processes} processes differ: a process loaded "
                "other weights or the gradient all-reduce failed; resume from the last checkpoint"
            )

    def _blank(self) -> Tensor:
        size = self.config.resolution
        return torch.zeros(1, 3, size, size)

    def loader(self, start_step: int = 0):
        """An iterator over this process's micro-batches from optimizer step ``start_step`` to ``max_steps``."""
        c = self.config
        acc = self.accelerator
        sampler = StepBatches(
            [r.weight for r in self.records],
            c.batch_size,
            c.seed,
            start_step * c.grad_accum,
            c.max_steps * c.grad_accum,
            accum=c.grad_accum,
            rank=acc.process_index,
            world=acc.num_processes,
            keyed=True,
        )
        return iter(
            torch.utils.data.DataLoader(
                self.dataset, batch_sampler=sampler, collate_fn=collate, num_workers=c.num_workers
            )
        )

    def _count_skipped(self, skipped: list[int]) -> int:
        for i in skipped:
            path = str(self.records[i].image)
            if path not in self.skipped_paths:
                self.skipped_paths.add(path)
                log.warning("skipped unreadable or too small image %s", path)
        return len(skipped)

    # ---- validation ------------------------------------------------------------------------------

    def validation_set(self) -> tuple[list[Palette], list[str], list[int]]:
        """Fixed palettes, prompts (cycled over the palettes) and seeds of the validation images."""
        c = self.config
        palettes = [Palette.parse(t) for t in c.val_palettes]
        prompts = [c.val_prompts[i % len(c.val_prompts)] if c.val_prompts else "" for i in range(len(palettes))]
        return palettes, prompts, list(range(c.val_seeds))

    def sample_palettes(
        self, palettes: Sequence[Palette], prompts: Sequence[str], seeds: Sequence[int], adapter: bool = True, **kw
    ) -> Tensor:
        """One image per (palette, seed), ``[P * S, H, W, 3]``."""
        c = self.config
        size = c.val_size or c.resolution
        pos = ColorCondition.cat([palette_condition(p.colors.float(), p.weights.float()) for p in palettes])
        rep = len(seeds)
        pos = ColorCondition.cat([pos.select(i) for i in range(len(palettes)) for _ in range(rep)])
        text = self.text.embed([prompts[i] for i in range(len(palettes)) for _ in range(rep)])
        empty = self.text.empty(len(palettes) * rep)
        all_seeds = [1000 * i + s for i in range(len(palettes)) for s in seeds]
        kw.setdefault("guidance", c.val_guidance)
        kw.setdefault("steps", c.val_steps)
        with torch.no_grad(), self.accelerator.autocast():
            return generate(
                self.palette_model,
                self.codec,
                self.scheduler.config,
                text,
                empty,
                all_seeds,
                size,
                positive=pos if adapter else None,
                **kw,
            )

    def validate(self, step: int) -> float:
        """Validation images and their mean palette_emd (logged; the base model's once, for reference)."""
        palettes, prompts, seeds = self.validation_set()
        if self.base_emd is None:
            base = self.sample_palettes(palettes, prompts, seeds, adapter=False)
            self.base_emd = mean_emd(base, palettes, len(seeds))
        images = self.sample_palettes(palettes, prompts, seeds)
        emd = mean_emd(images, palettes, len(seeds))
        self._log_row(
            VAL_LOG, ("step", "palette_emd", "palette_emd_base"), (step, f"{emd:.5f}", f"{self.base_emd:.5f}")
        )
        save_grid(images, palettes, len(seeds), self.out / "validation" / f"step-{step:08d}.png")
        return emd


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def mean_emd(images: Tensor, palettes: Sequence[Palette], per: int) -> float:
    """Mean palette_emd (paper Table 1) of images against the palettes they were made for, ``per`` per palette."""
    scores = [
        float(palette_emd(images[i], palettes[i // per].colors.float(), palettes[i // per].weights.float()))
        for i in range(images.shape[0])
    ]
    return sum(scores) / len(scores)


def save_grid(images: Tensor, palettes: Sequence[Palette], per: int, path: Path) -> Path:
    """A PNG with one column per image and its palette as stripes beneath it."""
    from PIL import Image

    cols = []
    for i in range(images.shape[0]):
        img = images[i].float().clamp(0, 1)
        pal = palettes[i // per]
        stripes = palette_stripes(pal.colors.float(), pal.weights.float(), max(4, img.shape[0] // 6), img.shape[1])
        cols.append(torch.cat([img, stripes.to(img.dtype)], dim=0))
    grid = torch.cat(cols, dim=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((grid * 255).round().byte().numpy()).save(path)
    return path


def _read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def plot_logs(folder: Path) -> Path:
    """``training_plot.png``: loss (raw and smoothed) and validation palette_emd against steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    train = _read_csv(folder / TRAIN_LOG)
    val = _read_csv(folder / VAL_LOG)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    steps = [int(r["step"]) for r in train]
    loss = [float(r["loss"]) for r in train]
    ax1.plot(steps, loss, color="0.75", lw=0.8, label="loss")
    ema, smooth = None, []
    for v in loss:
        ema = v if ema is None or math.isnan(ema) else 0.95 * ema + 0.05 * v
        smooth.append(ema)
    ax1.plot(steps, smooth, color="C0", label="EMA 0.95")
    ax1.set(xlabel="step", ylabel="noise MSE", title="training loss")
    ax1.legend()
    if val:
        ax2.plot([int(r["step"]) for r in val], [float(r["palette_emd"]) for r in val], "o-", label="with adapter")
        ax2.axhline(float(val[0]["palette_emd_base"]), color="C3", ls="--", label="base model (no adapter)")
        ax2.legend()
    ax2.set(xlabel="step", ylabel="palette EMD (lower = closer)", title="palette adherence (validation)")
    fig.tight_layout()
    out = folder / "training_plot.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


# ---- command line ------------------------------------------------------------------------------


def _read_lines(path: str) -> list[str]:
    return [s.strip() for s in Path(path).read_text(encoding="utf-8").splitlines() if s.strip()]


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = TrainConfig()
    a = p.add_argument
    a("--output", type=Path, default=d.output, help="run folder: checkpoints, logs, plots, the adapter file")
    a("--data", type=Path, help="manifest (JSONL/CSV with image, caption[, weight]) or a folder of images + .txt")
    a("--model", type=Path, help="SDXL UNet: a diffusers folder (pipeline or unet/) or a single .safetensors file")
    a("--vae", type=Path, help="VAE folder or .safetensors (default: from --model)")
    a("--text-cache", type=Path, help="precomputed text embeddings (.safetensors from encode_text_cache)")
    a("--resolution", type=int, default=d.resolution, help="training image size (square centre crop)")
    a("--min-size", type=int, help="skip images whose shorter side is below this (default resolution/2)")
    a("--stage", type=int, choices=(1, 2), default=1, help="1: all cross-attention layers; 2: the chosen blocks")
    a("--blocks", type=lambda s: [b for b in s.replace(",", " ").split() if b], help="diffusers block names")
    a("--blocks-from", type=Path, help="analyse_blocks.py JSON: train its recommended blocks")
    a("--init-adapter", type=Path, help="start from this adapter file (e.g. stage 1's) where it has weights")
    a(
        "--adapter-version",
        choices=READABLE_VERSIONS,
        help=f"file version of a new adapter (default {FILE_VERSION}; 3: the scalar token in the colour tokens' "
        "softmax, as the paper; docs/design.md section 6); with --init-adapter, the file's",
    )
    a("--batch-size", type=int, default=d.batch_size)
    a("--grad-accum", type=int, default=d.grad_accum, help="micro-batches per optimizer step")
    a("--max-steps", type=int, default=d.max_steps, help="optimizer steps")
    a("--lr", type=float, default=d.lr)
    a("--warmup-steps", type=int, default=d.warmup_steps)
    a("--lr-schedule", choices=LR_SCHEDULES, default=d.lr_schedule, help="after warm-up: constant, or cosine to lr/10")
    a("--weight-decay", type=float, default=d.weight_decay)
    a("--max-grad-norm", type=float, default=d.max_grad_norm)
    a(
        "--mixed-precision",
        choices=("no", "bf16", "fp16"),
        help="default: accelerate's (its config or `accelerate launch --mixed_precision`), else no",
    )
    a("--gradient-checkpointing", action="store_true", help="recompute UNet activations in backward (less memory)")
    a("--adam8bit", action="store_true", help="bitsandbytes 8-bit AdamW (CUDA)")
    a("--seed", type=int, default=d.seed)
    a("--recipe-ahead", type=int, help="micro-steps of colour recipe drawn ahead in a thread (default: 2 on a GPU)")
    a("--p-palette", type=float, default=d.recipe.p_palette)
    a("--p-histogram", type=float, default=d.recipe.p_histogram)
    a("--palette-min", type=int, default=d.recipe.palette_min)
    a("--palette-max", type=int, default=d.recipe.palette_max)
    a(
        "--palette-source",
        choices=PALETTE_SOURCES,
        default=d.recipe.palette_source,
        help="palette conditions by median cut of each image, or the manifest's 'palette' column (data made from "
        "known palettes)",
    )
    a("--p-drop-text", type=float, default=d.recipe.p_drop_text)
    a("--p-drop-color", type=float, default=d.recipe.p_drop_color)
    a("--p-drop-both", type=float, default=d.recipe.p_drop_both)
    a("--p-drop-distance", type=float, default=d.recipe.p_drop_distance)
    a("--p-drop-entropy", type=float, default=d.recipe.p_drop_entropy)
    a("--palette-resize", type=int, default=d.recipe.palette_resize, help="median-cut resample size (0 = none)")
    a("--checkpoint-every", type=int, default=d.checkpoint_every)
    a("--keep-checkpoints", type=int, default=d.keep_checkpoints)
    a("--validate-every", type=int, default=d.validate_every, help="0 = no validation")
    a("--val-palettes", type=_read_lines, help="file: one palette per line (docs/design.md §5 text)")
    a("--val-prompts", type=_read_lines, help="file: one prompt per line")
    a("--val-seeds", type=int, default=d.val_seeds)
    a("--val-steps", type=int, default=d.val_steps)
    a("--val-guidance", type=float, default=d.val_guidance)
    a("--val-size", type=int)
    a("--num-workers", type=int, default=d.num_workers, help="image-loading worker processes")
    a("--latent-cache", type=Path, help="folder caching VAE encoder moments per image")
    a("--restart", action="store_true", help="ignore and delete earlier checkpoints and logs in --output")
    a("--no-progress", action="store_true")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """A TrainConfig from parsed flags."""
    recipe = Recipe(
        p_palette=args.p_palette,
        p_histogram=args.p_histogram,
        palette_min=args.palette_min,
        palette_max=args.palette_max,
        p_drop_text=args.p_drop_text,
        p_drop_color=args.p_drop_color,
        p_drop_both=args.p_drop_both,
        p_drop_distance=args.p_drop_distance,
        p_drop_entropy=args.p_drop_entropy,
        palette_resize=args.palette_resize or None,
        palette_source=args.palette_source,
    )
    names = {f.name for f in fields(TrainConfig)} - {"recipe", "progress", "val_palettes", "val_prompts"}
    values = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    cfg = TrainConfig(**values, recipe=recipe, progress=not args.no_progress)
    if args.val_palettes:
        cfg.val_palettes = args.val_palettes
    if args.val_prompts:
        cfg.val_prompts = args.val_prompts
    return cfg


def run(
    config: TrainConfig,
    parts: Callable[[], ModelParts] | None = None,
    stop: Callable[[int], bool] | None = None,
) -> int:
    """Train as the command line does: on ``parts()`` if given (else SDXL), the summary printed; the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    trainer = None
    try:
        trainer = Trainer(config, parts() if parts is not None else None)
        result = trainer.train(stop)
    except (PaletteError, AdapterError) as e:
        log.error("%s", e)
        return 2
    finally:
        if trainer is not None:
            trainer.accelerator.end_training()  # leave the process group (several processes)
    if trainer.accelerator.is_main_process:
        print(json.dumps(result, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    return run(config_from_args(build_parser().parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
