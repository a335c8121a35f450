"""The numerics fingerprint: what catches an edit that the identities' boundary misses.

The identities (:mod:`flows.identity`) leave out, by where it lives, the code that only moves,
logs or shows numbers. If an edit there does change numbers after all, the identity would not
move and an old result would answer new code. The fingerprint runs one arm's recipe for real — a
few deterministic training steps through the trainer (progress bar, thread settings and all) on
a tiny slice of the embedded benchmark, then a few sampler steps from the result through the one
sampling path — and keeps a handful of summary numbers.

It is recorded with every training run (``nai3.fingerprint``). A finished run is reused only when
its identity is today's *and* its fingerprint matches today's; an identity that matches with a
fingerprint that does not is the boundary being wrong, and is said loudly (:class:`BoundaryBreach`
in the tests, a warning and a retrain in a nightly). Summaries are compared with a tolerance, not
hashed: the last bits of a float sum move with thread counts and CPU kernels, a real change moves
them by orders of magnitude more.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from nai3train.config import AblationConfig, VariantConfig, stable_hash, to_dict

from .identity import all_sources_digest

STEPS = 3  # training steps: one is not enough for the optimiser's state or the EMA to matter
SAMPLER_STEPS = 2
RTOL = 1e-3


class BoundaryBreach(RuntimeError):
    """The identity says nothing that can change a number changed; the fingerprint disagrees."""


@dataclass(frozen=True)
class Fingerprint:
    """Losses of each training step, three projections of the raw weights, and three of the
    sampled pixels (mean, mean square, a fixed random direction)."""

    values: tuple[float, ...]

    def matches(self, other: "Fingerprint", rtol: float = RTOL) -> bool:
        return len(self.values) == len(other.values) and all(
            (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=rtol, abs_tol=rtol * 1e-3)
            for a, b in zip(self.values, other.values))

    @property
    def text(self) -> str:
        """The MLflow tag value: six significant digits each (enough for ``matches``)."""
        return json.dumps([float(f"{v:.6g}") for v in self.values])

    @classmethod
    def parse(cls, text: str | None) -> "Fingerprint | None":
        try:
            return cls(tuple(float(v) for v in json.loads(text))) if text else None
        except (ValueError, TypeError):
            return None


def recipe_part(cfg: AblationConfig, variant: VariantConfig) -> dict:
    """What of a config the fingerprint runs: the arm's variant and the training hyper-parameters
    that shape a step (the model and the data are always the tiny benchmark's)."""
    t = cfg.train
    return {"variant": to_dict(variant), "lr": t.lr, "ema_decay": t.ema_decay, "tag_dropout": t.tag_dropout,
            "grad_clip": t.grad_clip, "warmup_steps": t.warmup_steps}


def fingerprint(cfg: AblationConfig, variant: VariantConfig, cache_dir: Path | None = None) -> Fingerprint:
    """The fingerprint of this arm's recipe under today's code: cached (in memory, and as a file
    under ``cache_dir``) by the recipe and every byte of the two packages' sources."""
    key = stable_hash({"recipe": recipe_part(cfg, variant), "sources": all_sources_digest(),
                       "torch": torch.__version__})[:16]
    cached = cache_dir / f"{key}.json" if cache_dir else None
    if cached is not None and cached.is_file():
        found = Fingerprint.parse(cached.read_text())
        if found is not None:
            return found
    fp = _compute(key, cfg, variant)
    if cached is not None:
        from nai3train.ops.atomic import atomic_write

        cached.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cached, fp.text)
    return fp


_COMPUTED: dict[str, Fingerprint] = {}


def _compute(key: str, cfg: AblationConfig, variant: VariantConfig) -> Fingerprint:
    if key not in _COMPUTED:
        _COMPUTED[key] = _run(cfg, variant)
    return _COMPUTED[key]


