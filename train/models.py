"""SDXL-layout UNets, VAEs and noise schedules for training (docs/design.md §8), from local files only.

Full SDXL configs ship in ``train/configs`` so that single-file checkpoints load without the network; the
tiny configs keep SDXL's block layout (3 levels, cross-attention in levels 1 and 2, 2048-dim text,
``text_time`` added conditioning of 2816) at a width a CPU can train.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from palette_core.adapter import CONTEXT_DIM
from palette_core.errors import AdapterError

log = logging.getLogger(__name__)

CONFIGS = Path(__file__).resolve().parent / "configs"
POOLED_DIM = 1280  # SDXL's text_embeds (CLIP-G pooled) width; 2816 = 1280 + 6 x 256 time ids


def sdxl_unet_config() -> dict:
    """The diffusers config of the SDXL 1.0 base UNet (2.57 B parameters, 70 cross-attention layers)."""
    return json.loads((CONFIGS / "sdxl_unet" / "config.json").read_text())


def tiny_unet_config(
    channels: int = 32,
    depth: Sequence[int] = (1, 1, 1),
    in_channels: int = 4,
    sample_size: int = 32,
    layers_per_block: int = 2,
    context_dim: int = CONTEXT_DIM,
    norm_groups: int = 32,
) -> dict:
    """An SDXL-layout UNet config of width ``channels`` (levels c, 2c, 4c; 64 per head; depth per level).

    ``depth=(1, 2, 10)`` with ``channels=64`` is the tests' ComfyUI tiny SDXL (all 70 cross-attention
    layers); the default has one transformer per block (11 layers in SDXL's 11 blocks). A ``context_dim``
    other than 2048 is for fast tests only: such an adapter does not fit SDXL. ``norm_groups`` 32 is
    SDXL's (and ComfyUI's, for parity); narrow toy models want fewer, as SDXL has 10-40 channels a group.
    """
    cfg = sdxl_unet_config()
    widths = [channels, 2 * channels, 4 * channels]
    cfg.update(
        block_out_channels=widths,
        attention_head_dim=[max(1, w // 64) for w in widths],
        transformer_layers_per_block=list(depth),
        in_channels=in_channels,
        out_channels=in_channels,
        sample_size=sample_size,
        layers_per_block=layers_per_block,
        norm_num_groups=norm_groups,
        cross_attention_dim=context_dim,
    )
    return cfg


def build_unet(config: dict, seed: int | None = None):
    """A UNet2DConditionModel from a config dict; with ``seed``, explicit O(1)-activation random weights."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_config(config)
    if seed is not None:
        random_init_(unet, seed)
    return unet


def random_init_(module: nn.Module, seed: int = 0) -> None:
    """Seeded init: matrices N(0, 0.5/sqrt(fan_in)), norms 1/0, biases 0, so activations stay O(1) throughout.

    The numbers are drawn on each parameter's own device (one generator per device, all seeded alike), so a
    full-size model built on a GPU is initialised there; on the CPU the result does not depend on the dtype.
    """
    generators: dict[torch.device, torch.Generator] = {}
    norms = (nn.GroupNorm, nn.LayerNorm)
    with torch.no_grad():
        for mod in module.modules():
            for name, p in mod.named_parameters(recurse=False):
                if isinstance(mod, norms):
                    p.fill_(1.0 if name == "weight" else 0.0)
                elif p.ndim >= 2:
                    if p.device not in generators:
                        generators[p.device] = torch.Generator(device=p.device).manual_seed(seed)
                    g = generators[p.device]
                    p.copy_(torch.randn(p.shape, generator=g, device=p.device) * (0.5 / math.sqrt(p[0].numel())))
                else:
                    p.zero_()


def load_unet(path: str | Path, dtype: torch.dtype = torch.float32, config: str | Path | None = None):
    """An SDXL UNet from a diffusers folder (pipeline root or ``unet/``) or a single ``.safetensors`` file.

    Single files are converted by diffusers with the SDXL config shipped here (or ``config``, a folder
    holding a diffusers ``config.json``); nothing is downloaded.
    """
    from diffusers import UNet2DConditionModel

    path = Path(path)
    if path.is_dir():
        sub = "unet" if (path / "unet" / "config.json").is_file() else None
        return UNet2DConditionModel.from_pretrained(path, subfolder=sub, torch_dtype=dtype, local_files_only=True)
    if path.suffix.lower() != ".safetensors":
        raise AdapterError(
            f"{path.name}: give a diffusers folder or a .safetensors checkpoint (pickles are not loaded)"
        )
    if not path.is_file():
        raise AdapterError(f"{path}: no such file")
    return UNet2DConditionModel.from_single_file(
        str(path), config=str(config or CONFIGS / "sdxl_unet"), torch_dtype=dtype, local_files_only=True
    )


def load_vae(path: str | Path, dtype: torch.dtype = torch.float32):
    """The SDXL VAE from a diffusers folder (pipeline root or ``vae/``) or a single ``.safetensors`` file."""
    from diffusers import AutoencoderKL

    path = Path(path)
    if path.is_dir():
        sub = "vae" if (path / "vae" / "config.json").is_file() else None
        return AutoencoderKL.from_pretrained(path, subfolder=sub, torch_dtype=dtype, local_files_only=True)
    return AutoencoderKL.from_single_file(
        str(path), config=str(CONFIGS / "sdxl_vae"), torch_dtype=dtype, local_files_only=True
    )


