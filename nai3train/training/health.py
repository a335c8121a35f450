"""A non-finite loss or gradient norm, noticed on the device and read only when it matters.

The historical loop asked ``if not torch.isfinite(loss)`` every micro-batch: a host sync per step
that, on a GPU, drains the queue of kernels. Here each check is a device-side ``where`` that keeps
the first step at which each quantity went non-finite; the trainer reads them before it logs,
checkpoints or returns, and refuses the run then, naming the same quantity and step as before. No
checkpoint or metric is ever written from a step after the first non-finite one.
"""
from __future__ import annotations

import torch

WATCHED = ("loss", "gradient norm")  # the order they are checked within one step


class StepHealth:
    """``watch(what, value, step)`` on the device; ``first_failure()`` → (what, step) or None."""

    def __init__(self, device: torch.device):
        self.first = {what: torch.full((), -1, dtype=torch.long, device=device) for what in WATCHED}

    def watch(self, what: str, value: torch.Tensor, step: int) -> None:
        first = self.first[what]
        first.copy_(torch.where(~torch.isfinite(value) & (first < 0), step, first))

    def first_failure(self) -> tuple[str, int] | None:
        """The earliest non-finite quantity and its step (a loss before a gradient at the same step)."""
        got = [(step, WATCHED.index(what), what) for what, t in self.first.items() if (step := int(t)) >= 0]
        if not got:
            return None
        step, _, what = min(got)
        return what, step
