"""The nightly's plan: which arms the open claims still need (docs/operations.md, "The nightly's plan").

A night trains one more seed per arm; an arm whose every claim is decided — final in the ledger
(supported, contradicted, equivalent or futile, or taken at K_max) — or not decided by this config
needs no more seeds. Its seeds so far stay in the record and the report. Checks are not evidence:
they never keep an arm training. The plan is computed from the spec and the ledger before any
work, printed, logged on the parent run, and shown alone by ``nai3 ablation --plan``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from nai3eval.claims import ClaimsSpec
from nai3eval.claims.decide import deciding, resolve_arms
from nai3eval.claims.ledger import Ledger, identity, looks_of
from nai3train.config import AblationConfig


@dataclass(frozen=True)
class ClaimState:
    claim: str
    arms: tuple[str, ...]  # the variants of this config it reads
    verdict: str  # the final verdict, or "open" (with the last look's K), or why it is not counted
    open: bool


@dataclass(frozen=True)
class Plan:
    train: tuple[str, ...]  # variants to train the new seed of
    skip: dict[str, tuple[str, ...]] = field(default_factory=dict)  # variant → the decided claims that read it
    claims: tuple[ClaimState, ...] = ()
    seed: int | None = None

    def lines(self) -> list[str]:
        """The plan as a reader wants it: what trains, what does not and why."""
        seed = f" (seed {self.seed})" if self.seed is not None else ""
        out = [f"training {', '.join(self.train) or 'nothing'}{seed}"]
        for v, why in self.skip.items():
            out.append(f"skipping {v}: " + (f"{', '.join(why)} decided" if why else "no claim of this config reads it"))
        still = [c for c in self.claims if c.open]
        if still:
            out.append("open: " + "; ".join(f"{c.claim} ({c.verdict})" for c in still))
        return out

    def to_dict(self) -> dict:
        return {"train": list(self.train), "skip": {k: list(v) for k, v in self.skip.items()}, "seed": self.seed,
                "claims": [c.__dict__ for c in self.claims]}


def plan_nightly(cfg: AblationConfig, spec: ClaimsSpec, ledger: Ledger, config_hash: str,
                 recipes: dict[str, str], seed: int | None = None) -> Plan:
    """The arms the claims this config decides still need (``recipes``: variant → recipe key)."""
    from nai3eval.claims.decide import recipe_of

    states, needed, readers = [], set(), {v.name: [] for v in cfg.variants}
    for c in spec.claims:
        if c.parts or c.role == "check" or deciding(spec, c, cfg.name, config_hash):
            continue
        arms = resolve_arms(cfg.variants, c.arms)
        if len(arms) != len(c.arms):
            continue  # not measured in this config: it keeps no arm training
        taken = looks_of(ledger, identity(c.id, spec.block_sha256(c), config_hash, recipe_of(arms, recipes)))
        final = next((e for e in taken if e.final), None)
        verdict = final.verdict if final else (f"open after K = {taken[-1].look}" if taken else "open, no look yet")
        states.append(ClaimState(c.id, tuple(arms.values()), verdict, final is None))
        for v in arms.values():
            readers[v].append(c.id)
            if final is None:
                needed.add(v)
    train = tuple(v.name for v in cfg.variants if v.name in needed)
    skip = {v: tuple(readers[v]) for v in readers if v not in needed}
    return Plan(train, skip, tuple(states), seed)
