"""The toy's parts for the adapter trainer: a pixel-space base, text without an encoder, any text width.

:class:`~train.train_palette_adapter.Trainer` builds SDXL's UNet, VAE and cached text embeddings from
``--model``, ``--vae`` and ``--text-cache``. A toy run hands it a
:class:`~train.train_palette_adapter.ModelParts` instead (:func:`toy_parts`): the toy's UNet, its
pixel codec (:class:`~train.models.PixelCodec`), text embeddings made without a text encoder
(:func:`toy_text`) and the rule that the adapter takes the UNet's own text width, whatever it is (a toy's
adapter fits no SDXL model). :func:`toy_base_parts` reads all of it from a base folder of
:func:`~train.toy.train_base.train_base`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from palette_core.adapter import CONTEXT_DIM
from palette_core.color import srgb_to_lab
from palette_core.errors import PaletteError, PaletteFormatError
from palette_core.palette import parse_hex
from train.data import CachedText, ConstantText
from train.models import POOLED_DIM, PixelCodec, load_unet
from train.train_palette_adapter import ModelParts

TEXT_KINDS = ("zeros", "random", "words")  # --constant-text: one zero or seeded embedding, or word vectors


class WordText:
    """A text "encoder" without a model (toy runs): each word is a fixed pseudo-random vector.

    A caption becomes its first ``tokens`` words' vectors (zero-padded), the pooled embedding is zero and
    the empty caption is all zeros. Word vectors depend only on the word and ``seed``.

    A colour word ``#rrggbb`` (``bg-#rrggbb`` for a background) is a smooth function of its CIELAB colour
    (random Fourier features: two colours 10 Delta E apart have cosine 0.6, 20 apart 0.14), as a real text
    encoder places "crimson" near "red"; a model can then learn colour as a continuum, not as unrelated
    names. ``bg-`` binds the colour to its role by a fixed sign flip.
    """

    colour_scale = 0.1  # Fourier frequency per Delta E unit: kernel exp(-(0.1 d)^2 / 2)

    def __init__(self, tokens: int = 8, seed: int = 0, dim: int = CONTEXT_DIM) -> None:
        self.tokens, self.seed, self.dim = tokens, seed, dim
        self._words: dict[str, Tensor] = {}
        g = torch.Generator().manual_seed(seed + 1_000_003)
        self._freq = torch.randn(dim, 3, generator=g, dtype=torch.float64) * self.colour_scale
        self._phase = torch.rand(dim, generator=g, dtype=torch.float64) * 2 * np.pi
        self._bg_sign = torch.randint(0, 2, (dim,), generator=g).float() * 2 - 1

    def colour_vector(self, rgb: Tensor) -> Tensor:
        """The vector of the colour word of sRGB ``rgb [3]`` in [0, 1] (unit variance per dimension)."""
        lab = srgb_to_lab(rgb.double().reshape(1, 3))[0]
        return (np.sqrt(2.0) * torch.cos(self._freq @ lab + self._phase)).float()

    def _word(self, word: str) -> Tensor:
        if word not in self._words:
            rgb = _colour_of(word.removeprefix("bg-"))
            if rgb is not None:
                vec = self.colour_vector(rgb)
                self._words[word] = vec * self._bg_sign if word.startswith("bg-") else vec
            else:
                key = int(hashlib.sha1(f"{self.seed}:{word}".encode()).hexdigest()[:15], 16)
                self._words[word] = torch.randn(self.dim, generator=torch.Generator().manual_seed(key))
        return self._words[word]

    def embed(self, captions: Sequence[str]) -> tuple[Tensor, Tensor]:
        """``(text [B, tokens, dim], pooled zeros [B, 1280])``."""
        out = torch.zeros(len(captions), self.tokens, self.dim)
        for i, caption in enumerate(captions):
            for j, word in enumerate(caption.lower().split()[: self.tokens]):
                out[i, j] = self._word(word)
        return out, torch.zeros(len(captions), POOLED_DIM)

    def empty(self, batch: int) -> tuple[Tensor, Tensor]:
        """The embedding of the empty caption (zeros)."""
        return self.embed([""] * batch)


def _colour_of(word: str) -> Tensor | None:
    """sRGB in [0, 1] of a ``#rrggbb`` caption word; None for any other word."""
    if not word.startswith("#"):
        return None
    try:
        return torch.tensor(parse_hex(word), dtype=torch.float64) / 255.0
    except PaletteFormatError:
        return None


def toy_text(kind: str | None, tokens: int, seed: int, dim: int, cache: Path | None = None):
    """A toy run's text embeddings: the ``cache`` if given, else by ``kind`` (:data:`TEXT_KINDS`) at width ``dim``.

    ``zeros`` and ``random`` give every caption one embedding (zeros, or drawn from ``seed``), ``words``
    a :class:`WordText` (seed 0, so a base and its adapter share the word vectors).
    """
    if cache is not None:
        return CachedText(cache)
    if kind == "words":
        return WordText(tokens, 0, dim)
    if kind in ("zeros", "random"):
        return ConstantText(tokens, None if kind == "zeros" else seed, dim)
    raise PaletteError(
        "give --constant-text zeros|random|words or --text-cache (captions encoded with encode_text_cache)"
    )


def toy_parts(unet: torch.nn.Module, codec, text) -> ModelParts:
    """The trainer's parts for a toy UNet: the adapter is built for the UNet's own text width, any width."""
    return ModelParts(unet, codec, text, context_dim=None)


def toy_base_parts(
    folder: str | Path,
    patch: int = 1,
    scale: float | None = None,
    text: str | None = None,
    tokens: int = 77,
    seed: int = 0,
    cache: Path | None = None,
) -> ModelParts:
    """The parts of a toy base in ``folder``: its UNet, the pixel codec it records (``patch`` and ``scale``
    that contradict it are refused; without a record, they make the codec) and :func:`toy_text`."""
    unet = load_unet(folder)
    codec = PixelCodec.for_model(folder, patch, scale)
    return toy_parts(unet, codec, toy_text(text, tokens, seed, int(unet.config.cross_attention_dim), cache))
