"""The training loop for one variant, wired from named parts (EDM2's ``training_loop.py`` is the
model): the model bundle and its data source, the loss (parameterisation + Min-SNR weighting + σ
sampler), a learning-rate function, the EMA, the σ-bin loss monitor and the checkpoint state.
Metrics go to an MLflow run given by id."""
from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch
from .ops.progress import progress as progress_bar
from .ops.threads import apply_threads

from .checkpoint import latest_step_checkpoint, save_checkpoint
from .config import AblationConfig, VariantConfig, to_dict
from .data import BucketBatches, BucketedDataset, TagWeighting, Vocabulary
from .data.normalize import ChannelStats, channel_stats
from .diffusion import DiffusionLoss, MinSNRWeighting
from .models import TinyBundle
from .training import EMA, SigmaBinLoss, TrainingState, linear_warmup
from .training.feed import Feed, FeedSpec
from .training.health import StepHealth
from .ops.checkpoint_writer import CheckpointWriter
from .variant import build_denoiser, expected_failure

if TYPE_CHECKING:  # the trainer runs where MLflow is not installed (a bare GPU image): its tracker is optional
    from .ops.tracking import Tracker

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """Loss or gradients became non-finite; the last good checkpoint is kept."""

    def __init__(self, message: str, last_checkpoint: Path | None):
        super().__init__(message + (f"; last good checkpoint: {last_checkpoint}" if last_checkpoint
                                    else "; no checkpoint was written before it"))
        self.last_checkpoint = last_checkpoint


@dataclass
class TrainResult:
    checkpoint: Path
    final_loss: float
    img_per_s: float
    steps: int
    resumed_from: int = 0  # the step training resumed at (0 for a fresh run)


