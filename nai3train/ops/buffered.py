"""Logging that survives a tracking-server outage: training never waits on MLflow.

A nightly trains unattended for hours; the MLflow server it logs to may restart in the middle.
``BufferedTracker`` hands every log call (metrics with their original timestamps, params, tags,
artifacts, the final status) to one sender thread that delivers them in order. When the server
does not answer, the sender keeps the calls and tries again every ``retry_s``; training goes on.
Every call is also appended to a journal beside the checkpoints, with an acknowledgement once
delivered, so nothing is lost if the process dies during the outage. ``close`` waits up to
``patience_s`` for the backlog to drain and otherwise raises ``TrackingOutage``, which names
the journal and the command that delivers it later (``nai3 relog JOURNAL``).
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .secrets import redact, strip_userinfo
from .tracking import Tracker

log = logging.getLogger(__name__)

# MLflow error codes that mean "the server could not answer now", not "the request is wrong"
TRANSIENT = {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "ENDPOINT_NOT_FOUND"}


def default_patience_s() -> float:
    """How long a finished training waits for its backlog: $NAI3_TRACKING_PATIENCE_S, else 10 min.
    Operational, not part of the recipe, so it is not in the config (and not in any run key)."""
    from .settings import env_number

    return env_number("NAI3_TRACKING_PATIENCE_S", 600.0, 0, 30 * 86400)


class TrackingOutage(RuntimeError):
    """The tracking server stayed away past the patience; the work itself is done and on disk."""


def transient(err: BaseException) -> bool:
    """The tracking server could not answer now (worth retrying) — not a local failure: a broken
    stdout pipe of an orphaned process, say, must never be retried as an outage."""
    from mlflow.exceptions import MlflowException

    if isinstance(err, MlflowException):
        return err.error_code in TRANSIENT
    return type(err).__module__.startswith(("requests", "urllib3"))


def deliver(tracker: Tracker, op: dict) -> None:
    """Send one journalled call; an entry with a ``run_id`` goes to that run (the training run an
    evaluation is stored on), not the journal's own."""
    if "run_id" in op:
        tracker = Tracker(tracker.uri, op["run_id"])
    kind = op["op"]
    if kind == "metrics":
        from mlflow.entities import Metric

        items = [Metric(k, float(v), int(ts), int(step)) for k, v, ts, step in op["items"]]
        for i in range(0, len(items), 500):
            tracker.client.log_batch(tracker.run_id, metrics=items[i:i + 500])
    elif kind == "params":
        tracker.log_params(op["items"])
    elif kind == "tags":
        tracker.set_tags(op["items"])
    elif kind == "artifact":
        tracker.log_artifact(op["path"], op.get("artifact_path"))
    elif kind == "json":
        tracker.log_json(op["obj"], op["name"])
    elif kind == "table":
        tracker.log_table(op["rows"], op["artifact_file"])
    elif kind == "experiment_tags":
        tracker.set_experiment_tags(op["experiment_id"], op["items"], op["only_new"])
    elif kind == "child":
        tracker.log_child(**op["run"])
    elif kind == "finish":
        tracker.finish(op["ok"])
    else:
        raise ValueError(f"unknown journal entry {kind!r}")


