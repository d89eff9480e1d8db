"""Training data: manifests, images (unreadable or tiny ones skipped and counted), batches, text embeddings.

A manifest is JSONL (one object per line with ``image`` and ``caption``, optional ``weight`` and ``palette``),
CSV (a header row with the same columns) or a folder of images with same-named ``.txt`` captions (docs/design.md
§8). Relative image paths are resolved against the manifest's folder. ``weight`` (from ``curate_dataset.py``) is
the per-image sampling weight; ``palette``, the palette the image was made from in any form of docs/palettes.md
(text, or a JSON list), is checked on reading and kept as written.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from palette_core.adapter import CONTEXT_DIM
from palette_core.errors import PaletteError, PaletteFormatError
from palette_core.palette import Palette

from .models import POOLED_DIM

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
_PATH_KEYS = ("image", "path", "file_name", "file", "filename")
_CAPTION_KEYS = ("caption", "text", "prompt")
# Errors a broken, truncated or hostile image file raises from Pillow; each costs one skipped image.
IMAGE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)


class ManifestError(PaletteError):
    """A manifest that cannot be read (missing columns, bad JSON)."""


@dataclass(frozen=True)
class Record:
    """One training image: its path, caption, sampling weight and palette as the manifest writes it (or None)."""

    image: Path
    caption: str = ""
    weight: float = 1.0
    palette: str | list | None = None


def parse_palette(value: str | list, where: str) -> Palette:
    """A manifest row's ``palette`` (docs/palettes.md text or a JSON list) as a :class:`Palette`."""
    try:
        return Palette.parse(value if isinstance(value, str) else json.dumps(value))
    except PaletteFormatError as e:
        raise ManifestError(f"{where}: palette: {e}") from None


def manifest_palettes(records: Sequence[Record]) -> list[Palette]:
    """Every record's palette (the recipe's manifest palette source); an error names the rows without one."""
    missing = [r.image.name for r in records if r.palette is None]
    if missing:
        raise ManifestError(
            f"the manifest palette source needs a palette on every row: {len(missing)} of {len(records)} have "
            f"none (first: {missing[0]}); add a 'palette' column, or take palettes by median cut"
        )
    return [parse_palette(r.palette, str(r.image)) for r in records]


def _record(row: dict, base: Path, where: str) -> Record:
    path = next((row[k] for k in _PATH_KEYS if row.get(k)), None)
    if path is None:
        raise ManifestError(f"{where}: no image path (expected one of the keys {list(_PATH_KEYS)})")
    caption = next((row[k] for k in _CAPTION_KEYS if row.get(k) is not None), "")
    try:
        weight = float(row.get("weight", 1.0) or 1.0)
    except ValueError:
        raise ManifestError(f"{where}: weight {row.get('weight')!r} is not a number") from None
    if not weight >= 0:
        raise ManifestError(f"{where}: weight {weight} must be >= 0")
    palette = row.get("palette")
    if palette in (None, ""):
        palette = None
    elif not isinstance(palette, (str, list)):
        raise ManifestError(f"{where}: palette {palette!r} is neither palette text nor a list of colours")
    else:
        parse_palette(palette, where)
    p = Path(path)
    return Record(p if p.is_absolute() else base / p, str(caption), weight, palette)


