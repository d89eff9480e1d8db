"""Train a small SDXL-layout base UNet from scratch on the toy images (pixel space, fixed empty text).

The base model knows the toy world (flat shapes, textures) but has no way to be told colours: its text
is always the zero embedding. The Palette-Adapter trained on top of it must add that control.
"""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from train.data import load_image, read_manifest
from train.models import POOLED_DIM, build_unet, tiny_unet_config
from train.processor import time_ids

log = logging.getLogger(__name__)


def toy_scheduler():
    """DDPM's linear schedule: near-zero terminal SNR, so pixel-space samples do not inherit colour from noise."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)


def load_images(manifest: Path, size: int) -> torch.Tensor:
    """All usable images of a manifest as ``[N, 3, S, S]`` in [0, 1] (the toy set fits in memory)."""
    images = [load_image(r.image, size, size // 2) for r in read_manifest(manifest)]
    return torch.stack([x for x in images if x is not None])


def train_base(
    manifest: Path,
    out: Path,
    steps: int = 2000,
    batch: int = 32,
    lr: float = 5e-4,
    channels: int = 32,
    size: int = 32,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Train and save the base UNet (diffusers folder with its scheduler); returns the folder."""
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    images = load_images(manifest, size)
    unet = build_unet(tiny_unet_config(channels, (1, 1, 1), in_channels=3, sample_size=size)).train()
    sched = toy_scheduler()
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    ctx = int(unet.config.cross_attention_dim)
    text, pooled, ids = torch.zeros(batch, 1, ctx), torch.zeros(batch, POOLED_DIM), time_ids(batch, size, size)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for step in tqdm(range(steps), disable=not progress, unit="step", desc="base"):
        t0 = time.perf_counter()
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 100)
        idx = torch.randint(0, images.shape[0], (batch,), generator=g)
        x0 = images[idx] * 2.0 - 1.0
        flip = torch.rand(batch, generator=g) < 0.5
        x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, sched.config.num_train_timesteps, (batch,), generator=g)
        pred = unet(sched.add_noise(x0, noise, t), t, text, added_cond_kwargs={"text_embeds": pooled, "time_ids": ids})
        loss = F.mse_loss(pred.sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        rows.append((step + 1, float(loss), time.perf_counter() - t0))
    unet.eval().save_pretrained(out)
    sched.save_pretrained(out / "scheduler")
    with (out / "base_log.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(("step", "loss", "seconds"))
        w.writerows(rows)
    return out
