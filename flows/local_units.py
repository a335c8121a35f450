"""Independent (variant, seed) units in parallel processes on one machine, through Prefect's own
``ProcessPoolTaskRunner``.

A plain ``nai3 ablation`` (no Prefect workers) used to train and evaluate its units one after
another in one process. On a 2-core box two one-thread processes beat one two-thread process by
≈ 1.5× (``bench/local_units.py``): the tiny model's ops are too small to keep two threads busy, and
evaluation's Python loop uses one core at best. Each unit here trains and then evaluates its
(variant, seed) in a spawned worker process; the units' exactly-once locks and run keys are the
same as in a sequential run (``flows/pipeline.py``), so a unit another process already finished is
reused and a crashed one resumes from its checkpoint. A unit that fails is reported by name after
the others finish, like a fanned-out child (``flows/fanout.py``).

Layout: as many workers as there are units, cores (over the threads each needs) and memory allow;
the cores are split evenly between them. ``--units 1`` (or ``NAI3_UNITS=1``) keeps the old in-process
sequential run.

Order: longest unit first (``longest_first``), so the night does not end on one long unit while the
other cores idle. A pool hands the next unit to the first free worker; submitted in the replicas'
order, the smoke night's two ZTSNR units (which also run the σ = ∞ probes: 117 s of evaluation
against 55 s) landed on one worker, the last one evaluating alone for two minutes.
"""
from __future__ import annotations

import math
import os
import statistics
from dataclasses import dataclass

from nai3eval.record import Record
from nai3train.config import AblationConfig
from nai3train.data import PreparedData
from nai3train.ops.memory import available_memory
from nai3train.ops.run import TrainedVariant
from nai3train.ops.threads import torch_threads

from .fanout import FanOutFailed, Unit
from .pipeline import TaggerRef, Workspace

ENV = "NAI3_UNITS"
UNIT_ENV = "NAI3_UNIT"  # set in each worker: its progress lines carry the unit's label
LOCAL_ENV = "NAI3_LOCAL_UNIT"  # set in each worker: its locks are this machine's (flows/locks.py)
# a tiny-model unit's peak resident memory (torch, MLflow, the data and the model): 1.1 GiB measured
# on the paper config; the margin covers evaluation's sample grids
TINY_UNIT_BYTES = 2 << 30


@dataclass(frozen=True)
class Layout:
    """How the night's units run on this machine: ``workers`` processes of ``threads`` threads."""

    workers: int
    threads: int
    why: str

    @property
    def parallel(self) -> bool:
        return self.workers > 1

    def line(self) -> str:
        if not self.parallel:
            return f"units run one after another in this process ({self.why})"
        return f"units run {self.workers} at a time, {self.threads} thread(s) each ({self.why})"


def requested_units(value: int | None) -> int | None:
    """``--units`` if given, else ``$NAI3_UNITS``, else None (choose from the machine)."""
    if value is not None:
        return value
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{ENV}={raw!r} must be a positive whole number of parallel units (1: one after another)")
    return int(raw)


