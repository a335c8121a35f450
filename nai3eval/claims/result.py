"""A claim's result and the outcome of one report's claims: the value types every view (the report,
``report.json``, MLflow metrics, the ledger) is a function of."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats

from . import statistics as A
from .ledger import Entry, utc_iso
from .planning import Design, effect_sd_upper, simulate, variance_ratio_interval
from .spec import ClaimsSpec, ClaimSpec

BELOW_FIRST_LOOK = "interval only"


def _finite(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None


@dataclass
class ClaimResult:
    spec: ClaimSpec
    effect: A.Effect
    decision: A.Decision
    seeds_available: int = 0
    look: int | None = None  # the K this look used; None below the first look
    level: float | None = None  # the one-sided level that decided it (Holm's for a primary)
    arms: dict[str, str] = field(default_factory=dict)  # arm → variant name
    cfg: float | None = None
    parts: list["ClaimResult"] = field(default_factory=list)
    check_passed: bool | None = None
    detail: str = ""
    ledger: Entry | None = None  # the look that stands (taken earlier): today's estimate is shown beside it
    history: tuple[int, ...] = ()  # the K of every look that spent α, this one last
    k_max: int = 0
    new_look: bool = False  # this report takes the look at ``look`` (and records it)
    final: bool = False
    robust: bool | None = None  # supported/contradicted that survive dropping any one seed
    conditional_power: float = math.nan
    ident: tuple[str, str, str] = ("", "", "")  # (block sha256, config hash, recipe key)
    others: list[Entry] = field(default_factory=list)  # looks of the same id under another estimand
    planning: "ClaimsSpec | None" = None  # the spec, for the design numbers

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def level_kind(self) -> str:
        if self.parts:
            return A.RECIPE if all(p.level_kind == A.RECIPE for p in self.parts) else A.CHECKPOINT
        return self.effect.level

    @property
    def below_first_look(self) -> bool:
        return (not self.parts and self.look is None and self.ledger is None
                and self.decision.verdict not in (A.NOT_MEASURED, A.CHECK_PASSED, A.CHECK_FAILED)
                and not self.decision.verdict.startswith("decided in "))

    @property
    def verdict(self) -> str:
        """The rule's word. Below the first look no word at all (the interval only); a contradiction
        outside the primaries' guarded family says "(unadjusted)"; a supported or contradicted that
        does not survive dropping one seed says it is not final."""
        v = self.decision.verdict
        if self.below_first_look:
            return BELOW_FIRST_LOOK
        if v == A.CONTRADICTED and self.spec.role != "primary" and self.spec.rule.kind != "null_twin":
            v += " (unadjusted)"
        if self.robust is False and not self.final and self.decision.verdict in (A.SUPPORTED, A.CONTRADICTED):
            v += " (open: not robust to dropping one seed)"
        return v

    def rci(self) -> tuple[float, float]:
        """The repeated confidence interval at the deciding level (two-sided 1 − 2·level); for a look
        an earlier report took, the interval it recorded (today's estimate may use more seeds)."""
        if self.ledger is not None:
            lo, hi = self.ledger.rci
            return (math.nan if lo is None else lo), (math.nan if hi is None else hi)
        if self.level is None or not self.level > 0 or self.effect.zero_width:
            return math.nan, math.nan
        return self.effect.interval(1 - 2 * self.level)

    def variance_ratio(self) -> tuple[float, float, float]:
        """τ̂²/s_w² with its 90 % F-based interval: how much more a retrained seed varies than a
        resampled one."""
        e = self.effect
        if e.n_seeds < 2 or not (e.s_w > 0) or e.zero_width:
            return math.nan, math.nan, math.nan
        prompts = int(np.median([c.n_prompts for c in e.per_seed]))
        return variance_ratio_interval((e.se ** 2) * e.n_seeds, e.s_w ** 2, e.n_seeds, prompts)

    def _registered(self) -> tuple[Design, float] | None:
        """The claim's registered design at its Holm level (α/m for a primary) and the spread at its
        upper bound; None where the rule has no effect of interest or the spread is unknown."""
        spec, e = self.planning, self.effect
        if spec is None or not self.spec.rule.sesoi or e.n_seeds < 2 or e.zero_width:
            return None
        share = spec.alpha / max(1, spec.primaries) if self.spec.role == "primary" else spec.alpha
        d = Design(spec.first_look, self.k_max or spec.kmax(self.spec), share, spec.spending, self.spec.rule.sesoi,
                   spec.futility.conditional_power, spec.futility.sd_confidence)
        return d, effect_sd_upper(e, spec.futility.sd_confidence)

    def design(self) -> tuple[float, float] | None:
        """(power, expected K) of the registered design against the claim's smallest effect of
        interest (``_registered``); None where it has none."""
        reg = self._registered()
        if reg is None:
            return None
        sim = simulate(reg[0], self.spec.rule.sesoi, reg[1], 4000, np.random.default_rng(0))
        return sim.power, sim.expected_k

    def more_seeds(self) -> tuple[float, float] | None:
        """The expected number of seeds still to train before this open claim is decided or
        declared futile (K_max at most), continuing its design from the seeds it has: (if the
        effect is the smallest of interest, if it is today's estimate). 0 for a claim that is
        final; None where there is no design to continue (``_registered``), no per-seed values, or
        another config decides the claim (this one's seeds never end it)."""
        if self.decision.verdict.startswith("decided in "):
            return None
        if self.final:
            return 0.0, 0.0
        reg = self._registered()
        seeds = [c.value for c in self.effect.per_seed]
        if reg is None or not seeds or not all(math.isfinite(v) for v in seeds):
            return None
        design, sd = reg
        now = len(seeds)
        sign = 1.0 if self.spec.rule.direction == "greater" else -1.0
        observed = sign * np.asarray(seeds, float)
        out = []
        for theta in (self.spec.rule.sesoi, sign * self.effect.value):
            sim = simulate(design, float(theta), sd, 2000, np.random.default_rng(0), observed=observed)
            out.append(max(0.0, sim.expected_k - now))
        return out[0], out[1]

    def twin_power(self) -> float | None:
        """A null twin's power against a fault as large as its margin by K_max (two-sided t at the
        last look's level, the spread at its upper bound)."""
        spec, e = self.planning, self.effect
        if spec is None or self.spec.rule.kind != "null_twin" or e.n_seeds < 2 or e.zero_width:
            return None
        from .sequential import nominal_levels

        k = self.k_max or spec.kmax(self.spec)
        last = nominal_levels(tuple(range(spec.first_look, k + 1)), k, spec.alpha / 2, spec.spending)[-1]
        sd = effect_sd_upper(e, spec.futility.sd_confidence)
        crit, nc = stats.t.isf(last, k - 1), spec.margin(self.spec) * math.sqrt(k) / sd
        return float(stats.nct.sf(crit, k - 1, nc) + stats.nct.cdf(-crit, k - 1, nc))

    def to_dict(self) -> dict:
        lo, hi = self.effect.interval(0.95)
        rlo, rhi = self.rci()
        ratio = self.variance_ratio()
        design = self.design()
        return {"id": self.id, "title": self.spec.title, "role": self.spec.role, "estimand": self.spec.estimand,
                "verdict": self.verdict, "level": self.level_kind, "n_seeds": self.effect.n_seeds,
                "seeds_available": self.seeds_available, "look": self.look, "looks": list(self.history),
                "k_max": self.k_max or None, "final": self.final, "robust": self.robust,
                "effect": {"value": _finite(self.effect.value), "ci95": [_finite(lo), _finite(hi)],
                           "rci": [_finite(rlo), _finite(rhi)], "rci_level": self.level},
                "per_seed": [{"seed": c.seed, "value": _finite(c.value), "se": _finite(c.se), "n_prompts": c.n_prompts,
                              **({"bounds": [_finite(b) for b in c.bounds]} if c.censored else {})}
                             for c in self.effect.per_seed],
                "s_w": _finite(self.effect.s_w), "tau": _finite(self.effect.tau), "unit": self.spec.unit,
                "rule": self.spec.rule.model_dump(), "margin": self.planning.margin(self.spec) if self.planning else
                self.spec.rule.margin, "arms": self.arms, "cfg": self.cfg, "parts": [p.id for p in self.parts],
                "reason": self.decision.reason or self.detail,
                "decided": asdict(self.ledger) if self.ledger else None,
                "tau2_over_sw2": {"value": _finite(ratio[0]), "ci90": [_finite(ratio[1]), _finite(ratio[2])]},
                "sesoi": self.spec.rule.sesoi, "conditional_power": _finite(self.conditional_power),
                "design_power": _finite(design[0]) if design else None,
                "expected_k": _finite(design[1]) if design else None, "twin_power": self.twin_power(),
                "more_seeds": list(more) if (more := self.more_seeds()) is not None else None,
                "block_sha256": self.ident[0], "config_hash": self.ident[1], "recipe_key": self.ident[2],
                "other_estimands": [asdict(e) for e in self.others], "decided_in": self.spec.decided_in}


@dataclass
class ClaimsOutcome:
    spec: ClaimsSpec
    claims: list[ClaimResult]
    checks: list[ClaimResult]
    decided_at: str = field(default_factory=utc_iso)  # when these looks were taken (their ledger entries)

    def to_dict(self) -> dict:
        return {"claims": [c.to_dict() for c in self.claims],
                "checks": [{"id": c.id, "title": c.spec.title, "passed": c.check_passed, "verdict": c.verdict,
                            "detail": c.detail or c.decision.reason} for c in self.checks],
                "claims_spec_sha256": self.spec.sha256, "claims_spec_version": self.spec.version,
                "claims_spec_path": self.spec.path, "first_look": self.spec.first_look, "k_max": self.spec.k_max,
                "spending": self.spec.spending}

    def new_ledger_entries(self, run_id: str = "") -> list[Entry]:
        """Every look this report took — whatever it read, *not measured* included."""
        return [entry_for(c, self.spec, self.decided_at, run_id) for c in self.claims if c.new_look and not c.parts]

    def metrics_by_seeds(self) -> dict[int, dict[str, float]]:
        """Per claim, keyed by K (MLflow's step: a claim's chart shows its interval narrowing as
        seeds accumulate): ``claims/<id>/effect``, ``ci95_low``/``ci95_high`` (labelled 95 %) and
        ``seeds``; for a look this report took also ``rci_low``/``rci_high`` (the repeated CI at the
        deciding level), ``rci_level`` and ``halfwidth`` (of the RCI); a value that is not finite is
        left out."""
        out: dict[int, dict[str, float]] = {}
        for c in self.claims:
            e = c.effect
            if not e.per_seed or e.value is None or not math.isfinite(e.value):
                continue
            lo, hi = e.interval(0.95)
            row = {"effect": e.value, "ci95_low": lo, "ci95_high": hi, "seeds": float(e.n_seeds)}
            if c.new_look:  # the repeated interval of the look this report took (a look's K is its step)
                rlo, rhi = c.rci()
                row.update(rci_low=rlo, rci_high=rhi, rci_level=c.level, halfwidth=(rhi - rlo) / 2)
            out.setdefault(e.n_seeds, {}).update(
                {f"claims/{c.id}/{k}": float(v) for k, v in row.items() if v is not None and math.isfinite(v)})
        return out


def entry_for(c: ClaimResult, spec: ClaimsSpec, decided_at: str, run_id: str = "") -> Entry:
    """The ledger entry of the look ``c`` took."""
    d = c.to_dict()["effect"]
    block, config, recipe = c.ident
    return Entry(c.id, block, config, recipe, c.look, c.decision.verdict, c.final, c.level, d["value"],
                 tuple(d["rci"]), tuple(d["ci95"]), (c.decision.reason or c.detail)[:1500], c.spec.title,
                 spec.version, spec.sha256, decided_at, run_id, c.robust)
