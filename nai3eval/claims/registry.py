"""The registry that pins the claims spec: a version means one file, for good.

The spec is pre-registered: its rules are fixed before the runs they decide. Hashing the file
shows which rules a verdict followed, but only pinning stops an edited file from quietly deciding
the stored seeds again. The first run that uses a spec version in an MLflow experiment records the
file's sha256 there (an experiment tag per version); a run with a different file under a version
already registered is refused before any work starts. To change a rule, raise ``version:`` in the
file (and say why in its header): the first run under the new number registers it.

The registry lives in the store's ledger experiment (``ledger.LEDGER_EXPERIMENT``), beside the
looks it governs, and keeps the registered file itself — a run per version, the file as its
artifact — not only its sha256: a verdict can always be read next to the exact rules it followed.
"""
from __future__ import annotations

from nai3train.config import ConfigError

from .ledger import utc_iso
from .spec import ClaimsSpec

PREFIX = "nai3.claims_spec.v"


class SpecChanged(ConfigError):
    """The spec file differs from the one registered under its version."""


def registry_tag(version: int) -> str:
    return f"{PREFIX}{version}"


def registered(client, experiment_id: str) -> dict[int, str]:
    """Every registered version → its sha256, for this experiment."""
    tags = client.get_experiment(experiment_id).tags
    return {int(k[len(PREFIX):]): v for k, v in tags.items() if k.startswith(PREFIX) and k[len(PREFIX):].isdigit()}


def pin(client, experiment_id: str, spec: ClaimsSpec) -> bool:
    """Register ``spec`` under its version in the experiment, or check it against the registered
    file. True when this call registered it. Raises ``SpecChanged`` (a ConfigError: exit 2 before
    any work) when the version is registered with other content."""
    versions = registered(client, experiment_id)
    known = versions.get(spec.version)
    if known == spec.sha256:
        return False
    if known is not None:
        newest = max(versions)
        raise SpecChanged(
            f"claims spec {spec.path} (version {spec.version}, sha256 {spec.sha256[:16]}…) differs from the file "
            f"registered as version {spec.version} in this experiment (sha256 {known[:16]}…): a registered "
            f"version never changes. Restore the registered file, or raise `version:` to {newest + 1} and say in "
            "its header what changed and why; the first run under the new version registers it")
    client.set_experiment_tag(experiment_id, registry_tag(spec.version), spec.sha256)
    client.set_experiment_tag(experiment_id, f"{registry_tag(spec.version)}.registered_at", utc_iso())
    keep_file(client, experiment_id, spec)
    # MLflow has no compare-and-set: callers hold the experiment's claims lock (flows.pipeline), and a
    # registration that another writer overwrote anyway is not taken as this file's
    if registered(client, experiment_id).get(spec.version) != spec.sha256:
        return pin(client, experiment_id, spec)
    return True


def keep_file(client, experiment_id: str, spec: ClaimsSpec) -> str:
    """The registered file as an artifact of a run named for its version (its id is returned)."""
    run = client.create_run(experiment_id, run_name=f"claims spec v{spec.version}",
                            tags={"nai3.kind": "claims-spec", "nai3.claims_spec_version": str(spec.version),
                                  "nai3.claims_spec_sha256": spec.sha256})
    try:
        client.log_artifact(run.info.run_id, spec.path, "claims-spec")
    finally:
        client.set_terminated(run.info.run_id)
    return run.info.run_id