def layout(cfg: AblationConfig, units: int, requested: int | None = None, cores: int | None = None,
           memory: int | None = None) -> Layout:
    """The workers and threads for ``units`` units of ``cfg`` on this machine (module docstring)."""
    cores = cores or usable_cores()
    if requested == 1 or units <= 1:
        return Layout(1, 0, "asked for one at a time" if requested == 1 else "one unit")
    if cfg.model.kind != "tiny":
        return Layout(1, 0, f"a {cfg.model.kind} unit needs the machine to itself")
    if _cuda():
        return Layout(1, 0, "a GPU is present: units share it one at a time")
    fixed = torch_threads(cfg.train.threads)  # the config's or the environment's, else 0: split the cores
    fit_cores = max(1, cores // (fixed or 1))
    memory = memory if memory is not None else available_memory()
    fit_memory = max(1, memory // TINY_UNIT_BYTES) if memory else units  # unknown memory: no cap from it
    workers = min(units, requested or fit_cores, fit_memory)
    if requested and requested > workers:
        why = f"{requested} asked, " + (f"{fit_memory} fit in {memory / 2**30:.1f} GiB free"
                                        if memory and fit_memory < min(requested, units) else f"{units} unit(s)")
    else:
        why = f"{cores} cores, {units} units" + (f", memory for {fit_memory}" if fit_memory < fit_cores else "")
    if workers <= 1:
        return Layout(1, 0, why)
    return Layout(workers, fixed or max(1, cores // workers), why)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: a container's or a taskset's share)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # no affinity on this OS
        return os.cpu_count() or 1


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _start_worker(api_url: str | None) -> None:
    """Each worker process's set-up: progress as plain lines, no cluster-wide locks (the file locks
    serve one machine), and the flow's Prefect API (the ephemeral one too: a worker would otherwise
    start a server of its own)."""
    os.environ["NAI3_PROGRESS"] = "lines"
    os.environ[LOCAL_ENV] = "1"
    if api_url:
        os.environ["PREFECT_API_URL"] = api_url


def enter_unit(label: str, threads: int) -> None:
    """At the start of each unit in a worker: its label and its share of the cores. Set per task,
    since Prefect applies the parent's environment (a NAI3_THREADS exported there too) before each."""
    os.environ[UNIT_ENV] = label
    os.environ["NAI3_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


def longest_first(jobs: list[tuple[Unit, AblationConfig]], measured: dict[str, float] | None = None
                  ) -> list[tuple[Unit, AblationConfig]]:
    """``jobs`` in the order to submit them: the longest expected unit first. The expectation is each
    arm's measured CPU-seconds per unit on earlier nights (``measured``, by variant name) when every
    arm has one; otherwise arms trained to σ = ∞ first, since only they also run the practical-
    infinity and count probes. Ties keep the replicas' order (Python's sort is stable)."""
    measured = measured or {}
    if all(u.variant in measured for u, _ in jobs):
        return sorted(jobs, key=lambda j: -measured[j[0].variant])

    def infinite(job: tuple[Unit, AblationConfig]) -> bool:
        return math.isinf(next(v for v in job[1].variants if v.name == job[0].variant).top_sigma)

    return sorted(jobs, key=lambda j: not infinite(j))


def measured_unit_seconds(cfg: AblationConfig, ws: Workspace, data_hash: str) -> dict[str, float]:
    """Each arm's median CPU-seconds per (arm, seed) unit so far under today's identity (``flows/cost.py``);
    arms never evaluated are left out."""
    from .cost import unit_costs

    per_arm: dict[str, list[float]] = {}
    for u in unit_costs(cfg, data_hash, ws.uri, ws.experiment_id):
        if not math.isnan(u.cpu_s):
            per_arm.setdefault(u.variant, []).append(u.cpu_s)
    return {arm: statistics.median(s) for arm, s in per_arm.items()}


def run_units(replicas: list[AblationConfig], data: PreparedData, tagger: TaggerRef, ws: Workspace,
              parent_run_id: str, force: bool, plan: Layout
              ) -> tuple[list[TrainedVariant], list[Record], FanOutFailed | None]:
    """Train and evaluate every (variant, seed) of ``replicas`` in ``plan.workers`` processes; the
    completed ones in the replicas' order, and the failure naming the rest (None if all completed)."""
    from prefect.client.orchestration import get_client
    from prefect.task_runners import ProcessPoolTaskRunner

    from .ablation import unit_task

    api_url = get_client().api_url

    jobs = [(Unit(v.name, ck.train.seed), ck) for ck in replicas for v in ck.variants]
    order = longest_first(jobs, measured_unit_seconds(replicas[0], ws, data.content_hash))
    print("units in order, longest first: " + ", ".join(u.label for u, _ in order))
    with ProcessPoolTaskRunner(max_workers=plan.workers, initializer=_start_worker,
                               initargs=(str(api_url) if api_url else None,)) as runner:
        futures = [runner.submit(unit_task, {"cfg": ck, "variant_name": u.variant, "data": data, "tagger": tagger,
                                             "ws": ws, "parent_run_id": parent_run_id, "force": force,
                                             "threads": plan.threads})
                   for u, ck in order]
        done = dict(zip([u for u, _ in order], futures))
        trained, results, failed = [], [], []
        for u, _ in jobs:  # collected in the replicas' order, whatever order they ran in
            fut = done[u]
            try:
                t, r = fut.result()
            except Exception as e:  # reported with the others once every unit is final
                failed.append(f"{u.label}: {type(e).__name__}: {e}")
                continue
            trained.append(t)
            results.append(r)
    failure = FanOutFailed(f"{len(failed)} of {len(jobs)} (variant, seed) units failed: " + "; ".join(failed)) \
        if failed else None
    return trained, results, failure
