"""What a decision costs, measured where the work ran.

Per (arm, seed) unit: the wall seconds of its training (``cost/train_seconds`` on the training run;
for a run from before that metric, the run's own start and end) and of its latest evaluation
(``cost/eval_seconds``, stored on the training run beside the evaluation), each times the torch
threads it ran with (``nai3.threads``, ``nai3.eval_threads``), which is the CPU time it held. Per
claim: the CPU-hours its seeds took so far, and the expected CPU-hours still to spend before it is
decided or declared futile — the expected number of further seeds (its registered design continued
from the seeds it has, ``ClaimResult.more_seeds``) times the measured cost of a seed of its arms.
A unit two claims share counts toward each: the question is what each claim costs on its own.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from nai3train.config import AblationConfig
from nai3train.ops.run import COST_TRAIN, THREADS_TAG

from . import runs
from .pipeline import COST_EVAL, EVAL_THREADS_TAG

HOUR = 3600.0


@dataclass(frozen=True)
class UnitCost:
    """One (arm, seed) under today's training identity: seconds and threads of each stage.
    ``eval_s`` is NaN where no evaluation time was recorded; ``estimated`` names what was filled in."""

    variant: str
    seed: int
    train_s: float
    train_threads: int
    eval_s: float
    eval_threads: int
    estimated: str = ""

    @property
    def cpu_s(self) -> float:
        return self.train_s * self.train_threads + self.eval_s * self.eval_threads


def _threads(tags: dict, key: str, parent_threads: dict[str, int]) -> int:
    """A run's recorded threads; before they were recorded, its parent's unit threads, else 1."""
    raw = tags.get(key) or str(parent_threads.get(tags.get("mlflow.parentRunId", ""), 1))
    return int(raw) if raw.isdigit() and int(raw) > 0 else 1


def unit_costs(cfg: AblationConfig, data_hash: str, uri: str, experiment_id: str) -> list[UnitCost]:
    """Every finished (arm, seed) of ``cfg``'s arms under today's training identity (newest run of
    each); a missing evaluation time is the arm's median over the units that have one."""
    from mlflow.tracking import MlflowClient

    client, identity, got = MlflowClient(uri), runs.training_identity().digest, []
    parents = {p.info.run_id: int(p.data.tags.get("nai3.unit_threads", "0") or 0)
               for p in client.search_runs([experiment_id], "tags.`nai3.kind` = 'ablation'", max_results=5000)}
    for v in cfg.variants:
        seen: set[int] = set()
        for r in runs.finished_runs(uri, experiment_id, runs.recipe_key(cfg, v, data_hash)):
            tags, m = r.data.tags, r.data.metrics
            if tags.get("nai3.train_identity") != identity or not tags.get("nai3.seed", "").isdigit():
                continue
            seed = int(tags["nai3.seed"])
            if seed in seen:
                continue
            seen.add(seed)
            train_s = m.get(COST_TRAIN, (r.info.end_time - r.info.start_time) / 1000)
            got.append(UnitCost(v.name, seed, train_s, _threads(tags, THREADS_TAG, parents), m.get(COST_EVAL, math.nan),
                                _threads(tags, EVAL_THREADS_TAG, parents)))
    return _fill_evaluations(got)


def _fill_evaluations(units: list[UnitCost]) -> list[UnitCost]:
    out = []
    for u in units:
        if math.isnan(u.eval_s):
            known = [o.eval_s for o in units if o.variant == u.variant and not math.isnan(o.eval_s)]
            if known:
                u = UnitCost(u.variant, u.seed, u.train_s, u.train_threads, statistics.median(known), u.eval_threads,
                             "evaluation time: the arm's median")
        out.append(u)
    return out


@dataclass(frozen=True)
class ClaimCost:
    """One claim: its arms, seeds and verdict, the CPU-hours spent, and the expected CPU-hours to
    go (at the smallest effect of interest, at today's estimate; None: no design to continue)."""

    id: str
    role: str
    verdict: str
    arms: tuple[str, ...]
    seeds: int
    cpu_h: float
    seed_cpu_h: float
    more_seeds: tuple[float, float] | None

    @property
    def to_go_h(self) -> tuple[float, float] | None:
        if self.more_seeds is None:
            return None
        return self.more_seeds[0] * self.seed_cpu_h, self.more_seeds[1] * self.seed_cpu_h


def claim_costs(report_claims: list[dict], units: list[UnitCost]) -> list[ClaimCost]:
    """Per claim of a report.json (its ``arms``, ``per_seed``, ``more_seeds``), from ``units``."""
    by = {(u.variant, u.seed): u for u in units}
    per_arm = {v: statistics.median(u.cpu_s for u in units if u.variant == v) for v in {u.variant for u in units}}
    out = []
    for c in report_claims:
        arms = tuple(dict.fromkeys(a for a in (c.get("arms") or {}).values() if a in per_arm))
        seeds = [p["seed"] for p in c.get("per_seed", [])]
        spent = sum(by[(a, k)].cpu_s for a in arms for k in seeds if (a, k) in by)
        more = c.get("more_seeds")
        out.append(ClaimCost(c["id"], c.get("role", ""), c.get("verdict", ""), arms, len(seeds), spent / HOUR,
                             sum(per_arm[a] for a in arms) / HOUR, tuple(more) if more else None))
    return out


