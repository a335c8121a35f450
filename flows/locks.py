"""The lock that makes "train each (variant, seed) exactly once" hold, on one machine or many.

* With a Prefect server (``PREFECT_API_URL`` set, as on every worker of a team set-up) the lock is
  a Prefect global concurrency limit named after the run key, limit 1, created on demand and
  acquired in strict mode with a lease: every worker on every machine sees it, a missing limit is
  an error rather than a free pass, and an *inactive* one (someone disabled it in the UI) is
  refused, because Prefect lets inactive limits through. The lease is renewed while the holder
  lives; a holder killed with its machine loses it after ``LEASE_S`` and whoever retries the work
  takes over (and resumes from the checkpoint).
* A server that does not answer for a while (restarted under running nightlies) is waited for,
  up to ``NAI3_PREFECT_PATIENCE_S`` (:mod:`flows.server`), when a lock is taken: a restart never
  fails a flow run that was about to take one.
* Without one (``make demo``, the CLI, Prefect's ephemeral API, whose server lives and dies with
  one process) it is a file lock per key under the work folder: enough for one machine.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path
from typing import Iterator

from .server import patiently

log = logging.getLogger("nai3.locks")

LEASE_S = 60.0  # the server's minimum; a dead holder blocks its key for about this long


class LockError(RuntimeError):
    """The cluster-wide lock cannot be trusted: say what to fix rather than train twice."""


def prefect_server_configured() -> bool:
    """Whether a Prefect server every worker shares is configured (not the ephemeral API, which a
    parallel local unit is given: ``flows/local_units.py`` sets NAI3_LOCAL_UNIT there)."""
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value()) and not os.environ.get("NAI3_LOCAL_UNIT")


def limit_name(key: str) -> str:
    return f"nai3-lock-{key}"


def ensure_limit(name: str) -> None:
    """The global concurrency limit ``name`` exists, is active and admits one holder."""
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1, active=True))
            except ObjectAlreadyExists:
                pass  # another worker created it first: the same limit
            limit = client.read_global_concurrency_limit_by_name(name)
    if not limit.active or limit.limit != 1:
        raise LockError(f"the global concurrency limit {name!r} is {'inactive' if not limit.active else ''}"
                        f"{' and ' if not limit.active and limit.limit != 1 else ''}"
                        f"{f'set to {limit.limit} slots' if limit.limit != 1 else ''}; it must be active with one "
                        f"slot or two workers could train the same run. Fix it with `prefect gcl update {name} "
                        f"--enable --limit 1` (or delete it: nai3 re-creates it).")


@contextlib.contextmanager
def global_lock(key: str) -> Iterator[None]:
    """Hold the cluster-wide lock of ``key`` (waits while another worker holds it)."""
    from prefect.concurrency.sync import concurrency

    name = limit_name(key)
    patiently(lambda: ensure_limit(name), f"checking the lock {name}")
    log.info("waiting for the cluster-wide lock %s", name)
    with contextlib.ExitStack() as held:
        patiently(lambda: held.enter_context(concurrency(name, occupy=1, strict=True, lease_duration=LEASE_S,
                                                         raise_on_lease_renewal_failure=False)),
                  f"taking the lock {name}")
        yield


@contextlib.contextmanager
def file_lock(work_dir: str | Path, key: str) -> Iterator[None]:
    """An exclusive lock per key on this machine."""
    folder = Path(work_dir) / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{key}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def run_lock(work_dir: str | Path, key: str) -> Iterator[None]:
    """The lock of ``key``: cluster-wide with a Prefect server, per machine without one. The file
    lock is always taken too, so a CLI run and a flow run on one machine still exclude each other."""
    with file_lock(work_dir, key):
        if prefect_server_configured():
            with global_lock(key):
                yield
        else:
            yield