def tiny_config(cfg: AblationConfig, variant: VariantConfig) -> AblationConfig:
    """The fingerprint's own run: the arm's recipe on the tiny model and a 16-image benchmark."""
    from nai3train.config import from_dict

    d = to_dict(cfg)
    d["data"] = {"kind": "benchmark", "train_size": 16, "eval_size": 8, "resolution": 16, "seed": 0}
    d["model"] = {"kind": "tiny", "block_out_channels": [8, 16], "cross_attention_dim": 8, "max_tags": 8}
    d["train"] = {**d["train"], "steps": STEPS, "batch_size": 4, "grad_accum": 1, "seed": 0, "threads": 1,
                  "log_every": 1, "checkpoint_every": STEPS, "checkpoint_store": "local",
                  "warmup_steps": 0}  # every step moves the weights
    d["variants"] = [to_dict(variant)]
    return from_dict(AblationConfig, d, "config")


def _run(cfg: AblationConfig, variant: VariantConfig) -> Fingerprint:
    from nai3eval.checkpoint import load_checkpoint
    from nai3eval.prompts import make_prompt_set
    from nai3eval.sampling import generate
    from nai3eval.setting import Setting
    from nai3train.data import BucketedDataset, Vocabulary, default_buckets, scan_folder, synthesize
    from nai3train.trainer import train_variant

    tiny = tiny_config(cfg, variant)
    losses: list[float] = []
    threads = torch.get_num_threads()
    state = torch.random.get_rng_state()
    try:
        with tempfile.TemporaryDirectory(prefix="nai3-fingerprint-") as tmp, \
                contextlib.redirect_stderr(io.StringIO()), _one_process():
            synthesize(Path(tmp) / "data", 16, 8, 16, seed=0)
            data = BucketedDataset.from_scan(scan_folder(Path(tmp) / "data" / "train"), default_buckets(16))
            result = train_variant(tiny, variant, data, Vocabulary.build(data.tags), Path(tmp) / "run",
                                   tracker=_Notes(losses), progress=True)
            raw = load_checkpoint(result.checkpoint, ema=False, device="cpu").bundle.network
            weights = torch.cat([p.detach().flatten().double() for p in raw.parameters()])
            ck = load_checkpoint(result.checkpoint, device="cpu")  # the EMA weights, as evaluation samples them
            ps = make_prompt_set(data.tags[:4], 2, 1, ck.sample_shape, seed=0)
            start = 20000.0 if variant.ztsnr else 14.6
            x = generate(ck, Setting("sweep", start, 2.0, steps=SAMPLER_STEPS), ps).images.double().flatten()
    finally:
        torch.set_num_threads(threads)
        torch.random.set_rng_state(state)
    direction_w = torch.randn(weights.numel(), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    direction_x = torch.randn(x.numel(), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    return Fingerprint(tuple(losses) + (float(weights.mean()), float(weights.pow(2).mean()),
                                        float(weights @ direction_w) / weights.numel() ** 0.5,
                                        float(x.mean()), float(x.pow(2).mean()), float(x @ direction_x) / x.numel() ** 0.5))


@contextlib.contextmanager
def _one_process():
    """Under ``accelerate launch`` rank 0 takes the fingerprint alone: the trainer must not join the
    process group for it (``WORLD_SIZE`` is what it reads)."""
    import os

    saved = os.environ.get("WORLD_SIZE")
    os.environ["WORLD_SIZE"] = "1"
    try:
        yield
    finally:
        if saved is None:
            del os.environ["WORLD_SIZE"]
        else:
            os.environ["WORLD_SIZE"] = saved


class _Notes:
    """Stands in for the MLflow run: the trainer logs to it as to a real one; the loss is kept."""

    def __init__(self, losses: list[float]):
        self.losses = losses

    def log_params(self, params: dict) -> None:
        pass

    def set_tags(self, tags: dict) -> None:
        pass

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        self.losses.append(float(metrics["train/loss"]))


def check(stored: Fingerprint | None, current: Fingerprint, what: str) -> None:
    """Raise :class:`BoundaryBreach` when a result of today's identity has another fingerprint."""
    if stored is not None and not stored.matches(current):
        raise BoundaryBreach(f"{what}: the training identity is unchanged but it has another numerics fingerprint "
                             f"(stored {stored.text}, now {current.text}): an edit outside the identity "
                             "(nai3train/ops, nai3eval/reporting, flows) changes numbers — move that code "
                             'into the identity\'s side (docs/operations.md, "What invalidates what")')
