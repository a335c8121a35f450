"""Which trained seeds the evidence stands on: per arm, the seeds under each training identity.

Seeds trained under different training identities are never pooled (``flows/runs.py``): after an
upgrade that can change trained weights the count of replicates K starts again. The report says
so, per arm, and names what changed, so that a reader never mistakes a restart for lost data.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .columns import Table


@dataclass(frozen=True)
class IdentitySeeds:
    """The FINISHED training seeds of one arm under one training identity."""

    arm: str
    identity: str  # the digest; "unrecorded" for runs made before identities were recorded
    seeds: tuple[int, ...]
    versions: str  # "torch 2.9.1, diffusers 0.35.2"
    current: bool  # today's identity: the seeds this report pools


@dataclass(frozen=True)
class Provenance:
    rows: tuple[IdentitySeeds, ...]
    current: str  # today's training identity
    changes: dict[str, tuple[str, ...]] = field(default_factory=dict)  # older identity → what differs today

    def restarts(self) -> list[str]:
        """One sentence per arm whose seeds under an older identity are not pooled with today's."""
        out = []
        for arm in dict.fromkeys(r.arm for r in self.rows):
            now = sum(len(r.seeds) for r in self.rows if r.arm == arm and r.current)
            for r in self.rows:
                if r.arm != arm or r.current:
                    continue
                changed = self.changes.get(r.identity)
                why = ("; changed: " + ", ".join(changed[:8]) + (f" and {len(changed) - 8} more" if len(changed) > 8
                                                                  else "")) if changed else \
                    ("; made before identities were recorded" if r.identity == "unrecorded" else "")
                out.append(f"K restarts for {arm}: {len(r.seeds)} seed(s) under identity {r.identity} are not pooled "
                           f"with {now} under {self.current}{why}")
        return out

    def table(self) -> Table:
        return Table(["arm", "training identity", "seeds", "libraries", "pooled here"],
                     [[r.arm, r.identity, ", ".join(map(str, r.seeds)) or "—", r.versions, "yes" if r.current else "no"]
                      for r in self.rows])

    def tags(self) -> dict[str, str]:
        """Per arm, ``identity: seeds`` for each identity (the parent run's ``nai3.seeds.<arm>``)."""
        out: dict[str, list[str]] = {}
        for r in self.rows:
            out.setdefault(r.arm, []).append(f"{r.identity}{'*' if r.current else ''}: "
                                             f"{','.join(map(str, r.seeds))} ({r.versions})")
        return {f"nai3.seeds.{arm}": " | ".join(v)[:5000] for arm, v in out.items()}

    def to_dict(self) -> dict:
        return {"current": self.current, "rows": [r.__dict__ for r in self.rows],
                "changes": {k: list(v) for k, v in self.changes.items()}}
