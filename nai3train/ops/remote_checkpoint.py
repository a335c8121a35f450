"""Resumable checkpoints kept in MLflow as well (``train.checkpoint_store: tracking``), so a
(variant, seed) whose worker died resumes on another machine that shares nothing with it but the
tracking server.

Upload. Each resumable checkpoint (``checkpoints/step-N``, except the last one: the run is about
to finish) is logged to the training run's artifacts as ``resumable/step-N`` through the run's
``BufferedTracker``, so a tracking outage never holds training up. The buffer names a local path
and delivers it later, while training goes on rotating its step checkpoints (only the newest two
stay), so what it names is a *staged copy* under ``resumable-outbox/<run id>/``, not the step
folder itself:

* the copy is made of hard links (a plain copy where links are refused) to the step folder's
  files, which are never written again once their folder is in place (``checkpoint.py`` writes a
  new folder and renames it), so rotation cannot change or remove what is delivered;
* it is assembled under a temporary name and renamed into place, so the buffer never names a
  folder that is still being filled;
* it is removed only by the sender thread, after its upload succeeded, so it never goes away in
  the middle of an upload. That thread then sets the run's tag ``nai3.resumable_checkpoint`` to the
  artifact path: a folder named by the tag was uploaded whole. An upload cut short by an outage is
  retried whole; one cut short by the worker's death is never named by the tag.

A half-written folder is therefore never uploaded, and never taken for a complete one. While the
server is away at most ``PENDING_MAX`` staged copies wait (beyond that a checkpoint stays local,
with a warning), so an outage costs at most that much extra disk. MLflow's client cannot delete an
artifact, so every uploaded ``resumable/step-N`` stays in the run's artifacts: the artifact store
holds ``train.steps / train.checkpoint_every`` checkpoints of each such run (size
``checkpoint_every`` for it; the ``resumable/`` folder of a FINISHED run may be deleted in the
artifact store by hand). ``nai3 relog`` of a journal delivers staged copies still on disk, without
the tag.

Download. A training that starts with resume on looks in the experiment for runs with the same
``nai3.run_key`` (RUNNING, KILLED or FAILED: the pipeline has marked a dead worker's run KILLED)
and takes the highest step any of them names in its tag. When that is newer than the newest step
checkpoint in the run folder (there is none on a machine that never trained this run), it downloads
that folder and the complete one before it (through the tracking server: proxied artifacts need
no storage credentials on the worker) into ``checkpoints/`` and lets the ordinary resume load them
(which checks each and falls back to the previous one on corruption). The new run is tagged
``nai3.resumed_from_run`` and ``nai3.resumed_from_artifact``.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..checkpoint import STEP_DIR, latest_step_checkpoint
from .tracking import Tracker

log = logging.getLogger(__name__)

PREFIX = "resumable"
COMPLETE_TAG = "nai3.resumable_checkpoint"
RESUMED_FROM_RUN = "nai3.resumed_from_run"
RESUMED_FROM_ARTIFACT = "nai3.resumed_from_artifact"
OUTBOX = "resumable-outbox"
PENDING_MAX = 2
RESUMABLE_STATUSES = ("RUNNING", "KILLED", "FAILED")
_ARTIFACT = re.compile(rf"^{PREFIX}/step-(\d{{8}})$")


def artifact_path(step: int) -> str:
    return f"{PREFIX}/step-{step:08d}"


def _artifact_step(path: str | None) -> int | None:
    m = _ARTIFACT.match(path or "")
    return int(m.group(1)) if m else None


@dataclass
class _Delivering(Tracker):
    """The run's ``Tracker`` as the buffer's sender thread calls it: a staged checkpoint is
    uploaded, then tagged complete, then its staged copy removed (see the module docstring)."""

    outbox: Path | None = None

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        p = Path(path)
        if self.outbox is None or p.parent != self.outbox:
            return super().log_artifact(path, artifact_path)
        if not (p / "meta.json").is_file():  # removed by hand: nothing whole to send
            log.warning("staged checkpoint %s is gone before its upload; not uploaded", p)
            return
        super().log_artifact(p, artifact_path)
        self.set_tags({COMPLETE_TAG: artifact_path})
        shutil.rmtree(p, ignore_errors=True)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # a file system without hard links
        shutil.copy2(src, dst)


class CheckpointUploads:
    """``train.checkpoint_store: tracking`` for one training run: ``tracker`` goes to the run's
    ``BufferedTracker``, ``ship`` to ``train_variant(on_checkpoint=…)``."""

    def __init__(self, started: Tracker, out: str | Path, final_step: int):
        base = Path(out).resolve() / OUTBOX
        self.outbox = base / started.run_id
        self.final_step = final_step
        self.tracker = _Delivering(started.uri, started.run_id, self.outbox)
        self.run = None  # the BufferedTracker, set by ``attach``
        self._behind = False
        if base.is_dir():  # a dead process's staged copies: its run is closed, its steps are local
            for old in base.iterdir():
                if old.name != started.run_id:
                    shutil.rmtree(old, ignore_errors=True)

    def attach(self, run) -> None:
        self.run = run

    def pending(self) -> int:
        if not self.outbox.is_dir():
            return 0
        return sum(1 for p in self.outbox.iterdir() if STEP_DIR.match(p.name))

    def ship(self, folder: Path) -> None:
        """Stage ``folder`` and hand it to the buffer; never raises (the checkpoint is on disk)."""
        step = int(STEP_DIR.match(folder.name).group(1))
        if step >= self.final_step or self.run is None:
            return
        if self.pending() >= PENDING_MAX:
            if not self._behind:
                log.warning("MLflow has not taken the last %d resumable checkpoints yet; %s stays local only "
                            "(a later one is uploaded once the backlog is delivered)", PENDING_MAX, folder.name)
            self._behind = True
            return
        self._behind = False
        staged = self.outbox / folder.name
        tmp = self.outbox / f".{folder.name}.tmp"
        try:
            self.outbox.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(folder, tmp, copy_function=_link_or_copy)
            os.replace(tmp, staged)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            log.warning("could not stage %s for upload (%s); it stays local only", folder, e)
            return
        self.run.log_artifact(staged, artifact_path(step))


@dataclass(frozen=True)
class RemoteCheckpoint:
    run_id: str
    step: int

    @property
    def artifact(self) -> str:
        return artifact_path(self.step)


def newest_remote(uri: str, experiment_id: str, run_key: str, exclude: str | None = None) -> RemoteCheckpoint | None:
    """The highest completely uploaded resumable checkpoint of any unfinished run of ``run_key``."""
    from mlflow.tracking import MlflowClient

    found = MlflowClient(uri).search_runs([experiment_id], filter_string=f"tags.`nai3.run_key` = '{run_key}'",
                                          order_by=["attributes.start_time DESC"], max_results=200)
    best = None
    for r in found:
        if r.info.run_id == exclude or r.info.status not in RESUMABLE_STATUSES:
            continue
        step = _artifact_step(r.data.tags.get(COMPLETE_TAG))
        if step is not None and (best is None or step > best.step):
            best = RemoteCheckpoint(r.info.run_id, step)
    return best


def download(uri: str, found: RemoteCheckpoint, out: str | Path, keep: int = 2) -> list[Path]:
    """``found`` and the complete ones before it (``keep`` in all) into ``out/checkpoints/step-N``;
    each lands under a temporary name and is renamed into place when whole."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    listed = sorted(s for a in client.list_artifacts(found.run_id, PREFIX)
                    if a.is_dir and (s := _artifact_step(a.path)) is not None and s <= found.step)
    base = Path(out) / "checkpoints"
    base.mkdir(parents=True, exist_ok=True)
    got = []
    for step in listed[-keep:]:
        dest = base / f"step-{step:08d}"
        if (dest / "meta.json").is_file():  # this machine has that step itself
            continue
        tmp = base / f".remote-{dest.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            local = Path(client.download_artifacts(found.run_id, artifact_path(step), str(tmp)))
            shutil.rmtree(dest, ignore_errors=True)  # no meta.json, or resume would have used it
            os.replace(local, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        got.append(dest)
    return got


def fetch_for_resume(run, experiment_id: str, run_key: str | None, out: str | Path) -> RemoteCheckpoint | None:
    """Before a resumed training: when the tracking server has a newer resumable checkpoint of
    ``run_key`` than ``out`` (see the module docstring), bring it here and tag ``run`` (the new
    run's ``BufferedTracker``) with where it came from. A server that fails here costs the remote
    resume, not the training: it is logged, tagged ``nai3.remote_resume_error``, and training
    resumes from what ``out`` holds (or starts over)."""
    if not run_key:
        return None
    local = latest_step_checkpoint(out)
    local_step = int(STEP_DIR.match(local.name).group(1)) if local is not None else 0
    try:
        found = newest_remote(run.uri, experiment_id, run_key, exclude=run.run_id)
        if found is None or found.step <= local_step:
            log.info("no resumable checkpoint of run key %s in MLflow newer than step %d here", run_key, local_step)
            return None
        download(run.uri, found, out)
    except Exception as e:  # noqa: BLE001 - any failure here only means "no remote resume"
        log.warning("could not fetch a resumable checkpoint of run key %s from MLflow (%s: %s); resuming from "
                    "step %d", run_key, type(e).__name__, e, local_step)
        run.set_tags({"nai3.remote_resume_error": f"{type(e).__name__}: {e}"[:5000]})
        return None
    log.info("fetched %s of run %s from MLflow to resume from", found.artifact, found.run_id)
    run.set_tags({RESUMED_FROM_RUN: found.run_id, RESUMED_FROM_ARTIFACT: found.artifact})
    return found
