"""The pre-registered claims spec (``configs/claims.yaml``): per claim the arms (by variant fields),
the evaluation point, the estimand (a name in ``estimands.ESTIMANDS``) or check (``checks.CHECKS``),
the decision rule with its margin, and the role. Nothing in the code chooses a threshold: the spec
does, and its sha256 travels with every report. A bad spec is refused before any work starts.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nai3train.config import VariantConfig
from nai3train.config.errors import ConfigError, config_error, reason
from nai3train.config.locate import bundled_root
from nai3train.config.yaml_limits import YAMLTooLarge, safe_yaml

from .checks import CHECKS
from .estimands import ESTIMANDS
from .sequential import K_MAX_LIMIT

DEFAULT_SPEC = bundled_root() / "claims.yaml"  # the repository's configs/claims.yaml, installed with the package
Role = Literal["primary", "secondary", "exploratory", "check"]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RuleSpec(_Spec):
    kind: Literal["superiority", "equivalence", "noninferiority", "below", "above", "null_twin", "check"]
    direction: Literal["greater", "less"] = "greater"
    margin: float | None = None
    # the smallest effect of interest, in the claim's unit: with it a superiority rule can also
    # conclude "equivalent" (TOST inside ±sesoi: no effect worth having), can be declared futile,
    # and the report gives the registered design's power against it
    sesoi: Annotated[float, Field(gt=0)] | None = None
    # null_twin: the claim whose sesoi sizes this harness check (its margin)
    sesoi_of: str | None = None

    @model_validator(mode="after")
    def _margin_where_needed(self) -> "RuleSpec":
        if self.kind in ("equivalence", "noninferiority", "below", "above") and self.margin is None:
            raise reason(f"a {self.kind} rule needs a margin")
        if self.sesoi is not None and self.kind != "superiority":
            raise reason("sesoi belongs to a superiority rule (the others have their margin)")
        if (self.kind == "null_twin") != (self.sesoi_of is not None):
            raise reason("a null_twin rule names sesoi_of (the claim whose smallest effect of interest sizes it), "
                         "and only a null_twin rule does")
        if self.kind == "null_twin" and self.margin is not None:
            raise reason("a null_twin rule's margin is its sesoi_of claim's sesoi, never written")
        return self


class PointSpec(_Spec):
    cfg: float = 5.0
    # the swept CFG scale used must lie within this of ``cfg``; the scale used is printed
    cfg_tolerance: Annotated[float, Field(ge=0)] = 0.25
    baseline_start: float | Literal["max"] = "max"
    treatment_start: float | Literal["max"] = "max"


class ClaimSpec(_Spec):
    id: str
    title: str
    role: Role
    estimand: str
    arms: dict[Literal["baseline", "treatment"], dict[str, Any]] = {}
    point: PointSpec = PointSpec()
    metric: str | None = None
    unit: str = ""
    rule: RuleSpec
    parts: tuple[str, ...] = ()
    weight: float | None = None  # m of a linear contrast s_treatment − m·s_baseline (leak_slope_contrast)
    # the config (a name in the spec's `deciders`, which pins its hash) whose report decides this
    # claim; other configs' reports show the value and "decided in <name>". None: any report decides it
    decided_in: str | None = None
    k_max: Annotated[int, Field(ge=3)] | None = None  # the registered maximum of seeds (default: the spec's)

    @field_validator("arms")
    @classmethod
    def _fields_exist(cls, arms: dict) -> dict:
        known = set(VariantConfig.model_fields) - {"name"}
        for arm, sel in arms.items():
            bad = set(sel) - known
            if bad:
                raise reason(f"arm {arm!r} selects by unknown variant field(s) {sorted(bad)}; known: {sorted(known)}")
        return arms

    @model_validator(mode="after")
    def _primary_is_directional(self) -> "ClaimSpec":
        if self.role == "primary" and not self.parts and self.rule.kind not in ("superiority", "noninferiority",
                                                                                "above", "below"):
            raise reason(f"primary claim {self.id}: Holm guards directional rules (superiority, noninferiority, "
                         f"above, below), not {self.rule.kind}")
        return self

    @model_validator(mode="after")
    def _primary_has_sesoi(self) -> "ClaimSpec":
        if self.role == "primary" and self.rule.kind == "superiority" and not self.parts and self.rule.sesoi is None:
            raise reason(f"primary claim {self.id} needs rule.sesoi, its smallest effect of interest (registered "
                         "before its next look, so a null result can be read as 'equivalent')")
        return self

    @model_validator(mode="after")
    def _metric_or_parts(self) -> "ClaimSpec":
        if bool(self.metric) == bool(self.parts):
            raise reason("give exactly one of metric (a measured claim) or parts (a compound claim)")
        if self.metric and self.metric not in (*ESTIMANDS, *CHECKS):
            raise reason(f"unknown metric {self.metric!r}; known: {sorted(ESTIMANDS)} and checks {list(CHECKS)}")
        if self.metric and (self.metric in CHECKS) != (self.rule.kind == "check"):
            raise reason(f"metric {self.metric!r} needs rule kind 'check' exactly when it is one of {list(CHECKS)}")
        return self


class FutilitySpec(_Spec):
    """Non-binding futility: a claim whose conditional power at K_max — at its smallest effect of
    interest, the spread taken at its upper ``sd_confidence`` bound — is below ``conditional_power``
    reads *futile* (its boundaries never assume it: stopping cannot raise the error rate)."""

    conditional_power: Annotated[float, Field(gt=0, lt=1)] = 0.10
    sd_confidence: Annotated[float, Field(gt=0.5, lt=1)] = 0.80


class ClaimsSpec(_Spec):
    version: int
    alpha: Annotated[float, Field(gt=0, lt=0.5)]
    first_look: Annotated[int, Field(ge=3)] = 3  # recipe-level verdicts from this K on, a look at every K
    k_max: Annotated[int, Field(ge=3, le=K_MAX_LIMIT)] = 10  # the registered maximum of seeds per claim
    spending: Literal["pocock", "obrien_fleming"] = "obrien_fleming"  # Lan–DeMets type (sequential.py)
    futility: FutilitySpec = FutilitySpec()
    # the configs that decide claims (decided_in), each pinned by its config hash: a config of that
    # name with another grid, prompt set or recipe decides nothing
    deciders: dict[str, str] = {}
    claims: tuple[ClaimSpec, ...]
    sha256: str = ""
    path: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> "ClaimsSpec":
        ids = [c.id for c in self.claims]
        if len(set(ids)) != len(ids):
            raise reason("claim ids must be unique")
        for c in self.claims:
            missing = set(c.parts) - set(ids)
            if missing:
                raise reason(f"claim {c.id} names unknown parts {sorted(missing)}")
        for c in self.claims:
            if c.decided_in is not None and c.decided_in not in self.deciders:
                raise reason(f"claim {c.id} is decided_in {c.decided_in!r}, which `deciders` does not pin "
                             f"(known: {sorted(self.deciders)})")
            if c.rule.sesoi_of is not None:
                ref = next((o for o in self.claims if o.id == c.rule.sesoi_of), None)
                if ref is None or ref.rule.sesoi is None:
                    raise reason(f"claim {c.id}: sesoi_of {c.rule.sesoi_of!r} must name a claim with a sesoi")
            if self.kmax(c) > K_MAX_LIMIT or self.kmax(c) < self.first_look:
                raise reason(f"claim {c.id}: k_max must lie in [first_look, {K_MAX_LIMIT}]")
        return self

    def kmax(self, c: ClaimSpec) -> int:
        """The registered maximum of seeds of claim ``c``."""
        return c.k_max or self.k_max

    def margin(self, c: ClaimSpec) -> float | None:
        """The rule's margin; a null twin's is the sesoi of the claim it names."""
        return self.by_id(c.rule.sesoi_of).rule.sesoi if c.rule.kind == "null_twin" else c.rule.margin

    def block_sha256(self, c: ClaimSpec) -> str:
        """The identity of claim ``c``'s estimand and decision: its block as parsed (so layout and
        comments do not count), with every spec-level setting its verdict depends on. A ledger entry
        belongs to this hash, not to the id: an edited block is another estimand."""
        context = {"alpha": self.alpha, "first_look": self.first_look, "k_max": self.kmax(c),
                   "spending": self.spending, "futility": self.futility.model_dump(), "margin": self.margin(c),
                   "primaries": self.primaries if c.role == "primary" else None,
                   "decider": self.deciders.get(c.decided_in or "")}
        doc = json.dumps({"claim": c.model_dump(mode="json"), **context}, sort_keys=True, ensure_ascii=True)
        return hashlib.sha256(doc.encode()).hexdigest()

    @property
    def primaries(self) -> int:
        """The size of the Holm family: the spec's primary claims (compound ones excepted)."""
        return sum(c.role == "primary" and not c.parts for c in self.claims)

    def by_id(self, cid: str) -> ClaimSpec:
        return next(c for c in self.claims if c.id == cid)


def load_claims_spec(path: str | Path | None = None) -> ClaimsSpec:
    """The spec with the sha256 of its bytes; a bad spec is refused naming the dotted key."""
    p = Path(path) if path else DEFAULT_SPEC
    if not p.is_file():
        raise ConfigError(f"claims spec {p} does not exist")
    raw = p.read_bytes()
    try:
        doc = safe_yaml(raw, f"claims spec {p}") or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"claims spec {p} is not valid YAML: {e}") from None
    except YAMLTooLarge as e:
        raise ConfigError(str(e)) from None
    if not isinstance(doc, dict) or {"sha256", "path"} & set(doc):
        raise ConfigError(f"claims spec {p} must be a mapping of spec keys (version, alpha, claims, …); "
                          "'sha256' and 'path' are computed, not written")
    try:
        return ClaimsSpec(**doc, sha256=hashlib.sha256(raw).hexdigest(), path=str(p))
    except ValidationError as e:
        raise config_error(e, ClaimsSpec, root="claims") from None
