"""The training loop for one variant: σ drawn from the variant's table, loss through the shared
denoiser's raw output, Min-SNR weights, EMA, and metrics to an MLflow run given by id."""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from .checkpoint import (latest_step_checkpoint, load_train_state, load_weights, optimizer_tensors,
                         restore_optimizer, save_checkpoint, save_step_checkpoint)
from .config import AblationConfig, VariantConfig, to_dict
from .data import PAD, BucketBatches, BucketedDataset, TagWeighting, Vocabulary
from .data.normalize import ChannelStats, channel_stats
from .diffusion import min_snr_weight, noise_sample, training_target
from .models import TinyTagUNet
from .tracking import Tracker
from .variant import build_denoiser, expected_failure

log = logging.getLogger(__name__)

# Loss-per-σ bins in SDXL units (upper edges); the last bin holds σ = +∞ alone.
SIGMA_BINS = ((0.1, "lt0.1"), (1.0, "0.1-1"), (10.0, "1-10"), (100.0, "10-100"), (1000.0, "100-1000"),
              (math.inf, "gt1000"))


class TrainingDiverged(RuntimeError):
    """Loss or gradients became non-finite; the last good checkpoint is kept."""

    def __init__(self, message: str, last_checkpoint: Path | None):
        super().__init__(message + (f"; last good checkpoint: {last_checkpoint}" if last_checkpoint
                                    else "; no checkpoint was written before it"))
        self.last_checkpoint = last_checkpoint


def sigma_bin_labels(sigma_sdxl: torch.Tensor) -> list[str]:
    out = []
    for s in sigma_sdxl.tolist():
        if math.isinf(s):
            out.append("inf")
            continue
        out.append(next(label for edge, label in SIGMA_BINS if s < edge))
    return out


@dataclass
class TrainResult:
    checkpoint: Path
    final_loss: float
    img_per_s: float
    steps: int
    resumed_from: int = 0  # the step training resumed at (0 for a fresh run)


