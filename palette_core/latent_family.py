"""The description of a model family's latent space that the training-free code needs (docs/design.md §9).

A :class:`LatentFamily` says how many channels the sampler's latents have, how they relate to the VAE's
latents (``sampler = (vae - shift_factor) * scale_factor``, ComfyUI's ``LatentFormat.process_in``), how
many pixels one latent vector covers, and the linear latent-to-RGB preview map. ComfyUI 0.3.64's
``latent_preview.Latent2RGBPreviewer`` applies that map to the sampler's x̂0 directly (the callback's
``denoised``, before ``process_out``), for every family, and maps the result from [-1, 1] to [0, 1].

Inside ComfyUI the nodes build the description from the loaded model's ``latent_format``; the constants
below are ComfyUI 0.3.64's numbers (``comfy/latent_formats.py``), defaults for callers outside ComfyUI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import IncompatibleModelError

SUPPORTED_FAMILIES = "SD1.5, SDXL, SD3/3.5, Flux"


@dataclass(frozen=True)
class LatentFamily:
    """A latent space: ``channels``, ``scale_factor``/``shift_factor`` (VAE -> sampler), ``rgb_factors [C, 3]``,
    ``rgb_bias [3]`` or None, ``downscale`` (pixels per latent vector side)."""

    name: str
    channels: int
    scale_factor: float
    rgb_factors: tuple[tuple[float, float, float], ...]
    rgb_bias: tuple[float, float, float] | None = None
    shift_factor: float = 0.0
    downscale: int = 8

    def __post_init__(self) -> None:
        """Validate the description (docs/design.md §9): every inconsistency is named with what to fix."""
        where = f"latent family {self.name!r}"
        if not isinstance(self.channels, int) or self.channels < 1:
            raise IncompatibleModelError(f"{where}: channels {self.channels!r} must be a positive integer")
        for field in ("scale_factor", "shift_factor"):
            value = getattr(self, field)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise IncompatibleModelError(f"{where}: {field} {value!r} must be a finite number")
        if self.scale_factor == 0:
            raise IncompatibleModelError(f"{where}: scale_factor is 0; sampler latents would all be zero")
        if not isinstance(self.downscale, int) or self.downscale < 1:
            raise IncompatibleModelError(f"{where}: downscale {self.downscale!r} must be a positive integer")
        rows = tuple(tuple(float(v) for v in row) for row in self.rgb_factors)
        if len(rows) != self.channels or any(len(row) != 3 for row in rows):
            shape = [len(rows), sorted({len(row) for row in rows})]
            raise IncompatibleModelError(
                f"{where}: rgb_factors has {shape[0]} rows of lengths {shape[1]}; expected {self.channels} rows "
                "(one per latent channel) of 3 values (R, G, B)"
            )
        if not all(math.isfinite(v) for row in rows for v in row):
            raise IncompatibleModelError(f"{where}: rgb_factors contains NaN or infinite values")
        object.__setattr__(self, "rgb_factors", rows)
        if self.rgb_bias is not None:
            bias = tuple(float(v) for v in self.rgb_bias)
            if len(bias) != 3 or not all(math.isfinite(v) for v in bias):
                raise IncompatibleModelError(f"{where}: rgb_bias {self.rgb_bias!r} must be 3 finite values or None")
            object.__setattr__(self, "rgb_bias", bias)

    def process_in(self, vae_latent):
        """VAE latents to the sampler's space, ``(z - shift) * scale`` (ComfyUI ``LatentFormat.process_in``)."""
        return (vae_latent - self.shift_factor) * self.scale_factor

    def process_out(self, latent):
        """Sampler latents back to the VAE's space (ComfyUI ``LatentFormat.process_out``)."""
        return latent / self.scale_factor + self.shift_factor


# ComfyUI 0.3.64 comfy/latent_formats.py; rows are latent channels, columns R, G, B.
SD15 = LatentFamily(
    name="SD15",
    channels=4,
    scale_factor=0.18215,
    rgb_factors=(
        (0.3512, 0.2297, 0.3227),
        (0.3250, 0.4974, 0.2350),
        (-0.2829, 0.1762, 0.2721),
        (-0.2120, -0.2616, -0.7177),
    ),
)

SDXL = LatentFamily(
    name="SDXL",
    channels=4,
    scale_factor=0.13025,
    rgb_factors=(
        (0.3651, 0.4232, 0.4341),
        (-0.2533, -0.0042, 0.1068),
        (0.1076, 0.1111, -0.0362),
        (-0.3165, -0.2492, -0.2188),
    ),
    rgb_bias=(0.1084, -0.0175, -0.0011),
)

SD3 = LatentFamily(
    name="SD3",
    channels=16,
    scale_factor=1.5305,
    shift_factor=0.0609,
    rgb_factors=(
        (-0.0922, -0.0175, 0.0749),
        (0.0311, 0.0633, 0.0954),
        (0.1994, 0.0927, 0.0458),
        (0.0856, 0.0339, 0.0902),
        (0.0587, 0.0272, -0.0496),
        (-0.0006, 0.1104, 0.0309),
        (0.0978, 0.0306, 0.0427),
        (-0.0042, 0.1038, 0.1358),
        (-0.0194, 0.0020, 0.0669),
        (-0.0488, 0.0130, -0.0268),
        (0.0922, 0.0988, 0.0951),
        (-0.0278, 0.0524, -0.0542),
        (0.0332, 0.0456, 0.0895),
        (-0.0069, -0.0030, -0.0810),
        (-0.0596, -0.0465, -0.0293),
        (-0.1448, -0.1463, -0.1189),
    ),
    rgb_bias=(0.2394, 0.2135, 0.1925),
)

FLUX = LatentFamily(
    name="Flux",
    channels=16,
    scale_factor=0.3611,
    shift_factor=0.1159,
    rgb_factors=(
        (-0.0346, 0.0244, 0.0681),
        (0.0034, 0.0210, 0.0687),
        (0.0275, -0.0668, -0.0433),
        (-0.0174, 0.0160, 0.0617),
        (0.0859, 0.0721, 0.0329),
        (0.0004, 0.0383, 0.0115),
        (0.0405, 0.0861, 0.0915),
        (-0.0236, -0.0185, -0.0259),
        (-0.0245, 0.0250, 0.1180),
        (0.1008, 0.0755, -0.0421),
        (-0.0515, 0.0201, 0.0011),
        (0.0428, -0.0012, -0.0036),
        (0.0817, 0.0765, 0.0749),
        (-0.1264, -0.0522, -0.1103),
        (-0.0280, -0.0881, -0.0499),
        (-0.1262, -0.0982, -0.0778),
    ),
    rgb_bias=(-0.0329, -0.0718, -0.0851),
)

FAMILIES = {f.name: f for f in (SD15, SDXL, SD3, FLUX)}
