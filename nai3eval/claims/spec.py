"""The pre-registered claims spec (``configs/claims.yaml``): per claim the arms (by variant fields),
the evaluation point, the estimand (a name in ``estimands.ESTIMANDS``) or check (``checks.CHECKS``),
the decision rule with its margin, and the role. Nothing in the code chooses a threshold: the spec
does, and its sha256 travels with every report. A bad spec is refused before any work starts.
"""
from __future__ import annotations

import hashlib
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

DEFAULT_SPEC = bundled_root() / "claims.yaml"  # the repository's configs/claims.yaml, installed with the package
Role = Literal["primary", "secondary", "exploratory", "check"]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RuleSpec(_Spec):
    kind: Literal["superiority", "equivalence", "noninferiority", "below", "above", "check"]
    direction: Literal["greater", "less"] = "greater"
    margin: float | None = None
    # the smallest effect of interest, in the claim's unit: with it a superiority rule can also
    # conclude "equivalent" (TOST inside ±sesoi: no effect worth having), and the report says how
    # many seeds detect it with 80 % power
    sesoi: Annotated[float, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _margin_where_needed(self) -> "RuleSpec":
        if self.kind in ("equivalence", "noninferiority", "below", "above") and self.margin is None:
            raise reason(f"a {self.kind} rule needs a margin")
        if self.sesoi is not None and self.kind != "superiority":
            raise reason("sesoi belongs to a superiority rule (the others have their margin)")
        return self


class PointSpec(_Spec):
    cfg: float = 5.0
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
    # the config (its `name`) whose report decides this claim, with its sweep and prompt set; the
    # other configs' reports show the value and "decided in <name>". None: any report decides it
    decided_in: str | None = None

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


class ClaimsSpec(_Spec):
    version: int
    alpha: float
    looks: tuple[int, ...]
    boundary: Literal["pocock", "obrien_fleming"] = "obrien_fleming"  # α spent across the looks (sequential.py)
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
        if not self.looks or list(self.looks) != sorted(set(self.looks)) or self.looks[0] < 3:
            raise reason("looks must be increasing seed counts, the first ≥ 3 (fewer seeds give checkpoint-level "
                         "verdicts only, which never end a claim)")
        return self

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