class BufferedTracker:
    """A ``Tracker`` whose calls never block or fail the caller while the server is away (see the
    module docstring). Same methods as ``Tracker`` for what training and evaluation log."""

    def __init__(self, tracker: Tracker, journal: str | Path, retry_s: float = 5.0,
                 patience_s: float | None = None):
        self.tracker = tracker
        self.run_id = tracker.run_id
        self.uri = tracker.uri
        self.journal = Path(journal)
        self.retry_s = retry_s
        self.patience_s = default_patience_s() if patience_s is None else patience_s
        self.outage_since: float | None = None
        self.rejected: list[str] = []
        self._queue: deque[tuple[int, dict]] = deque()
        self._seq = 0
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._closing = False
        self._abandoned = False
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        # owner-only, and no credentials in it: relog takes them from the environment
        fd = os.open(self.journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as f:
            f.write(json.dumps({"uri": strip_userinfo(tracker.uri), "run_id": tracker.run_id}) + "\n")
        self._thread = threading.Thread(target=self._send_loop, name=f"mlflow-sender-{self.run_id[:8]}",
                                        daemon=True)
        self._thread.start()

    # the Tracker surface training uses
    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        ts = int(time.time() * 1000)
        self._put({"op": "metrics", "items": [[k, float(v), ts, step] for k, v in metrics.items()]})

    def log_params(self, params: dict[str, Any]) -> None:
        self._put({"op": "params", "items": {k: redact(str(v)) for k, v in params.items()}})

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._put({"op": "tags", "items": {k: redact(str(v)) for k, v in tags.items()}})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._put({"op": "artifact", "path": str(Path(path).resolve()), "artifact_path": artifact_path})

    def log_json(self, obj: Any, name: str) -> None:
        self._put({"op": "json", "obj": json.loads(json.dumps(obj, default=str)), "name": name})

    def log_table(self, rows: list[dict[str, Any]], artifact_file: str) -> None:
        self._put({"op": "table", "rows": json.loads(json.dumps(rows, default=str)), "artifact_file": artifact_file})

    def set_experiment_tags(self, experiment_id: str, tags: dict[str, str], only_new: bool = False) -> None:
        self._put({"op": "experiment_tags", "experiment_id": experiment_id, "items": dict(tags), "only_new": only_new})

    def log_child(self, experiment_id: str, key: str, name: str, tags: dict[str, str], params: dict[str, Any],
                  metrics: dict[str, float], artifact_dir: str | None = None, start_time_ms: int | None = None) -> None:
        """A whole child run (``Tracker.log_child``), created when delivered; ``artifact_dir`` must
        stay on disk until then (it is named in the journal, not copied)."""
        self._put({"op": "child", "run": {
            "experiment_id": experiment_id, "key": key, "name": name, "tags": {k: redact(str(v)) for k, v in tags.items()},
            "params": {k: redact(str(v)) for k, v in params.items()},
            "metrics": {k: float(v) for k, v in metrics.items()}, "timestamp_ms": int(time.time() * 1000),
            "artifact_dir": str(Path(artifact_dir).resolve()) if artifact_dir else None, "start_time_ms": start_time_ms}})

    def finish(self, ok: bool = True) -> None:
        self._put({"op": "finish", "ok": ok})

    def routed(self, run_id: str) -> "BufferedTracker":
        """The same sender and journal, logging to another run (the training run an evaluation is
        stored on): its calls stay in order with this run's."""
        return _Routed(self, run_id)

    @contextmanager
    def running(self, finish: bool = True) -> Iterator["BufferedTracker"]:
        """The run's lifecycle around a block, through the buffer: FINISHED (``finish``) and every
        call delivered when it completes — ``close`` raises ``TrackingOutage`` past the patience,
        after the block's work is done; FAILED when it raises, that error being the one that
        propagates. ``finish=False``: only deliver (a fanned-out worker logging to its parent)."""
        try:
            yield self
        except BaseException:
            if finish:
                self.finish(False)
            self.close_quietly()
            raise
        if finish:
            self.finish(True)
        self.close()

    def close_quietly(self) -> None:
        """On the way out with another error: deliver what can be, but let that error be the one raised."""
        try:
            self.close()
        except TrackingOutage as outage:
            log.error("%s", outage)

    @property
    def backlog(self) -> int:
        with self._lock:
            return len(self._queue)

    def close(self) -> None:
        """Wait up to ``patience_s`` for every call to be delivered; then stop the sender. Raises
        ``TrackingOutage`` (with the journal and the re-log command) if the server stayed away."""
        deadline = time.monotonic() + self.patience_s
        with self._wake:
            self._closing = True
            self._wake.notify_all()
            while self._queue and time.monotonic() < deadline:
                self._wake.wait(timeout=min(1.0, max(0.0, deadline - time.monotonic())))
            left = len(self._queue)
            self._abandoned = bool(left)  # the journal is now relog's: the sender must not touch it
        with _SHARED_LOCK:
            if _SHARED.get(self.run_id) is self:
                del _SHARED[self.run_id]
        if left:
            since = time.strftime("%H:%M:%S", time.localtime(self.outage_since or time.time()))
            raise TrackingOutage(
                f"MLflow at {redact(self.uri)} has not answered since {since}; waited {self.patience_s:g} s after the work "
                f"finished. The work is done and on disk; {left} log call(s) of run {self.run_id} are kept in "
                f"{self.journal}. When the server is back, deliver them with: nai3 relog {self.journal} "
                f"--tracking-uri {strip_userinfo(self.uri)}")
        self._thread.join(timeout=5)
        if self.rejected:
            log.error("MLflow refused %d call(s) of run %s: %s", len(self.rejected), self.run_id,
                      "; ".join(self.rejected)[:2000])
        self.journal.unlink(missing_ok=True)

    def _put(self, op: dict) -> None:
        with self._wake:
            self._seq += 1
            self._queue.append((self._seq, op))
            self._append({"seq": self._seq, **op})
            self._wake.notify_all()

    def _append(self, entry: dict) -> None:
        with self.journal.open("a") as f:
            f.write(json.dumps(entry) + "\n")

    def _send_loop(self) -> None:
        while True:
            with self._wake:
                while not self._queue:
                    if self._closing:
                        return
                    self._wake.wait()
                if self._abandoned:
                    return
                seq, op = self._queue[0]
            try:
                deliver(self.tracker, op)
            except BaseException as e:  # noqa: BLE001 - an outage must never reach the training loop
                if transient(e):
                    if self.outage_since is None:
                        self.outage_since = time.time()
                        log.warning("MLflow at %s is not answering (%s); the work goes on, logging is buffered "
                                    "in %s", redact(self.uri), redact(str(e)[:200]), self.journal)
                    time.sleep(self.retry_s)
                    continue
                self.rejected.append(f"{op['op']}: {str(e)[:300]}")
            if self.outage_since is not None:
                log.warning("MLflow at %s answers again after %.0f s; delivering the backlog", redact(self.uri),
                            time.time() - self.outage_since)
                self.outage_since = None
            with self._wake:
                if self._abandoned:
                    return
                self._queue.popleft()
                self._append({"ack": seq})
                self._wake.notify_all()


class _Routed(BufferedTracker):
    """``BufferedTracker.routed``: every call goes into the owner's queue, addressed to ``run_id``."""

    def __init__(self, owner: BufferedTracker, run_id: str):  # no super().__init__: no sender of its own
        self._owner, self.run_id, self.uri = owner, run_id, owner.uri

    def _put(self, op: dict) -> None:
        self._owner._put({**op, "run_id": self.run_id})

    def close(self) -> None:
        raise TypeError("a routed view is closed with the tracker it routes through")


_SHARED: dict[str, BufferedTracker] = {}
_SHARED_LOCK = threading.Lock()


def shared(tracker: Tracker, folder: str | Path) -> BufferedTracker:
    """This process's one buffered logger of ``tracker``'s run, journalled under ``folder``: the
    flow's tasks (tagger, evaluations, report) share it, so an outage costs the patience once, at
    the end, not once per task. The journal's name holds the process id: fanned-out workers
    logging to the same parent never share a file."""
    with _SHARED_LOCK:
        got = _SHARED.get(tracker.run_id)
        if got is None:
            got = _SHARED[tracker.run_id] = BufferedTracker(
                tracker, Path(folder) / f"mlflow-journal-{tracker.run_id}-{os.getpid()}.jsonl")
        return got


class RefusedJournal(ValueError):
    """A journal that asks for what nai3 never writes: it is data, not commands."""


def relog(journal: str | Path, uri: str) -> int:
    """Deliver what a ``TrackingOutage`` left in ``journal`` (in order, original timestamps) to the
    tracking store ``uri`` and remove the journal. Returns the number of calls delivered.

    A journal is data, not commands: it is refused whole, before anything is sent, when its store
    is not ``uri``, when a call is not one nai3 writes, when a call names a run or an experiment
    other than the journal's own, or when an artifact lies outside the journal's work folder."""
    path = Path(journal)
    if not path.is_file():
        raise FileNotFoundError(f"journal {path} does not exist (already delivered, or a different run folder?)")
    header, ops, acked = None, {}, set()
    for n, line in enumerate(path.read_text().splitlines(), 1):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a kill mid-write: the calls before it stand
            log.warning("%s:%d is not JSON (cut short?); ignored", path, n)
            continue
        if not isinstance(entry, dict):
            raise RefusedJournal(f"{path}:{n} is not a journal entry")
        if "uri" in entry and header is None:
            header = entry
        elif "ack" in entry:
            acked.add(entry["ack"])
        elif "seq" in entry:
            ops[entry["seq"]] = entry
    if header is None or not isinstance(header.get("run_id"), str):
        raise ValueError(f"{path} is not a nai3 logging journal (no header line with uri and run_id)")
    if strip_userinfo(str(header["uri"])) != strip_userinfo(uri):
        raise RefusedJournal(f"{path} was written for the tracking store {redact(str(header['uri']))}, not "
                             f"{redact(uri)}: pass that one with --tracking-uri (credentials from the environment)")
    tracker = Tracker(uri, header["run_id"])
    todo = [ops[s] for s in sorted(ops) if s not in acked]
    _check(todo, tracker, path)
    for op in todo:
        deliver(tracker, op)
    path.unlink()
    return len(todo)


OPS = ("metrics", "params", "tags", "artifact", "json", "table", "experiment_tags", "child", "finish")


def _check(todo: list[dict], tracker: Tracker, path: Path) -> None:
    """Every call is one nai3 writes, for the journal's own run, experiment and work folder."""
    experiment = tracker.client.get_run(tracker.run_id).info.experiment_id
    root = path.resolve().parent.parent  # the work folder (WORK/journals/…) or the run folder's parent
    checked = {tracker.run_id}  # runs already found in the journal's experiment: one lookup per run
    for op in todo:
        kind = op.get("op")
        if kind not in OPS:
            raise RefusedJournal(f"{path}: {kind!r} is not a call nai3 journals")
        if "run_id" in op and str(op["run_id"]) not in checked:
            if tracker.client.get_run(str(op["run_id"])).info.experiment_id != experiment:
                raise RefusedJournal(f"{path}: run {op['run_id']} is not in the journal's experiment {experiment}")
            checked.add(str(op["run_id"]))
        named = op.get("experiment_id", (op.get("run") or {}).get("experiment_id") if kind == "child" else None)
        if named is not None and str(named) != experiment:
            raise RefusedJournal(f"{path}: experiment {named} is not the journal's ({experiment})")
        for f in [op.get("path")] if kind == "artifact" else [(op.get("run") or {}).get("artifact_dir")]:
            if f and not Path(f).resolve().is_relative_to(root):
                raise RefusedJournal(f"{path}: artifact {f} lies outside the journal's work folder {root}")
