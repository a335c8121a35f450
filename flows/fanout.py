"""Fan-out on Prefect's own machinery: one child flow run per (variant, seed) of the nightly,
submitted to the ``nai3-variant/train-eval`` deployment with ``run_deployment(..., timeout=0)`` so
whichever worker is free runs it, on whichever machine; the parent waits for all of them.

* A child that *fails* (an error in training or evaluation) is reported, never retried here: the
  same code on the same data would fail again. The parent waits for every other child before it
  fails, naming each failed child, its flow run and its state message.
* A child that *crashes* (its worker or machine died: Prefect marks it Crashed, for a killed
  machine through the heartbeat automation below) is submitted again, up to ``attempts`` times in
  all; the new run takes over the run key's lock once the dead holder's lease lapses and resumes
  from the checkpoint in the shared work folder.
* Heartbeats: the ``train-eval`` deployment sets ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` for its
  runs, and :func:`ensure_zombie_automation` creates (once per server) the automation that marks a
  running flow run Crashed when its heartbeats stop, as Prefect documents for self-hosted servers.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from .server import patiently

VARIANT_DEPLOYMENT = "nai3-variant/train-eval"
UNIT_TAG = "nai3-unit"  # on every (variant, seed) flow run: the zombie automation watches these only
HEARTBEAT_S = 30  # the runs' heartbeat period (Prefect's minimum); prefect.yaml sets it for train-eval
ZOMBIE_AUTOMATION = "nai3: crash flow runs whose heartbeats stopped"

log = logging.getLogger("nai3.fanout")


class FanOutFailed(RuntimeError):
    """Some children did not complete; the message names each one."""


@dataclass(frozen=True)
class Unit:
    """One (variant, seed): the unit of work and of replication."""

    variant: str
    seed: int

    @property
    def label(self) -> str:
        return f"{self.variant}@seed{self.seed}"


@dataclass
class Child:
    unit: Unit
    parameters: dict[str, Any]
    flow_run_ids: list[str] = field(default_factory=list)
    state: str = "PENDING"
    message: str = ""
    name: str = ""

    @property
    def flow_run_id(self) -> str:
        return self.flow_run_ids[-1]


def ensure_zombie_automation(within_s: float = 3 * HEARTBEAT_S) -> None:
    """The automation that marks a (variant, seed) flow run Crashed when no heartbeat came for
    ``within_s`` and it did not finish: without it a run on a dead machine stays Running and its
    parent waits forever."""
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    try:
        Automation.read(name=ZOMBIE_AUTOMATION)
        return
    except ValueError:
        pass
    Automation(
        name=ZOMBIE_AUTOMATION,
        description="Created by nai3 (flows/fanout.py): a flow run whose heartbeats stopped is marked Crashed, so a "
                    "nightly's parent resubmits it to a live worker.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
                    "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed"},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            # only nai3's unit runs, whose heartbeat period nai3 sets: other flows on a shared server
            # keep Prefect's default period (180 s) and must not be crashed by a 90 s window
            match_related=ResourceSpecification({"prefect.resource.id": f"prefect.tag.{UNIT_TAG}",
                                                 "prefect.resource.role": "tag"}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=within_s),
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED, name="Crashed",
                                    message="no heartbeat: its worker or machine died")],
    ).create()


def submit(child: Child, deployment: str = VARIANT_DEPLOYMENT) -> None:
    """One more flow run of ``child`` on the work pool (linked to the current flow as a subflow)."""
    from prefect.deployments import run_deployment
    from prefect.runtime import flow_run

    attempt = len(child.flow_run_ids) + 1
    run = run_deployment(deployment, parameters=child.parameters, timeout=0,
                         flow_run_name=f"{child.unit.variant}-seed{child.unit.seed}"
                                       + (f"-attempt{attempt}" if attempt > 1 else ""),
                         tags=[UNIT_TAG, f"variant:{child.unit.variant}", f"seed:{child.unit.seed}"],
                         idempotency_key=f"{flow_run.id}:{child.unit.label}:{attempt}" if flow_run.id else None)
    child.flow_run_ids.append(str(run.id))
    child.name = run.name
    child.state = "SCHEDULED"


def wait(children: list[Child], attempts: int = 2, poll_s: float = 5.0, deployment: str = VARIANT_DEPLOYMENT,
         echo=print, idle_hint_s: float = 300.0) -> None:
    """Until every child is final; crashed ones are resubmitted (``attempts`` runs in all). Raises
    :class:`FanOutFailed` naming every child that did not complete."""
    from prefect import get_client

    final = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}
    pending = list(children)
    last, changed, hinted = "", time.time(), False
    with get_client(sync_client=True) as client:
        while pending:
            states = patiently(lambda: {c.flow_run_id: client.read_flow_run(c.flow_run_id) for c in pending},
                               "reading the (variant, seed) flow runs (they go on meanwhile)", say=echo)
            for child in list(pending):
                fr = states[child.flow_run_id]
                child.state = fr.state.type.value if fr.state else "PENDING"
                child.message = (fr.state.message or "") if fr.state else ""
                if child.state == "CRASHED" and len(child.flow_run_ids) < attempts:
                    echo(f"{child.unit.label}: flow run {child.name} crashed ({child.message}); submitting it again")
                    submit(child, deployment)
                    continue
                if child.state in final:
                    pending.remove(child)
            counts: dict[str, int] = {}
            for c in children:
                counts[c.state] = counts.get(c.state, 0) + 1
            line = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
            if line != last:
                echo(f"children: {line}")
                last, changed = line, time.time()
            elif not hinted and time.time() - changed > idle_hint_s and all(
                    c.state in ("SCHEDULED", "PENDING") for c in pending):
                echo(f"no (variant, seed) flow run has started for {idle_hint_s:.0f} s: is a worker polling the pool "
                     f"of {deployment}? (`prefect worker start --pool nai3-process --limit 1`)")
                hinted = True
            if pending:
                time.sleep(poll_s)
    failed = [c for c in children if c.state != "COMPLETED"]
    if failed:
        raise FanOutFailed(f"{len(failed)} of {len(children)} (variant, seed) flow runs did not complete:\n" + "\n".join(
            f"  {c.unit.label}: flow run '{c.name}' ({c.flow_run_id}) {c.state}: {c.message[:300]}" for c in failed))
