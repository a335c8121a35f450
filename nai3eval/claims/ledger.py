"""The decision ledger: every look taken, so α is spent once and a verdict is never decided again.

α is spent over the looks actually taken (``sequential``); that only holds if every look is
recorded and none is taken twice. So each look a report takes — at K training seeds, on the first
K — is written as one entry: the verdict (including *not measured* with its reason and *futile*),
the level it was taken at, the repeated confidence interval at that level, and whether it ends the
claim (``final``). A later report reads the claim's looks, spends α only at new K, and shows a
final verdict as taken, never deciding it again.

An entry belongs to one estimand, not to a claim id: it is keyed by (claim id, the sha256 of the
claim's block in the spec, the deciding config's hash, the arms' recipe key) — ``identity``. An
edited block, another deciding config or another recipe starts its own looks; entries of the same
id under another block are shown as another estimand's, never under the new title. The ledger is
scoped to the recipe and the spec, not to an MLflow experiment: it lives in the store's own ledger
experiment (``LEDGER_EXPERIMENT``), one experiment tag per look, written only where absent.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass

from . import statistics as A

log = logging.getLogger(__name__)
PREFIX = "nai3.ledger."
LEDGER_EXPERIMENT = "nai3-claims-ledger"
ENDS_A_CLAIM = (A.SUPPORTED, A.CONTRADICTED, A.EQUIVALENT, A.FUTILE)


def identity(claim: str, block: str, config: str, recipe: str) -> str:
    """The estimand's key: (claim id, block sha256, deciding config hash, recipe key)."""
    return hashlib.sha256("\n".join((claim, block, config, recipe)).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Entry:
    claim: str
    block: str  # sha256 of the claim's block (``ClaimsSpec.block_sha256``)
    config: str  # the deciding config's hash
    recipe: str  # the arms' recipe key
    look: int  # K: the verdict used the first K training seeds
    verdict: str  # supported, contradicted, equivalent, futile, inconclusive or not measured
    final: bool  # ends the claim: never decided again
    level: float | None  # the one-sided (Holm) level the look was taken at
    effect: float | None
    rci: tuple[float | None, float | None]  # the repeated confidence interval at ``level``
    ci95: tuple[float | None, float | None]
    reason: str
    title: str
    spec_version: int
    spec_sha256: str
    decided_at: str  # UTC, ISO 8601
    run_id: str = ""  # the parent run whose report took it
    robust: bool | None = None  # the verdict survives dropping any one seed (None: nothing to check)

    @property
    def ident(self) -> str:
        return identity(self.claim, self.block, self.config, self.recipe)

    @property
    def key(self) -> str:
        """Its name in the ledger (and, after ``PREFIX``, its experiment tag)."""
        return f"{self.claim}.{self.ident}.k{self.look}"

    @property
    def spent(self) -> bool:
        """Whether this look spent α (a look that measured nothing tested nothing)."""
        return self.verdict != A.NOT_MEASURED

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str) -> "Entry":
        d = json.loads(raw)
        return cls(**{**d, "rci": tuple(d["rci"]), "ci95": tuple(d["ci95"])})

    def describe(self) -> str:
        run = f" (run {self.run_id[:8]})" if self.run_id else ""
        at = f"look K = {self.look} under spec v{self.spec_version} on {self.decided_at[:10]}{run}"
        return f"decided at the {at}; not decided again" if self.final else f"the {at} left it open"


Ledger = dict[str, Entry]


def looks_of(ledger: Ledger, ident: str) -> list[Entry]:
    """The looks taken for one estimand, by K."""
    return sorted((e for e in ledger.values() if e.ident == ident), key=lambda e: e.look)


def other_estimands(ledger: Ledger, claim: str, ident: str) -> list[Entry]:
    """Entries under the same claim id that belong to another estimand (an edited block, another
    deciding config or recipe): shown as such, never as this claim's."""
    return sorted((e for e in ledger.values() if e.claim == claim and e.ident != ident), key=lambda e: e.decided_at)


def utc_iso(seconds: float | None = None) -> str:
    """A UTC time as ISO 8601 (now, by default): the ledger's and the registry's timestamps, which
    compare as strings."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def read_ledger(client, experiment_id: str) -> Ledger:
    """The ledger experiment's entries; one that cannot be read (edited by hand, or written by an
    older version) is skipped with a warning, never allowed to stop every report."""
    out: Ledger = {}
    for k, v in client.get_experiment(experiment_id).tags.items():
        if k.startswith(PREFIX):
            try:
                e = Entry.from_json(v)
                out[e.key] = e
            except (ValueError, TypeError, KeyError) as err:
                log.warning("ledger tag %s of experiment %s is unreadable (%s): skipped", k, experiment_id, err)
    return out


def ledger_tags(entries: list[Entry]) -> dict[str, str]:
    """Entries as experiment tags, to be written only where absent (``only_new``): a look already
    in the ledger keeps its first entry (a concurrent report that took it too never overwrites it)."""
    return {PREFIX + e.key: e.to_json() for e in entries}
