"""The decision ledger: a verdict taken at a look is never decided again.

Looks are planned (the spec's ``looks``) and α is spent across them (``sequential``). That only
holds if a verdict, once taken, stands: re-deciding a claim at every report would spend α again at
each one. So a recipe-level verdict that ends a claim — supported, contradicted or equivalent at
any look, any verdict at the last look — is written to the ledger with the K, the spec version and
sha256 it was taken under, and the run that took it. Later reports show it as taken (with the
current estimate beside it, for information) and decide only the claims still open. A spec
version registered later governs only the looks taken after it; a claim whose estimand or rule
changes is a new claim (a new id), decided at its own looks.

A look that leaves a claim open (inconclusive before the last look) is recorded too, as an open
entry for that claim and K (``<id>.look<K>``): a report run again at the same K — after new
evaluations, or on other data — shows the recorded outcome instead of taking the look a second
time; the claim is decided again only at the next look.

The ledger lives in the MLflow experiment (one experiment tag per claim: ``nai3.ledger.<id>``, a
JSON entry) and is copied into every ``report.json``.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass

from . import statistics as A

log = logging.getLogger(__name__)
PREFIX = "nai3.ledger."
ENDS_A_CLAIM = (A.SUPPORTED, A.CONTRADICTED, A.EQUIVALENT)


@dataclass(frozen=True)
class Entry:
    claim: str
    verdict: str
    look: int  # the K the verdict was taken at
    spec_version: int
    spec_sha256: str
    effect: float | None
    ci95: tuple[float | None, float | None]
    decided_at: str  # UTC, ISO 8601
    run_id: str = ""  # the parent run whose report took it
    open: bool = False  # the look left the claim open: it is decided again at the next look only

    @property
    def key(self) -> str:
        """Its name in the ledger (and, after ``PREFIX``, its experiment tag)."""
        return open_key(self.claim, self.look) if self.open else self.claim

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str) -> "Entry":
        d = json.loads(raw)
        return cls(**{**d, "ci95": tuple(d["ci95"])})

    def describe(self) -> str:
        run = f" (run {self.run_id[:8]})" if self.run_id else ""
        if self.open:
            return (f"left open by the look K = {self.look} under spec v{self.spec_version} on {self.decided_at[:10]}"
                    f"{run}; decided again at the next look only")
        return f"decided at the look K = {self.look} under spec v{self.spec_version} on {self.decided_at[:10]}{run}; " \
               "not decided again"


def open_key(claim: str, look: int) -> str:
    """The ledger's name for a look that left ``claim`` open (tag names allow no '@')."""
    return f"{claim}.look{look}"


Ledger = dict[str, Entry]


def utc_iso(seconds: float | None = None) -> str:
    """A UTC time as ISO 8601 (now, by default): the ledger's and the registry's timestamps, which
    compare as strings."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def is_final(verdict: str, look: int | None, looks: tuple[int, ...]) -> bool:
    """A verdict that ends its claim: a recipe-level one that crossed a boundary, or any at the last look."""
    return look is not None and (verdict in ENDS_A_CLAIM or (look == looks[-1] and verdict == A.INCONCLUSIVE))


def entry_for(result, spec, decided_at: str, run_id: str = "", open: bool = False) -> Entry:
    """The ledger entry of a claim decided (or, ``open``, left open) at ``decided_at`` (a
    ``ClaimResult``): its effect as ``report.json`` has it."""
    effect = result.to_dict()["effect"]
    return Entry(result.id, result.decision.verdict, result.look, spec.version, spec.sha256, effect["value"],
                 tuple(effect["ci95"]), decided_at, run_id, open)


def read_ledger(client, experiment_id: str) -> Ledger:
    """The experiment's entries; one that cannot be read (edited by hand) is skipped with a warning,
    never allowed to stop every report."""
    out: Ledger = {}
    for k, v in client.get_experiment(experiment_id).tags.items():
        if k.startswith(PREFIX):
            try:
                out[k[len(PREFIX):]] = Entry.from_json(v)
            except (ValueError, TypeError, KeyError) as e:
                log.warning("ledger tag %s of experiment %s is unreadable (%s): skipped", k, experiment_id, e)
    return out


def ledger_tags(entries: list[Entry]) -> dict[str, str]:
    """Entries as experiment tags, to be written only where absent (``only_new``): a claim already
    in the ledger keeps its first entry (a concurrent report that decided it too never overwrites it)."""
    return {PREFIX + e.key: e.to_json() for e in entries}
