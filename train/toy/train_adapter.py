"""Train the Palette-Adapter on a toy base: the SDXL trainer's flags and loop, the toy's parts (docs/training.md).

``train/train_palette_adapter.py`` takes every flag it documents; a toy base folder (from
``train/toy/train_base.py``) goes to ``--model``, and the flags below replace SDXL's VAE and text encoder:
the base's pixel codec (its record in ``pixel_codec.json``, or ``--pixel-patch``/``--pixel-scale``), text
embeddings without an encoder (``--constant-text``) and the base's own text width, whatever it is (the
adapter then fits no SDXL model). ``--stop-after`` ends a run as a kill would, to try resuming.

    accelerate launch train/toy/train_adapter.py --model toy-base/ --data toy/manifest.jsonl \\
        --output runs/toy --constant-text words --text-tokens 12 --resolution 16 --validate-every 0
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a script: make the repository root importable
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import argparse
from collections.abc import Sequence

from palette_core.errors import PaletteError
from train.toy.parts import TEXT_KINDS, toy_base_parts
from train.train_palette_adapter import ModelParts, config_from_args, run
from train.train_palette_adapter import build_parser as trainer_parser


def build_parser() -> argparse.ArgumentParser:
    """The trainer's command line with the toy's flags."""
    p = trainer_parser()
    p.description = __doc__
    toy = p.add_argument_group("toy model")
    a = toy.add_argument
    a("--pixel-patch", type=int, default=1, help="f x f pixel patches become latent channels")
    a(
        "--pixel-scale",
        type=float,
        help="latents = scale x pixels in [-1, 1] (default: as the model folder records, else 1)",
    )
    a(
        "--constant-text",
        choices=TEXT_KINDS,
        help="no text encoder: one fixed embedding for every caption, or hashed word vectors",
    )
    a("--text-tokens", type=int, default=77, help="sequence length of --constant-text embeddings")
    a("--stop-after", type=int, help="stop after this many steps as if killed (to try resuming)")
    return p


def parts_from_args(args: argparse.Namespace) -> ModelParts:
    """The toy base's parts that the flags name."""
    if args.model is None:
        raise PaletteError("give --model (a toy base folder written by train/toy/train_base.py)")
    return toy_base_parts(
        args.model, args.pixel_patch, args.pixel_scale, args.constant_text, args.text_tokens, args.seed, args.text_cache
    )


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    args = build_parser().parse_args(argv)
    stop = None if args.stop_after is None else (lambda step: step >= args.stop_after)
    return run(config_from_args(args), lambda: parts_from_args(args), stop)


if __name__ == "__main__":
    raise SystemExit(main())
