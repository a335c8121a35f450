"""Everything a killed run needs to continue bit-identically, saved and loaded as one object.

EDM2's ``CheckpointIO(state=…, net=…, optimizer=…, ema=…).load_latest(run_dir)`` is the model:
the loop names the pieces once and then only calls ``save``/``load_latest``. The files are the
ones ``nai3train.checkpoint`` writes (safetensors, never pickle; atomic folders): raw weights,
EMA weights, meta.json, and ``state.safetensors`` with the optimiser moments, both RNG states
(the data/noise ``torch.Generator`` and torch's global RNG) and the step.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..checkpoint import (load_meta, load_train_state, load_weights, optimizer_tensors,
                          restore_optimizer, save_step_checkpoint, step_checkpoints)
from .ema import EMA
from ..ops.checkpoint_writer import CheckpointWriter

log = logging.getLogger(__name__)


class VariantMismatch(ValueError):
    """A checkpoint of another variant: resuming it would train a hybrid."""


@dataclass
class TrainingState:
    """Model, EMA, optimiser, generator and step of one training run.

    ``variant_hash``: when set, ``save`` stamps it into meta.json and ``load`` refuses a checkpoint
    of any other variant (resuming the wrong variant would silently train a hybrid).
    ``write_model(folder)``: an optional hook that writes the model's own self-describing form
    (e.g. a bundle's ``save_pretrained``: ``config.json`` + weights) into the checkpoint folder
    before it becomes visible. The raw ``model.safetensors`` is written either way: resume reads it.
    ``generator_state()``: the data generator's state to save, when a feed thread draws ahead of
    the step (``training/feed.py``: the state after the last consumed micro-batch); default its
    current state. ``noise_generator``: the device generator ε is drawn from on a GPU, saved beside it.
    """

    model: torch.nn.Module
    ema: EMA
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    step: int = 0
    variant_hash: str | None = None
    write_model: Callable[[Path], None] | None = None
    generator_state: Callable[[], torch.Tensor] | None = None
    noise_generator: torch.Generator | None = None

    def train_tensors(self, step: int) -> dict[str, torch.Tensor]:
        """The resume state after ``step`` optimiser steps: optimiser moments, RNG states, step."""
        rng = self.generator_state() if self.generator_state is not None else self.generator.get_state()
        noise = {"rng.noise": self.noise_generator.get_state()} if self.noise_generator is not None else {}
        return {**optimizer_tensors(self.optimizer), "rng.generator": rng, **noise,
                "rng.torch": torch.get_rng_state(), "step": torch.tensor(step)}

    def save(self, run_dir: str | Path, step: int, meta: dict, keep: int = 2) -> Path:
        """Write ``run_dir/checkpoints/step-N`` atomically, keep the newest ``keep``; returns the folder."""
        self.step = step
        return save_step_checkpoint(run_dir, step, self.model, self.ema.state_dict(), self._meta(meta),
                                    self.train_tensors(step), keep=keep, write_extra=self.write_model)

    def save_async(self, writer: CheckpointWriter, step: int, meta: dict) -> None:
        """The same checkpoint, snapshotted now and written by ``writer``'s thread (``ops/checkpoint_writer.py``)."""
        self.step = step
        writer.save(step, self.model.state_dict(), self.ema.state_dict(), self._meta(meta), self.train_tensors(step),
                    write_extra=self.write_model)

    def _meta(self, meta: dict) -> dict:
        meta = dict(meta)
        if self.variant_hash is not None:
            meta.setdefault("variant_hash", self.variant_hash)
        return meta

    def load(self, folder: str | Path) -> int:
        """Load a step checkpoint into the live objects; returns (and sets) the steps already done.

        Sets the generator's and torch's global RNG state last, exactly as they were saved, so the
        next draw is the one the killed run would have made.
        """
        meta = load_meta(folder)
        if self.variant_hash is not None and meta.get("variant_hash") != self.variant_hash:
            raise VariantMismatch(f"{folder} belongs to variant hash {meta.get('variant_hash')}, not "
                             f"{self.variant_hash}: refusing to resume a different variant")
        self.model.load_state_dict(load_weights(folder, ema=False))
        self.ema.load_state_dict(load_weights(folder, ema=True))
        state = load_train_state(folder)
        restore_optimizer(self.optimizer, state)
        self.generator.set_state(state["rng.generator"])
        if self.noise_generator is not None and "rng.noise" in state:
            self.noise_generator.set_state(state["rng.noise"])
        torch.set_rng_state(state["rng.torch"])
        self.step = int(state["step"])
        return self.step

    def load_latest(self, run_dir: str | Path) -> int:
        """Resume from the newest readable step checkpoint under ``run_dir``; 0 if there is none.

        A truncated or corrupt newest checkpoint (a disk that filled, a copy cut short) is skipped
        with a warning and the previous one is used: ``fallbacks`` lists what was skipped and why.
        A checkpoint of another variant is never skipped silently: that raises."""
        self.fallbacks: list[str] = []
        for folder in reversed(step_checkpoints(run_dir)):
            try:
                return self.load(folder)
            except VariantMismatch:
                raise
            except Exception as e:  # safetensors, JSON and OS errors all mean "unreadable"
                reason = f"{folder.name} unreadable ({type(e).__name__}: {e}); falling back to the previous checkpoint"
                log.warning(reason)
                self.fallbacks.append(reason)
        return 0
