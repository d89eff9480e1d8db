"""Learning-rate schedules of both trainers (docs/training.md "What the trainer does"): constant or cosine."""

from __future__ import annotations

import math

LR_SCHEDULES = ("constant", "cosine")


def learning_rate(
    step: int, steps: int, lr: float, warmup: int = 0, schedule: str = "constant", floor: float = 0.1
) -> float:
    """Rate of 0-based ``step`` of ``steps``: linear warm-up over ``warmup``, then ``lr`` or a cosine to ``floor x lr``.

    At a constant rate the last weights are a noisy iterate; decaying it lets them settle (docs/training.md
    "Toy run").
    """
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"learning-rate schedule {schedule!r}: choose one of {', '.join(LR_SCHEDULES)}")
    ramp = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
    if schedule == "constant":
        return lr * ramp
    return lr * ramp * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(step, steps) / max(steps, 1))))
