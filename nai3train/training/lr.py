"""Learning-rate schedules as functions of the optimiser step (EDM2's ``learning_rate_schedule`` role)."""
from __future__ import annotations

from typing import Callable


def linear_warmup(base_lr: float, warmup_steps: int) -> Callable[[int], float]:
    """step ↦ base_lr·min(1, (step + 1)/warmup_steps), then constant.

    Counted from step 0, so the first update already uses base_lr/warmup_steps (never 0, which
    would waste a step); ``warmup_steps <= 1`` means no warm-up.
    """
    def lr(step: int) -> float:
        return base_lr * min(1.0, (step + 1) / max(1, warmup_steps))

    return lr