def read_manifest(path: str | Path) -> list[Record]:
    """Records of a JSONL or CSV manifest, or of a folder of images with ``.txt`` captions."""
    path = Path(path)
    if path.is_dir():
        out = []
        for f in sorted(path.rglob("*")):
            if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file():
                txt = f.with_suffix(".txt")
                out.append(Record(f, txt.read_text(encoding="utf-8").strip() if txt.is_file() else ""))
        return out
    if not path.is_file():
        raise ManifestError(f"{path}: no such manifest file or folder")
    base = path.parent
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            return [_record(row, base, f"{path.name} row {i + 2}") for i, row in enumerate(csv.DictReader(f))]
    out = []
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ManifestError(f"{path.name} line {i + 1}: not JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise ManifestError(f"{path.name} line {i + 1}: expected a JSON object")
            out.append(_record(row, base, f"{path.name} line {i + 1}"))
    return out


def write_manifest(records: Sequence[Record], path: str | Path, extra: Sequence[dict] | None = None) -> Path:
    """Write records as JSONL (paths relative to the manifest's folder when inside it), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for i, r in enumerate(records):
            try:
                image = str(r.image.resolve().relative_to(path.parent.resolve()))
            except ValueError:
                image = str(r.image.resolve())
            row = {"image": image, "caption": r.caption, "weight": r.weight}
            if r.palette is not None:
                row["palette"] = r.palette
            row.update(extra[i] if extra else {})
            f.write(json.dumps(row) + "\n")
    tmp.replace(path)
    return path


def load_image(path: Path, size: int, min_size: int) -> Tensor | None:
    """``[3, size, size]`` in [0, 1]: shorter side resized to ``size``, centre crop; None if unusable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if min(im.size) < min_size:
                    return None
                im = im.convert("RGB")
                scale = size / min(im.size)
                w, h = max(size, round(im.width * scale)), max(size, round(im.height * scale))
                if (w, h) != im.size:
                    im = im.resize((w, h), Image.Resampling.BICUBIC)
                left, top = (w - size) // 2, (h - size) // 2
                im = im.crop((left, top, left + size, top + size))
                arr = np.asarray(im, dtype=np.uint8).copy()
    except (*IMAGE_ERRORS, Image.DecompressionBombWarning) as e:
        log.debug("skipping %s: %s", path, e)
        return None
    return torch.from_numpy(arr).permute(2, 0, 1).float() / 255.0


class SampleKey(NamedTuple):
    """One sample of a step: its ``slot`` in the optimizer step's global batch and its record ``index``."""

    slot: int
    index: int


@dataclass(frozen=True)
class BatchInfo:
    """A micro-batch's bookkeeping: each loaded image's slot in its step's global batch, the skipped records.

    A sample's randomness (condition, noise, timestep) comes from its slot, not from its position in the
    process's micro-batch, so the same global batch split over any number of processes trains alike.
    """

    slots: list[int]
    skipped: list[int]


class ImageDataset(torch.utils.data.Dataset):
    """``(key, image [3, S, S] or None)`` for a record index or :class:`SampleKey`; None marks an unusable image."""

    def __init__(self, records: Sequence[Record], size: int, min_size: int | None = None) -> None:
        self.records = list(records)
        self.size = size
        self.min_size = size // 2 if min_size is None else min_size

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: int | SampleKey) -> tuple[int | SampleKey, Tensor | None]:
        index = key.index if isinstance(key, SampleKey) else key
        return key, load_image(self.records[index].image, self.size, self.min_size)


def collate(items: list[tuple[int | SampleKey, Tensor | None]]) -> tuple[Tensor, Tensor, BatchInfo]:
    """Stack the usable images: ``(record indices, images, BatchInfo)``; plain indices get slots 0, 1, ..."""
    keys = [k if isinstance(k, SampleKey) else SampleKey(pos, k) for pos, (k, _) in enumerate(items)]
    ok = [(k, x) for k, (_, x) in zip(keys, items) if x is not None]
    info = BatchInfo([k.slot for k, _ in ok], [k.index for k, (_, x) in zip(keys, items) if x is None])
    if not ok:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0), info
    return torch.tensor([k.index for k, _ in ok]), torch.stack([x for _, x in ok]), info


