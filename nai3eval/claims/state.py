"""The experiment's claims state behind one object: the registered spec, the ledger of looks, and
the order in which they are read and written.

Registering a spec version and a report's read-decide-write of the ledger are read-then-write on
MLflow experiment tags (MLflow has no compare-and-set), so both run under the experiment's claims
lock. A report must neither wait for a tracking server that does not answer nor forget a verdict
it once read: the ledger is copied to the work folder at every read and that copy stands in while
MLflow is away. The caller supplies the lock, the client, what counts as a passing outage and
where the ledger's new entries go when MLflow is away (its journal); this module holds the policy.
"""
from __future__ import annotations

import json
import logging
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .ledger import Entry, Ledger, ledger_tags, read_ledger, utc_iso
from .registry import pin
from .spec import ClaimsSpec, load_claims_spec

log = logging.getLogger("nai3.claims")

_PINNED: set[tuple[str, str, str]] = set()  # (store, experiment, sha256) this process pinned or checked


@dataclass
class ClaimsState:
    """One experiment's claims state. ``client``: an MLflow client of the store ``store``;
    ``copy``: where the last ledger read is kept; ``lock()``: the experiment's claims lock;
    ``transient(e)``: whether ``e`` means the server is away for now; ``journal(tags)``: writes
    ledger tags through the run's journal (delivered when the server is back)."""

    client: object
    store: str
    experiment_id: str
    copy: Path
    lock: Callable[[], AbstractContextManager]
    transient: Callable[[Exception], bool]
    journal: Callable[[dict[str, str]], None] | None = None
    spec_file: str | None = None
    _spec: ClaimsSpec | None = field(default=None, init=False)

    def pin(self) -> ClaimsSpec:
        """The claims spec, pinned in the experiment (``registry.pin``): refused when its file
        differs from the one registered under its version. If MLflow is away, the check this
        process made earlier stands (and the ledger copy it made)."""
        with self.lock():
            spec = self._pin()
            self.ledger()  # a copy in the work folder, for a report taken while MLflow is away
            return spec

    def _pin(self) -> ClaimsSpec:
        spec = load_claims_spec(self.spec_file)
        mark = (self.store, self.experiment_id, spec.sha256)
        try:
            if pin(self.client, self.experiment_id, spec):
                log.info("claims spec version %d registered in the experiment (sha256 %s)", spec.version, spec.sha256)
        except Exception as e:
            if not (self.transient(e) and mark in _PINNED):
                raise
            log.warning("MLflow does not answer (%s): the claims spec is the one checked at the start of this run",
                        str(e)[:200])
        _PINNED.add(mark)
        self._spec = spec
        return spec

    def ledger(self) -> Ledger:
        """The experiment's ledger (and a fresh copy of it); while MLflow does not answer, the copy
        of the last read. Without a copy an outage is an error: a report without the ledger could
        decide a claim again."""
        try:
            ledger = read_ledger(self.client, self.experiment_id)
        except Exception as e:
            if not (self.transient(e) and self.copy.is_file()):
                raise
            log.warning("MLflow does not answer (%s): the claims ledger is the copy read at %s", str(e)[:200],
                        time.strftime("%H:%M:%S", time.localtime(self.copy.stat().st_mtime)))
            return {k: Entry.from_json(v) for k, v in json.loads(self.copy.read_text()).items()}
        from nai3train.ops.atomic import atomic_write

        atomic_write(self.copy, json.dumps({k: e.to_json() for k, e in ledger.items()}))
        return ledger

    def ledger_as_of(self, ended_s: float) -> Ledger:
        """The ledger as it stood at ``ended_s`` (seconds): what a past run decided, and the looks
        before it — for re-rendering that run's report."""
        ended = utc_iso(ended_s + 1)
        return {k: e for k, e in read_ledger(self.client, self.experiment_id).items() if e.decided_at <= ended}

    def decide(self, decide: Callable[[ClaimsSpec, Ledger], tuple[object, list[Entry]]], record: bool = True):
        """Read the spec and the ledger, ``decide(spec, ledger)`` → (outcome, new entries), and
        write the new entries — with no other report between the read and the write. ``record``:
        whether this decision enters the ledger (a researcher's own model decides nothing there)."""
        with self.lock():
            spec = self._pin()
            outcome, entries = decide(spec, self.ledger() if record else {})
            if record and entries:
                self._write(ledger_tags(entries))
        return outcome

    def _write(self, tags: dict[str, str]) -> None:
        from nai3train.ops.tracking import Tracker

        try:
            Tracker(self.store, "").set_experiment_tags(self.experiment_id, tags, only_new=True)
        except Exception as e:
            if not (self.transient(e) and self.journal is not None):
                raise
            log.warning("MLflow does not answer (%s): the ledger entries wait in the journal", str(e)[:200])
            self.journal(tags)

    def spec(self) -> ClaimsSpec:
        """Today's spec file, as loaded (not pinned: for re-rendering a stored run's report)."""
        if self._spec is None:
            self._spec = load_claims_spec(self.spec_file)
        return self._spec

    def spec_warning(self, run_tags: dict[str, str]) -> str | None:
        """A warning when a stored run was decided under another spec file than today's."""
        spec = self.spec()
        stored = run_tags.get("nai3.claims_spec_sha256", spec.sha256)
        if stored == spec.sha256:
            return None
        return (f"the run was decided under claims spec sha256 {stored[:16]}…, this file is {spec.sha256[:16]}…: "
                "the verdicts below follow this file")
