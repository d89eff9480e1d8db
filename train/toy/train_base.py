"""Train a small SDXL-layout base UNet from scratch on the toy images (pixel space, word-vector captions).

The UNet sees the toy's images as 8 x 8 "latents": its 8 px images themselves (run_toy's default), or
larger images as f x f pixel patches in the channels; SDXL's layout at a cost a CPU can train in minutes.

Like SDXL, the base model learns colour from its captions (the exact colours as words) and can also sample
without them; the Palette-Adapter trained on top of it sees only shape words, so colour has to come from
the palette.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path

import torch
from torch import Tensor

from train.data import load_image, read_manifest
from train.models import PixelCodec, build_unet, tiny_unet_config
from train.processor import time_ids
from train.schedule import learning_rate
from train.toy.parts import WordText

log = logging.getLogger(__name__)


def base_codec(folder: Path) -> PixelCodec:
    """The pixel codec a toy base in ``folder`` was trained with (its ``pixel_codec.json``)."""
    codec = PixelCodec.of_model(folder)
    if codec is None:
        raise FileNotFoundError(
            f"{Path(folder) / PixelCodec.FILE}: missing; this base predates the file, so train it again "
            f"(delete {folder})"
        )
    return codec


def _shape_words(caption: str) -> str:
    return " ".join(w for w in caption.split() if not _is_colour(w))


def _is_colour(word: str) -> bool:
    return word.startswith(("bg-", "#"))


def toy_scheduler(prediction_type: str = "sample", pixel_scale: float = 1.0):
    """DDPM's linear schedule (near-zero terminal SNR) predicting the clean sample or v, clipping at the data's range.

    A small eps-predicting model trained for minutes cannot yet pull the noise out of a nearly clean input
    (its low-noise predictions stay near zero), so DDIM samples keep that noise; a model predicting the
    clean sample gives smooth images from the start. v on unit-variance data (``pixel_scale`` 2) is EDM's
    preconditioning: the target is the clean sample at high noise and the noise at low noise.
    """
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="linear",
        beta_start=1e-4,
        beta_end=0.02,
        prediction_type=prediction_type,
        clip_sample_range=pixel_scale,
    )


def snr_weight(snr: Tensor, prediction_type: str, gamma: float | None) -> Tensor:
    """Per-sample loss weights from the signal-to-noise ratio (Min-SNR-gamma, Hang et al. 2023, Eq. 8).

    v: ``min(SNR, gamma) / (SNR + 1)``. Clean sample: ``SNR`` clamped to ``[1, gamma]``: its loss weighs
    every timestep alike, so the high-noise steps, whose error is mostly irreducible, would drown the
    low-noise ones that teach the model to reproduce detail. ``gamma=None``: all ones (for v on
    unit-variance data that is EDM's weighting, Karras et al. 2022, Eq. 8 with its preconditioning).
    """
    if prediction_type not in ("v_prediction", "sample"):
        raise ValueError(f"toy base: prediction type {prediction_type!r} is not 'sample' or 'v_prediction'")
    if gamma is None:
        return torch.ones_like(snr)
    if prediction_type == "v_prediction":
        return snr.clamp(max=gamma) / (snr + 1.0)
    return snr.clamp(1.0, gamma)


def draw_timesteps(
    batch: int,
    alphas_cumprod: Tensor,
    lognormal_share: float,
    generator: torch.Generator,
    mean: float = -0.5,
    std: float = 1.2,
) -> Tensor:
    """Training timesteps: uniform, except ``lognormal_share`` of them at a log-normal noise level (EDM, Sec. 5).

    The log-normal share draws ``ln sigma ~ N(mean, std^2)``, sigma relative to unit-variance data (EDM's
    ``P_mean`` -1.2 at ``sigma_data`` 0.5 is -0.5 here), and takes the timestep nearest in log SNR
    (``-2 ln sigma``). Uniform timesteps on the linear schedule spend a third of the batch at SNR < 0.01,
    where little but the mean image is learnt, and under a tenth below sigma 0.3, where the last sampling
    steps remove the fine noise; the log-normal share moves them towards the middle.
    """
    t = torch.randint(0, alphas_cumprod.shape[0], (batch,), generator=generator)
    if lognormal_share <= 0:
        return t
    log_snr = -2.0 * (mean + std * torch.randn(batch, generator=generator))
    table = torch.log(alphas_cumprod / (1.0 - alphas_cumprod)).cpu()
    nearest = (table[None, :] - log_snr[:, None]).abs().argmin(1)
    return torch.where(torch.rand(batch, generator=generator) < lognormal_share, nearest, t)


def base_lr(step: int, steps: int, lr: float, warmup: int = 100, floor: float = 0.1) -> float:
    """Learning rate of ``step``: linear warm-up, then cosine decay from ``lr`` to ``floor x lr`` at ``steps``.

    Decaying the rate gives samples nearer their colour words (docs/training.md, "Toy run").
    """
    return learning_rate(step, steps, lr, warmup, "cosine", floor)


def load_images(manifest: Path, size: int) -> tuple[torch.Tensor, list[str]]:
    """All usable images of a toy manifest as ``[N, 3, S, S]`` in [0, 1] and their colour captions."""
    records = read_manifest(manifest)
    rows = [json.loads(line) for line in Path(manifest).read_text().splitlines() if line.strip()]
    images = [load_image(r.image, size, size // 2) for r in records]
    ok = [i for i, x in enumerate(images) if x is not None]
    return torch.stack([images[i] for i in ok]), [rows[i].get("color_caption", records[i].caption) for i in ok]


def train_base(
    manifest: Path,
    out: Path,
    steps: int = 2000,
    batch: int = 32,
    lr: float = 5e-4,
    channels: int = 64,
    size: int = 32,
    patch: int = 4,
    seed: int = 0,
    text_tokens: int = 12,
    caption_drop: float = 0.1,
    norm_groups: int = 8,
    snr_weight_max: float | None = 5.0,
    lognormal_share: float = 0.0,
    prediction_type: str = "sample",
    pixel_scale: float = 1.0,
    progress: bool = True,
    device: torch.device | str = "cpu",
) -> Path:
    """Train and save the base UNet (diffusers folder with its scheduler); returns the folder.

    The colour captions go through :class:`~train.toy.parts.WordText`; a caption is replaced by its shape-only
    form or by the empty caption ``caption_drop`` of the time each, so both sample without colour words.
    Random draws come from CPU generators, so a run on ``device`` sees the same batches as on the CPU.

    Timesteps come from :func:`draw_timesteps` (``lognormal_share`` of them log-normal, the rest uniform).
    Each sample's loss is weighted by :func:`snr_weight` (``gamma = snr_weight_max``). For the clean-sample
    model, with the weights (and 1500 CPU steps) its error at t = 5 halves (MSE 0.039 to 0.020) and samples
    given (then coarse) colour words land nearer their palette (EMD 0.41 to 0.365); at t = 400 the error is
    unchanged. The pixel codec's patch and scale go to ``pixel_codec.json`` beside the weights.
    """
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    images, captions = load_images(manifest, size)
    snr_weight(torch.ones(1), prediction_type, snr_weight_max)  # refuse an unknown prediction type up front
    codec = PixelCodec(patch, pixel_scale)
    config = tiny_unet_config(channels, (1, 1, 1), codec.channels, sample_size=size // patch, norm_groups=norm_groups)
    unet = build_unet(config).to(device).train()
    sched = toy_scheduler(prediction_type, pixel_scale)
    alphas = sched.alphas_cumprod.to(device)
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    words = WordText(text_tokens, 0, int(unet.config.cross_attention_dim))
    ids = time_ids(batch, size, size, device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    amp = torch.device(device).type == "cuda"  # bf16 autocast on a GPU; float32 on the CPU
    losses, elapsed = [], []
    start = time.perf_counter()
    for step in tqdm(range(steps), disable=not progress, unit="step", desc="base"):
        for group in opt.param_groups:
            group["lr"] = base_lr(step, steps, lr)
        idx = torch.randint(0, images.shape[0], (batch,), generator=g)
        flip = torch.rand(batch, generator=g) < 0.5
        x0 = codec.encode(torch.where(flip[:, None, None, None], images[idx].flip(-1), images[idx]))
        noise = torch.randn(x0.shape, generator=g)
        t = draw_timesteps(batch, sched.alphas_cumprod, lognormal_share, g)
        x0, noise, t = x0.to(device), noise.to(device), t.to(device)
        u = torch.rand(batch, generator=g).tolist()
        chosen = [
            "" if r < caption_drop else _shape_words(captions[i]) if r < 2 * caption_drop else captions[i]
            for i, r in zip(idx.tolist(), u)
        ]
        text, pooled = (e.to(device) for e in words.embed(chosen))
        with torch.autocast("cuda", torch.bfloat16, enabled=amp):
            added = {"text_embeds": pooled, "time_ids": ids}
            pred = unet(sched.add_noise(x0, noise, t), t, text, added_cond_kwargs=added).sample
        target = x0 if sched.config.prediction_type == "sample" else sched.get_velocity(x0, noise, t)
        weight = snr_weight(alphas[t] / (1.0 - alphas[t]), prediction_type, snr_weight_max)
        loss = (weight * ((pred.float() - target) ** 2).mean((1, 2, 3))).sum() / weight.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        losses.append(loss.detach())  # read back once at the end: a per-step read would stall the GPU queue
        elapsed.append(time.perf_counter() - start)
    unet.eval().save_pretrained(out)
    sched.save_pretrained(out / "scheduler")
    codec.save(out)
    with (out / "base_log.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(("step", "loss", "elapsed_s"))
        w.writerows(
            (i + 1, round(v, 6), round(e, 3)) for i, (v, e) in enumerate(zip(torch.stack(losses).tolist(), elapsed))
        )
    return out