def stage_table(units: list[UnitCost]) -> list[dict]:
    """Per arm: units, median wall seconds of training and evaluation, threads, CPU-hours per seed."""
    rows = []
    for v in dict.fromkeys(u.variant for u in units):
        us = [u for u in units if u.variant == v]
        rows.append({"arm": v, "seeds": len(us), "train_s": statistics.median(u.train_s for u in us),
                     "eval_s": statistics.median(u.eval_s for u in us),
                     "threads": statistics.median(u.train_threads for u in us),
                     "cpu_h_per_seed": statistics.median(u.cpu_s for u in us) / HOUR,
                     "estimated": sorted({u.estimated for u in us if u.estimated})})
    return rows


def lines(stages: list[dict], claims: list[ClaimCost], report_s: float | None = None) -> list[str]:
    """The cost as plain text: per arm and stage, per claim, then the total to decide the primaries."""
    out = [f"{'arm':<14}{'seeds':>6}{'train s':>9}{'eval s':>8}{'threads':>8}{'CPU-h/seed':>11}"]
    for r in stages:
        out.append(f"{r['arm']:<14}{r['seeds']:>6}{r['train_s']:>9.0f}{r['eval_s']:>8.0f}{r['threads']:>8g}"
                   f"{r['cpu_h_per_seed']:>11.3f}" + (f"  ({'; '.join(r['estimated'])})" if r["estimated"] else ""))
    if report_s is not None:
        out.append(f"report: {report_s:.0f} s (once per night)")
    w = max([5, *(len(c.id) for c in claims)]) + 2
    out.append(f"{'claim':<{w}}{'role':<13}{'K':>3}{'CPU-h':>8}  {'to go (SESOI / estimate)':<36}verdict")
    for c in claims:
        go = c.to_go_h
        to_go = "—" if go is None else f"{go[0]:.2f} / {go[1]:.2f} h ({c.more_seeds[0]:.1f} / {c.more_seeds[1]:.1f} seeds)"
        out.append(f"{c.id:<{w}}{c.role:<13}{c.seeds:>3}{c.cpu_h:>8.2f}  {to_go:<36}{c.verdict}")
    total = until_primaries_decided(stages, claims)
    decides = any(c.role == "primary" and not c.verdict.startswith("decided in ") for c in claims)
    out.append("expected CPU-hours until every primary is decided or futile: " + (
        "— (this config decides no primary: each is decided in another)" if not decides else
        "— (an open primary has no design to continue)" if total is None else
        f"{total[0]:.2f} if each effect is its smallest of interest, {total[1]:.2f} at today's estimates"))
    return out


def metrics(stages: list[dict], claims: list[ClaimCost]) -> dict[str, float]:
    """What the nightly's parent run logs (``cost/…``): per arm, per claim; finite values only."""
    m: dict[str, float] = {}
    for r in stages:
        m[f"cost/{r['arm']}/train_seconds"] = r["train_s"]
        m[f"cost/{r['arm']}/eval_seconds"] = r["eval_s"]
        m[f"cost/{r['arm']}/cpu_hours_per_seed"] = r["cpu_h_per_seed"]
    for c in claims:
        m[f"cost/claims/{c.id}/cpu_hours"] = c.cpu_h
        if c.to_go_h is not None:
            m[f"cost/claims/{c.id}/expected_cpu_hours_to_go"] = c.to_go_h[0]
            m[f"cost/claims/{c.id}/expected_cpu_hours_to_go_at_estimate"] = c.to_go_h[1]
    total = until_primaries_decided(stages, claims)
    if total is not None:
        m["cost/primaries_cpu_hours_to_go"], m["cost/primaries_cpu_hours_to_go_at_estimate"] = total
    return {k: float(v) for k, v in m.items() if isinstance(v, (int, float)) and math.isfinite(v)}


def until_primaries_decided(stages: list[dict], claims: list[ClaimCost]) -> tuple[float, float] | None:
    """Expected CPU-hours until every primary this config decides is decided or futile: each arm
    trains as many further seeds as the open primary needing it most is expected to take (the
    nightly skips an arm only when every claim on it is decided); (at the SESOI, at today's
    estimates). None where an open primary has no design to continue, or this config decides none."""
    per_arm = {r["arm"]: r["cpu_h_per_seed"] for r in stages}
    need: dict[str, list[float]] = {}
    for c in claims:
        if c.role != "primary" or c.verdict.startswith("decided in "):  # another config's to decide
            continue
        if c.more_seeds is None:
            return None
        for a in c.arms:
            best = need.setdefault(a, [0.0, 0.0])
            best[0], best[1] = max(best[0], c.more_seeds[0]), max(best[1], c.more_seeds[1])
    if not any(c.role == "primary" and not c.verdict.startswith("decided in ") for c in claims):
        return None
    return (sum(per_arm[a] * n[0] for a, n in need.items()), sum(per_arm[a] * n[1] for a, n in need.items()))