class TinyAdapter:
    """What the trainer needs from the tiny model: network, pixel batches, tag conditioning."""

    def __init__(self, cfg: AblationConfig, vocab: Vocabulary, data: BucketedDataset):
        self.network = TinyTagUNet(len(vocab), cfg.data.resolution, cfg.model.block_out_channels,
                                   cfg.model.cross_attention_dim, cfg.model.max_tags)
        self.tag_ids = vocab.ids(data.tags, cfg.model.max_tags)
        self.data = data
        self.channels = 3
        self.sample_dim = 3 * data.max_area

    def batch(self, idx: list[int], generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.data.batch(idx, generator)

    def cond(self, idx: list[int], dropped: torch.Tensor, time_ids: torch.Tensor) -> dict:
        ids = self.tag_ids[idx].clone()
        ids[dropped] = PAD
        return {"tag_ids": ids, "time_ids": time_ids}

    def meta(self) -> dict:
        return self.network.config


def build_adapter(cfg: AblationConfig, vocab: Vocabulary, data: BucketedDataset, out_dir: str | Path):
    if cfg.model.kind == "sdxl":
        from .models.sdxl import SDXLAdapter

        device = "cuda" if torch.cuda.is_available() else "cpu"
        return SDXLAdapter(cfg.model.path, data, Path(out_dir).parent.parent / "cache", device=device)
    return TinyAdapter(cfg, vocab, data)


def data_normalization(variant: VariantConfig, adapter) -> ChannelStats | None:
    """The variant's map to the model's data space (applied to x0, inverted on samples)."""
    if variant.normalize == "dataset":
        return channel_stats(adapter.batch([i], None)[0] for i in range(len(adapter.data)))
    if variant.normalize == "fixed":
        inv = 1.0 / variant.normalize_scale
        return ChannelStats((0.0,) * adapter.channels, (inv,) * adapter.channels)
    return None


def peak_memory_mb() -> float:
    """Peak memory of this process: CUDA allocator peak on GPU, max RSS on CPU."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _distributed():
    """accelerate's state when launched with several processes (``accelerate launch``), else None."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import Accelerator

    return Accelerator(cpu=not torch.cuda.is_available())  # CPU: DDP over gloo


def train_variant(cfg: AblationConfig, variant: VariantConfig, data: BucketedDataset, vocab: Vocabulary,
                  out_dir: str | Path, tracker: Tracker | None = None,
                  progress: bool = True, on_step: Callable[[int, dict], None] | None = None,
                  resume: bool = False) -> TrainResult:
    """Train one variant on in-memory data and write its checkpoint under ``out_dir``.

    Resumable checkpoints go to ``out_dir/checkpoints/step-N`` every ``train.checkpoint_every``
    steps; with ``resume`` the newest one is loaded (weights, EMA, optimiser, RNG state, step), so
    a killed run continues exactly where its checkpoint left it. The final checkpoint (EMA and raw
    weights, for evaluation) is ``out_dir/checkpoint``.

    ``on_step(step, info)`` sees each optimiser step's last micro-batch (image indices, σ,
    per-sample MSE and the loss weight applied) — for tests and custom monitoring.

    Under ``accelerate launch`` (several processes) the model is wrapped for DDP, each rank takes
    its shard of the bucket plan and its own noise stream (seed + rank), and only the main process
    writes checkpoints and logs.
    """
    tc = cfg.train
    if tc.threads:
        torch.set_num_threads(tc.threads)
    warning = expected_failure(variant)
    if warning:
        log.warning(warning)
    acc = _distributed()
    rank, world = (acc.process_index, acc.num_processes) if acc else (0, 1)
    main = rank == 0
    torch.manual_seed(tc.seed)
    gen = torch.Generator().manual_seed(tc.seed + rank)
    r = cfg.data.resolution
    adapter = build_adapter(cfg, vocab, data, out_dir)
    model = adapter.network
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=tc.lr, weight_decay=0.01)
    network = model
    if acc:
        network, opt = acc.prepare(model, opt)
    device = next(model.parameters()).device
    denoiser = build_denoiser(network, variant, sample_dim=adapter.sample_dim)
    schedule = denoiser.schedule
    norm = data_normalization(variant, adapter)
    tag_w = torch.from_numpy(TagWeighting().weights(data.tags)).float() if variant.tag_weighting else None
    batches = BucketBatches(data.bucket_of, tc.batch_size, seed=tc.seed)
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    sigmas = schedule.sigmas  # float64, model units, may end in +∞
    meta = {"model": adapter.meta(), "model_kind": cfg.model.kind, "vocab": list(vocab.tags),
            "variant": to_dict(variant), "variant_hash": variant.config_hash(), "schedule_scale": schedule.scale,
            "resolution": r, "sample_dim": adapter.sample_dim, "normalization": norm.to_dict() if norm else None}
    tracker = tracker if main else None
    if tracker:
        tracker.log_params({"variant.hash": variant.config_hash(), "schedule.scale": schedule.scale,
                            "schedule.sigma_max_sdxl": variant.top_sigma, "train.world_size": world,
                            "model.params": sum(p.numel() for p in params)})
    start = 0
    last = latest_step_checkpoint(out_dir) if resume else None
    if last is not None:
        start = _restore(last, model, ema, opt, gen, variant)
        log.info("resuming %s from %s (step %d)", variant.name, last, start)
        if tracker:
            tracker.set_tags({"nai3.resumed_from_step": start})

    def train_state(step_done: int) -> dict[str, torch.Tensor]:
        return {**optimizer_tensors(opt), "rng.generator": gen.get_state(), "rng.torch": torch.get_rng_state(),
                "step": torch.tensor(step_done)}

    def diverged(what: str, step: int) -> TrainingDiverged:
        return TrainingDiverged(f"variant {variant.name}: non-finite {what} at step {step}",
                                latest_step_checkpoint(out_dir))

    stream = batches.batches(rank, world, skip=start * tc.grad_accum)
    bin_sum: dict[str, float] = {}
    bin_cnt: dict[str, int] = {}
    t_start = time.perf_counter()
    loss_val = float("nan")
    bar = tqdm(range(start, tc.steps), desc=f"train {variant.name}", disable=not (progress and main), leave=False,
               initial=start, total=tc.steps)
    for step in bar:
        lr = tc.lr * min(1.0, (step + 1) / max(1, tc.warmup_steps))
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for micro in range(tc.grad_accum):
            _bucket, idx = next(stream)
            x0, time_ids = adapter.batch(idx, gen)
            if norm is not None:
                x0 = norm.apply(x0)
            cond = adapter.cond(idx, torch.rand(len(idx), generator=gen) < tc.tag_dropout, time_ids)
            t = torch.randint(0, len(sigmas), (len(idx),), generator=gen)
            sigma = sigmas[t]
            eps = torch.randn(x0.shape, generator=gen)
            x0, eps = x0.to(device), eps.to(device)  # fp32: σ up to 20000 overflows fp16
            x = noise_sample(x0, eps, sigma.to(device))
            f = denoiser.raw(x, sigma.to(device), {k: v.to(device) for k, v in cond.items()})
            target = training_target(variant.prediction, x0, eps, sigma.to(device))
            per_sample = (f - target).pow(2).flatten(1).mean(1).cpu()
            weight = min_snr_weight(variant.prediction, sigma, variant.min_snr_gamma).to(per_sample.dtype)
            if tag_w is not None:
                weight = weight * tag_w[idx]
            loss = (weight * per_sample).mean()
            if not torch.isfinite(loss):
                raise diverged("loss", step)
            if acc and micro < tc.grad_accum - 1:
                with acc.no_sync(network):
                    (loss / tc.grad_accum).backward()
            else:
                (loss / tc.grad_accum).backward()
            loss_sum += float(loss.detach())
            for label, l in zip(sigma_bin_labels(schedule.to_sdxl(sigma)), per_sample.detach().tolist()):
                bin_sum[label] = bin_sum.get(label, 0.0) + l
                bin_cnt[label] = bin_cnt.get(label, 0) + 1
        grad_norm = torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
        if not torch.isfinite(grad_norm):
            raise diverged("gradient norm", step)
        opt.step()
        decay = min(tc.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for k, v in model.state_dict().items():
                ema[k].lerp_(v, 1 - decay) if v.is_floating_point() else ema[k].copy_(v)
        loss_val = loss_sum / tc.grad_accum
        if (step + 1) % tc.log_every == 0 or step + 1 == tc.steps:
            elapsed = time.perf_counter() - t_start
            metrics = {"train/loss": loss_val, "train/lr": lr, "train/grad_norm": float(grad_norm),
                       "train/img_per_s": (step + 1 - start) * tc.batch_size * tc.grad_accum * world / elapsed,
                       "train/peak_mem_mb": peak_memory_mb()}
            metrics.update({f"train/loss_sigma_bin/{k}": bin_sum[k] / bin_cnt[k] for k in bin_sum})
            bin_sum.clear()
            bin_cnt.clear()
            bar.set_postfix(loss=f"{loss_val:.4f}")
            if tracker:
                tracker.log_metrics(metrics, step=step + 1)
        if main and ((step + 1) % tc.checkpoint_every == 0 or step + 1 == tc.steps):
            save_step_checkpoint(out_dir, step + 1, model, ema, meta, train_state(step + 1))
        if on_step:
            on_step(step, {"idx": idx, "sigma": sigma, "per_sample": per_sample.detach(), "weight": weight.detach(),
                           "loss": loss.detach()})
    elapsed = time.perf_counter() - t_start
    meta["step"] = tc.steps
    ckpt = Path(out_dir) / "checkpoint"
    if main:
        save_checkpoint(ckpt, model, ema, meta)
    if acc:
        acc.wait_for_everyone()
    return TrainResult(checkpoint=ckpt, final_loss=loss_val,
                       img_per_s=(tc.steps - start) * tc.batch_size * tc.grad_accum * world / max(elapsed, 1e-9),
                       steps=tc.steps, resumed_from=start)


def _restore(folder: Path, model: torch.nn.Module, ema: dict[str, torch.Tensor], opt: torch.optim.Optimizer,
             gen: torch.Generator, variant: VariantConfig) -> int:
    """Load a step checkpoint into the live objects; returns the number of steps already done."""
    from .checkpoint import load_meta

    meta = load_meta(folder)
    if meta.get("variant_hash") != variant.config_hash():
        raise ValueError(f"{folder} belongs to variant hash {meta.get('variant_hash')}, not "
                         f"{variant.config_hash()} ({variant.name}): refusing to resume a different variant")
    model.load_state_dict(load_weights(folder, ema=False))
    for k, v in load_weights(folder, ema=True).items():
        ema[k].copy_(v)
    state = load_train_state(folder)
    restore_optimizer(opt, state)
    gen.set_state(state["rng.generator"])
    torch.set_rng_state(state["rng.torch"])
    return int(state["step"])
