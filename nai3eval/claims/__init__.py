"""The claims, decided by the pre-registered spec (``configs/claims.yaml``) over training seeds.

``spec`` reads and validates the spec; ``estimands`` turns one seed's measurement record into D_k
(generic forms, named in ``ESTIMANDS``); ``checks`` holds the passed/failed checks; ``decide``
combines the seeds (``statistics``: the two-stage analysis and the decision rules) and takes the
looks (``looks``, ``sequential``: α spending, Holm in both directions, robustness, futility);
``ledger`` records every look; ``planning`` and ``validate`` describe the registered design.
"""
from .decide import (ClaimResult, ClaimsOutcome, apply_holm, evaluate_claims, instrument_accuracy, instrument_note,
                     matches)
from .estimands import ESTIMANDS, Arms, NotMeasured
from .checks import CHECKS
from .spec import DEFAULT_SPEC, ClaimsSpec, ClaimSpec, load_claims_spec

__all__ = ["CHECKS", "DEFAULT_SPEC", "ESTIMANDS", "Arms", "ClaimResult", "ClaimSpec", "ClaimsOutcome", "ClaimsSpec",
           "NotMeasured", "apply_holm", "evaluate_claims", "instrument_accuracy", "instrument_note",
           "load_claims_spec", "matches"]