class TinySource:
    """The benchmark's training batches for the tiny bundle: pixels and tag conditioning."""

    def __init__(self, bundle: TinyBundle, data: BucketedDataset):
        self.bundle = bundle
        self.data = data
        self.channels = 3
        self.sample_dim = 3 * data.max_area

    def batch(self, idx: list[int], generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.data.batch(idx, generator)

    def cond(self, idx: list[int], dropped: torch.Tensor, time_ids: torch.Tensor) -> dict:
        """The tags of each image, or the empty prompt where tag dropout hit (CFG's unconditional)."""
        tags = [[] if d else self.data.tags[i] for i, d in zip(idx, dropped.tolist())]
        return self.bundle.encode(tags, time_ids)


def build_model(cfg: AblationConfig, vocab: Vocabulary, data: BucketedDataset, out_dir: str | Path):
    """(bundle, data source) for the configured model kind; on the GPU when there is one."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if cfg.model.kind == "sdxl":
        from .models.sdxl import SDXLAdapter

        adapter = SDXLAdapter(cfg.model.path, data, Path(out_dir).parent.parent / "cache", device=device,
                              resolution=cfg.data.resolution)
        return adapter, adapter
    bundle = TinyBundle(vocab.tags, cfg.data.resolution, cfg.model.block_out_channels, cfg.model.cross_attention_dim,
                        cfg.model.max_tags)
    bundle.to(device)
    return bundle, TinySource(bundle, data)


def data_normalization(variant: VariantConfig, source) -> ChannelStats | None:
    """The variant's map to the model's data space (applied to x0, inverted on samples)."""
    if variant.normalize == "dataset":
        return channel_stats(source.batch([i], None)[0] for i in range(len(source.data)))
    if variant.normalize == "fixed":
        inv = 1.0 / variant.normalize_scale
        return ChannelStats((0.0,) * source.channels, (inv,) * source.channels)
    return None


def peak_memory_mb() -> float:
    """Peak memory of this process: CUDA allocator peak on GPU, max RSS on CPU."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


PREFETCH = 2  # micro-batches the feed thread makes ahead of the step


def optimizer(params: list[torch.nn.Parameter], lr: float, device: torch.device) -> torch.optim.Optimizer:
    """AdamW, fused: one kernel per parameter group, its step counters on the device. torch's default
    elsewhere is a Python loop per parameter that reads each step counter back (``.item()``); fused
    on the CPU too, it took the tiny model's optimiser step from 15 to 5 ms here, and moved its
    weights by at most 2.5e-7 after 40 steps (rounding: a new training identity, like any trainer edit)."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.01, fused=device.type in ("cuda", "cpu") or None)


def set_gradient_checkpointing(network: torch.nn.Module, cfg: AblationConfig) -> bool:
    """Recompute activations in the backward pass or not, per ``train.gradient_checkpointing``; 'auto'
    asks the memory estimate (``nai3train/ops/memory.py``) whether the step fits without. Says which."""
    from .ops.memory import checkpointing_needed

    mode = cfg.train.gradient_checkpointing
    on = mode == "on" or (mode == "auto" and checkpointing_needed(cfg))
    unet = getattr(network, "unet", network)
    if hasattr(unet, "enable_gradient_checkpointing"):
        (unet.enable_gradient_checkpointing if on else unet.disable_gradient_checkpointing)()
    log.info("gradient checkpointing %s (train.gradient_checkpointing: %s)", "on" if on else "off", mode)
    return on


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
                  resume: bool = False, on_checkpoint: Callable[[Path], None] | None = None) -> TrainResult:
    """Train one variant on in-memory data and write its checkpoint under ``out_dir``.

    Resumable checkpoints go to ``out_dir/checkpoints/step-N`` every ``train.checkpoint_every``
    steps; with ``resume`` the newest one is loaded (weights, EMA, optimiser, RNG state, step), so
    a killed run continues exactly where its checkpoint left it. The final checkpoint (EMA and raw
    weights plus the bundle's config.json, loadable with ``load_bundle``) is ``out_dir/checkpoint``.

    ``on_step(step, info)`` sees each optimiser step's last micro-batch (image indices, σ,
    per-sample MSE and the loss weight applied) — for tests and custom monitoring.
    ``on_checkpoint(folder)`` sees each resumable checkpoint once it is written (main process only):
    ``train.checkpoint_store: tracking`` copies it to MLflow from there (``remote_checkpoint.py``).

    Under ``accelerate launch`` (several processes) the model is wrapped for DDP, each rank takes
    its shard of the bucket plan and its own noise stream (seed + rank), and only the main process
    writes checkpoints and logs.
    """
    tc = cfg.train
    apply_threads(tc.threads)
    warning = expected_failure(variant)
    if warning:
        log.warning(warning)
    acc = _distributed()
    rank, world = (acc.process_index, acc.num_processes) if acc else (0, 1)
    main = rank == 0
    seed = tc.seed + variant.seed_offset  # a null twin's seeds are its own (VariantConfig.seed_offset)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + rank)
    with acc.main_process_first() if acc else nullcontext():  # rank 0 fills the latent cache, the others read it
        bundle, source = build_model(cfg, vocab, data, out_dir)
    model = bundle.network
    set_gradient_checkpointing(model, cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    device = next(model.parameters()).device
    opt = optimizer(params, tc.lr, device)
    network = model
    if acc:
        network, opt = acc.prepare(model, opt)
    if tc.compile:
        network = torch.compile(network)
    denoiser = build_denoiser(network, variant, sample_dim=source.sample_dim)
    schedule = denoiser.schedule
    norm = data_normalization(variant, source)
    bundle.normalization = norm
    loss_fn = DiffusionLoss(denoiser, MinSNRWeighting(variant.min_snr_gamma).bind(denoiser.param), device=device)
    lr_at = linear_warmup(tc.lr, tc.warmup_steps)
    tag_w = torch.from_numpy(TagWeighting().weights(data.tags)).float() if variant.tag_weighting else None
    batches = BucketBatches(data.bucket_of, tc.batch_size, seed=seed)
    ema = EMA(model, tc.ema_decay)
    # ε on the GPU comes from a generator there (saved with the checkpoint); on the CPU from the data one
    noise_gen = torch.Generator(device).manual_seed(seed + rank) if device.type != "cpu" else None
    consumed = {"rng": gen.get_state()}  # the data generator after the last micro-batch the step used
    state = TrainingState(model, ema, opt, gen, variant_hash=variant.config_hash(), write_model=bundle.save_config,
                          generator_state=lambda: consumed["rng"], noise_generator=noise_gen)
    meta = {"model_kind": cfg.model.kind, "variant": to_dict(variant), "variant_hash": variant.config_hash(),
            "schedule_scale": schedule.scale, "resolution": cfg.data.resolution, "sample_dim": source.sample_dim}
    tracker = tracker if main else None
    if tracker:
        tracker.log_params({"variant.hash": variant.config_hash(), "schedule.scale": schedule.scale,
                            "schedule.sigma_max_sdxl": variant.top_sigma, "train.world_size": world,
                            "train.device": str(device), "model.params": sum(p.numel() for p in params)})
    start = state.load_latest(out_dir) if resume else 0
    consumed["rng"] = gen.get_state()
    if start:
        log.info("resuming %s from step %d", variant.name, start)
        if tracker:
            tracker.set_tags({"nai3.resumed_from_step": start})
    if resume and state.fallbacks and tracker:
        tracker.set_tags({"nai3.resume_fallback": "; ".join(state.fallbacks)[:5000]})

    spec = FeedSpec(source, norm.apply if norm is not None else None, tc.tag_dropout, loss_fn.draw, tag_w,
                    noise_on_host=noise_gen is None, pin=device.type == "cuda")
    feed = Feed(spec, batches.batches(rank, world, skip=start * tc.grad_accum), gen, prefetch=PREFETCH)
    writer = CheckpointWriter(out_dir, tc.keep_checkpoints, on_written=on_checkpoint if main else None)
    health = StepHealth(device)

    def refuse_if_diverged() -> None:
        failure = health.first_failure()
        if failure:
            writer.wait()
            raise TrainingDiverged(f"variant {variant.name}: non-finite {failure[0]} at step {failure[1]}",
                                   latest_step_checkpoint(out_dir))

    bins = SigmaBinLoss()
    t_start = time.perf_counter()
    loss_val = float("nan")
    bar = progress_bar(range(start, tc.steps), desc=f"train {variant.name}", enabled=progress and main,
                       initial=start, total=tc.steps)
    try:
        for step in bar:
            lr = lr_at(step)
            for g in opt.param_groups:
                g["lr"] = lr
            opt.zero_grad(set_to_none=True)
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            for micro in range(tc.grad_accum):
                b = next(feed)
                consumed["rng"] = b.rng_after
                out = loss_fn.compute(b.x0, b.cond, b.sigma, b.eps, noise_gen)
                weight = out.weight if b.tag_weight is None else out.weight * b.tag_weight.to(device, non_blocking=True)
                loss = (weight * out.per_sample_mse).mean()
                health.watch("loss", loss, step)
                if acc and micro < tc.grad_accum - 1:
                    with acc.no_sync(network):
                        (loss / tc.grad_accum).backward()
                else:
                    (loss / tc.grad_accum).backward()
                loss_sum += loss.detach()
                bins.add(schedule.to_sdxl(out.sigma), out.per_sample_mse.detach())
            grad_norm = torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
            health.watch("gradient norm", grad_norm, step)
            writer.hold_updates()  # a checkpoint being copied off the weights finishes first
            opt.step()
            writer.hold_ema()
            ema.update(model, step)
            logging = (step + 1) % tc.log_every == 0 or step + 1 == tc.steps
            saving = main and ((step + 1) % tc.checkpoint_every == 0 or step + 1 == tc.steps)
            if logging or saving:  # the only host reads of the step: a diverged run is refused here
                refuse_if_diverged()
            if logging:
                loss_val = float(loss_sum) / tc.grad_accum
                elapsed = time.perf_counter() - t_start
                metrics = {"train/loss": loss_val, "train/lr": lr, "train/grad_norm": float(grad_norm),
                           "train/img_per_s": (step + 1 - start) * tc.batch_size * tc.grad_accum * world / elapsed,
                           "train/peak_mem_mb": peak_memory_mb()}
                metrics.update({f"train/loss_sigma_bin/{k}": v for k, v in bins.means().items()})
                bins.reset()
                bar.set_postfix(loss=f"{loss_val:.4f}")
                if tracker:
                    tracker.log_metrics(metrics, step=step + 1)
            if saving:
                state.save_async(writer, step + 1, meta)
            if on_step:
                on_step(step, {"idx": b.idx, "sigma": out.sigma, "per_sample": out.per_sample_mse.detach(),
                               "weight": weight.detach(), "loss": loss.detach()})
    except BaseException:
        writer.settle()  # a checkpoint being written completes, so the error's last checkpoint is whole
        raise
    finally:
        feed.close()
    writer.wait()
    refuse_if_diverged()
    elapsed = time.perf_counter() - t_start
    ckpt = Path(out_dir) / "checkpoint"
    if main:
        save_checkpoint(ckpt, model, ema.state_dict(), {**meta, "step": tc.steps}, write_extra=bundle.save_config)
    if acc:
        acc.wait_for_everyone()
    return TrainResult(checkpoint=ckpt, final_loss=loss_val,
                       img_per_s=(tc.steps - start) * tc.batch_size * tc.grad_accum * world / max(elapsed, 1e-9),
                       steps=tc.steps, resumed_from=start)