def noise_scheduler(path: str | Path | None = None):
    """The training noise schedule: the model folder's ``scheduler/`` config, else SDXL's (DDPM, 1000 steps)."""
    from diffusers import DDPMScheduler

    folder = Path(path) / "scheduler" if path is not None and Path(path).is_dir() else None
    if folder is not None and (folder / "scheduler_config.json").is_file():
        return DDPMScheduler.from_pretrained(folder, local_files_only=True)
    return DDPMScheduler.from_pretrained(CONFIGS / "sdxl_scheduler", local_files_only=True)


class PixelCodec:
    """Pixel-space "latents" for toy models: images in [-1, 1], ``factor x factor`` patches folded into channels.

    ``factor`` 1 is the identity (3 channels); ``factor`` 4 maps 32 px images to 8 x 8 latents of 48
    channels (an exact, invertible space-to-depth, standing in for SDXL's 8x VAE at 1/16 of the cost).
    ``scale`` multiplies the latents, as SDXL's VAE scaling factor does: it sets the data's variance
    relative to the unit-variance noise (2 gives the toy images a standard deviation near 1).
    """

    FILE = "pixel_codec.json"  # beside a pixel-space model's weights: the codec it was trained with

    def __init__(self, factor: int = 1, scale: float = 1.0) -> None:
        if factor < 1:
            raise AdapterError(f"pixel patch factor {factor} must be >= 1")
        if not scale > 0:
            raise AdapterError(f"pixel scale {scale} must be > 0")
        self.factor = factor
        self.scale = float(scale)
        self.channels = 3 * factor * factor

    def save(self, folder: str | Path) -> Path:
        """Record this codec in ``folder`` (a pixel-space model's folder)."""
        path = Path(folder) / self.FILE
        path.write_text(json.dumps({"patch": self.factor, "scale": self.scale}))
        return path

    @classmethod
    def of_model(cls, folder: str | Path) -> PixelCodec | None:
        """The codec a pixel-space model in ``folder`` was trained with; None if the folder does not record one."""
        path = Path(folder) / cls.FILE
        if not path.is_file():
            return None
        try:
            spec = json.loads(path.read_text())
            return cls(int(spec["patch"]), float(spec["scale"]))
        except (ValueError, KeyError, TypeError) as e:
            raise AdapterError(f"{path}: not a pixel codec record ({e}); train the model again") from e

    @classmethod
    def for_model(cls, model: str | Path | None, patch: int, scale: float | None) -> PixelCodec:
        """The codec for a pixel-space ``model``: its record if it has one (flags that contradict it are refused),
        else ``patch`` and ``scale`` (1 when None)."""
        recorded = cls.of_model(model) if model is not None and Path(model).is_dir() else None
        if recorded is None:
            return cls(patch, 1.0 if scale is None else scale)
        if patch != recorded.factor or scale not in (None, recorded.scale):
            raise AdapterError(
                f"{model} was trained with --pixel-patch {recorded.factor} --pixel-scale {recorded.scale:g}, "
                f"not --pixel-patch {patch} --pixel-scale {scale}; give the model's values or leave --pixel-scale out"
            )
        return recorded

    def encode(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``[B, 3, H, W]`` in [0, 1] -> ``[B, 3 f^2, H/f, W/f]`` in [-scale, scale]."""
        return torch.nn.functional.pixel_unshuffle((images * 2.0 - 1.0) * self.scale, self.factor)

    def decode(self, latents: Tensor) -> Tensor:
        """Back to ``[B, 3, H, W]`` in [0, 1]."""
        x = torch.nn.functional.pixel_shuffle(latents.float(), self.factor) / self.scale
        return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


class VaeCodec:
    """The SDXL VAE: latents are ``scaling_factor x`` a sample of the encoder's distribution."""

    factor = 8

    def __init__(self, vae, device: torch.device | str = "cpu") -> None:
        self.vae = vae.to(device).eval().requires_grad_(False)
        self.channels = int(vae.config.latent_channels)
        self.scale = float(vae.config.scaling_factor)

    def moments(self, images: Tensor) -> Tensor:
        """The encoder's mean and log-variance ``[B, 2C, h, w]`` (what a latent cache stores)."""
        p = next(self.vae.parameters())
        with torch.no_grad():
            return self.vae.encode((images * 2.0 - 1.0).to(p.device, p.dtype)).latent_dist.parameters.float()

    def sample(self, moments: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A scaled latent drawn from cached moments with a CPU generator (deterministic on any device)."""
        mean, logvar = moments.chunk(2, dim=1)
        noise = torch.randn(mean.shape, generator=generator).to(mean.device)
        return (mean + torch.exp(0.5 * logvar.clamp(-30.0, 20.0)) * noise) * self.scale

    def encode(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``[B, 3, H, W]`` in [0, 1] -> scaled latents ``[B, 4, H/8, W/8]``."""
        return self.sample(self.moments(images), generator)

    def decode(self, latents: Tensor) -> Tensor:
        """Scaled latents -> images ``[B, 3, H, W]`` in [0, 1]."""
        p = next(self.vae.parameters())
        with torch.no_grad():
            out = self.vae.decode(latents.to(p.device, p.dtype) / self.scale).sample
        return ((out.float() + 1.0) / 2.0).clamp(0.0, 1.0)