def step_seed(seed: int, *parts: int) -> int:
    """A 63-bit seed for one (step, micro-batch, purpose): every step's randomness is independent of history."""
    return int(np.random.SeedSequence([seed, *parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


class StepBatches(torch.utils.data.Sampler[list[int]]):
    """Index batches for micro-steps ``start, start+1, ...``: drawn by sampling weight from a per-step seed.

    Optimizer step ``s`` draws one global batch of ``batch x world x accum`` records from ``(seed, s)``;
    micro-step ``k`` of the step gives process ``rank`` of ``world`` the slots
    ``(k * world + rank) * batch ...`` of it, so the processes see disjoint shards and a batch depends only
    on (seed, step, slot): a resumed run, or the same global batch split over another number of processes,
    sees exactly the samples it would have. ``keyed`` yields :class:`SampleKey` (slot, index) pairs.
    """

    def __init__(
        self,
        weights: Sequence[float],
        batch: int,
        seed: int,
        start: int,
        total: int,
        *,
        accum: int = 1,
        rank: int = 0,
        world: int = 1,
        keyed: bool = False,
    ) -> None:
        w = torch.as_tensor(np.asarray(weights, dtype=np.float64))
        if w.numel() == 0 or not bool((w > 0).any()):
            raise ManifestError("no image has a positive sampling weight")
        if batch < 1 or accum < 1 or not 0 <= rank < world:
            raise PaletteError(
                f"batch {batch} and accumulation {accum} must be >= 1, process {rank} one of 0..{world - 1}"
            )
        self.weights, self.batch, self.seed, self.start, self.total = w, batch, seed, start, total
        self.accum, self.rank, self.world, self.keyed = accum, rank, world, keyed
        self._plan: tuple[int, list[int]] | None = None

    def __len__(self) -> int:
        return max(0, self.total - self.start)

    @property
    def global_batch(self) -> int:
        """Samples per optimizer step over all processes and micro-steps."""
        return self.batch * self.world * self.accum

    def plan(self, step: int) -> list[int]:
        """The record indices of optimizer step ``step``'s global batch, by slot."""
        if self._plan is None or self._plan[0] != step:
            g = torch.Generator().manual_seed(step_seed(self.seed, step, 0))
            drawn = torch.multinomial(self.weights, self.global_batch, replacement=True, generator=g)
            self._plan = step, drawn.tolist()
        return self._plan[1]

    def __iter__(self) -> Iterator[list]:
        for micro in range(self.start, self.total):
            step, k = divmod(micro, self.accum)
            first = (k * self.world + self.rank) * self.batch
            slots = range(first, first + self.batch)
            plan = self.plan(step)
            yield [SampleKey(s, plan[s]) for s in slots] if self.keyed else [plan[s] for s in slots]


class ConstantText:
    """The same text embedding for every caption (toy runs and tests: no text encoder is needed).

    ``seed=None`` gives zeros; the empty caption (text drop) is always zeros.
    """

    def __init__(self, tokens: int = 77, seed: int | None = None, dim: int = CONTEXT_DIM) -> None:
        if seed is None:
            self.emb, self.pooled = torch.zeros(1, tokens, dim), torch.zeros(1, POOLED_DIM)
        else:
            g = torch.Generator().manual_seed(seed)
            self.emb = torch.randn(1, tokens, dim, generator=g)
            self.pooled = torch.randn(1, POOLED_DIM, generator=g)
        self.tokens, self.dim = tokens, dim

    def embed(self, captions: Sequence[str]) -> tuple[Tensor, Tensor]:
        """``(text [B, L, 2048], pooled [B, 1280])``."""
        b = len(captions)
        return self.emb.expand(b, -1, -1), self.pooled.expand(b, -1)

    def empty(self, batch: int) -> tuple[Tensor, Tensor]:
        """The embedding of the empty caption."""
        return torch.zeros(batch, self.tokens, self.dim), torch.zeros(batch, POOLED_DIM)


def caption_key(caption: str) -> str:
    """Key of a caption in a text-embedding cache."""
    return hashlib.sha1(caption.encode("utf-8")).hexdigest()


class CachedText:
    """Precomputed SDXL text embeddings: a ``.safetensors`` file with ``text.<sha1>`` and ``pooled.<sha1>``.

    Build it with :func:`encode_text_cache` (needs ``transformers`` and a local SDXL pipeline folder).
    The empty caption must be in the cache (it is the text-drop embedding).
    """

    def __init__(self, path: str | Path) -> None:
        from safetensors.torch import load_file

        self.path = Path(path)
        self.tensors = load_file(str(self.path))
        if f"text.{caption_key('')}" not in self.tensors:
            raise ManifestError(f"{self.path.name}: the empty caption is missing (needed for the text drop)")

    def _one(self, caption: str) -> tuple[Tensor, Tensor]:
        k = caption_key(caption)
        if f"text.{k}" not in self.tensors:
            raise ManifestError(f"{self.path.name}: no embedding for caption {caption[:60]!r}; rebuild the cache")
        return self.tensors[f"text.{k}"], self.tensors[f"pooled.{k}"]

    def embed(self, captions: Sequence[str]) -> tuple[Tensor, Tensor]:
        """``(text [B, 77, 2048], pooled [B, 1280])`` from the cache."""
        pairs = [self._one(c) for c in captions]
        return torch.stack([p[0] for p in pairs]).float(), torch.stack([p[1] for p in pairs]).float()

    def empty(self, batch: int) -> tuple[Tensor, Tensor]:
        """The embedding of the empty caption."""
        t, p = self._one("")
        return t.float().expand(batch, -1, -1), p.float().expand(batch, -1)


def encode_text_cache(pipeline_dir: str | Path, captions: Sequence[str], out: str | Path, device: str = "cpu") -> Path:
    """Encode captions with SDXL's two text encoders as the SDXL pipeline does, into a :class:`CachedText` file.

    Penultimate hidden states of CLIP-L and CLIP-G concatenated (77 x 2048) and CLIP-G's projected pooled
    output (1280). Needs ``transformers`` and the local ``tokenizer*``/``text_encoder*`` folders.
    """
    try:
        from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer
    except ImportError as e:
        raise ImportError("encoding captions needs transformers (pip install -r train/requirements.txt)") from e
    from safetensors.torch import save_file

    root = Path(pipeline_dir)
    toks = [
        CLIPTokenizer.from_pretrained(root, subfolder=s, local_files_only=True) for s in ("tokenizer", "tokenizer_2")
    ]
    enc1 = CLIPTextModel.from_pretrained(root, subfolder="text_encoder", local_files_only=True).to(device).eval()
    enc2 = CLIPTextModelWithProjection.from_pretrained(root, subfolder="text_encoder_2", local_files_only=True)
    enc2 = enc2.to(device).eval()
    tensors: dict[str, Tensor] = {}
    for caption in dict.fromkeys(["", *captions]):
        hidden, pooled = [], None
        for tok, enc in zip(toks, (enc1, enc2)):
            ids = tok([caption], padding="max_length", max_length=tok.model_max_length, truncation=True).input_ids
            with torch.no_grad():
                o = enc(torch.tensor(ids, device=device), output_hidden_states=True)
            hidden.append(o.hidden_states[-2][0])
            if enc is enc2:
                pooled = o.text_embeds[0]
        k = caption_key(caption)
        tensors[f"text.{k}"] = torch.cat(hidden, dim=-1).half().cpu().contiguous()
        tensors[f"pooled.{k}"] = pooled.half().cpu().contiguous()
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    save_file(tensors, str(tmp))
    tmp.replace(out)
    return out


class LatentCache:
    """Optional cache of VAE encoder moments per image (``folder/<sha1>.safetensors``), keyed by file and size.

    Latents are then drawn from the cached moments with the step's generator, so a cached and an
    uncached run train on the same latents.
    """

    def __init__(self, folder: str | Path, size: int) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.size = size

    def _key(self, path: Path) -> Path:
        st = path.stat()
        key = hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{self.size}".encode()).hexdigest()
        return self.folder / f"{key}.safetensors"

    def moments(self, codec, paths: Sequence[Path], images: Tensor) -> Tensor:
        """Encoder moments of each image, from the cache or computed (and stored) for the missing ones."""
        from safetensors.torch import load_file, save_file

        files = [self._key(p) for p in paths]
        out: list[Tensor | None] = [load_file(str(f))["moments"] if f.is_file() else None for f in files]
        missing = [i for i, m in enumerate(out) if m is None]
        if missing:
            fresh = codec.moments(images[missing]).cpu()
            for j, i in enumerate(missing):
                # a name of its own per process: training processes may cache the same image at the same time
                tmp = files[i].with_name(f".{files[i].name}.{os.getpid()}.tmp")
                save_file({"moments": fresh[j].contiguous()}, str(tmp))
                tmp.replace(files[i])
                out[i] = fresh[j]
        return torch.stack(out)
