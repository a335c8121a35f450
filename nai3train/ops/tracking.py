"""MLflow plumbing: explicit, absolute tracking URIs and run ids passed by hand.

MLflow's "active run" is thread-local, and Prefect runs tasks in worker threads, so nothing
here uses ``mlflow.start_run``: every call goes through an ``MlflowClient`` with a run id.
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
# nai3 buffers and retries on its own (nai3train/ops/buffered.py): a request to an absent server
# should fail in seconds, not after MLflow's default 7 retries with doubling back-off (minutes)
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")

from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.entities import RunStatus  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from .secrets import redact  # noqa: E402

MAX_PARAM_LEN = 6000


def default_store(root: str | Path | None = None) -> tuple[str, str]:
    """(tracking URI, artifact root) of the local store: ``<root>/mlflow/mlflow.db`` and
    ``<root>/mlflow/artifacts``, absolute. ``root`` defaults to the current directory."""
    base = (Path(root) if root else Path.cwd()).resolve() / "mlflow"
    base.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{base / 'mlflow.db'}", (base / "artifacts").as_uri()


def resolve_tracking(uri: str | None = None, root: str | Path | None = None) -> tuple[str, str | None]:
    """An explicit URI wins, then $MLFLOW_TRACKING_URI, then the local SQLite store."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        if uri.startswith("sqlite:///") or "://" not in uri:
            path = Path(uri.removeprefix("sqlite:///")).resolve()
            path.parent.mkdir(parents=True, exist_ok=True)
            return f"sqlite:///{path}", (path.parent / "artifacts").as_uri()
        return uri, None
    return default_store(root)


EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def ensure_experiment(client: MlflowClient, name: str, artifact_root: str | None) -> str:
    """Get or create the experiment, tagged as model development: MLflow 3's UI otherwise opens it
    on its GenAI page (an empty traces dashboard) instead of the runs to compare."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        location = f"{artifact_root}/{name}" if artifact_root else None
        if location and location.startswith("file:") and not Path(location.removeprefix("file://")).resolve() \
                .is_relative_to(Path(artifact_root.removeprefix("file://")).resolve()):
            raise ValueError(f"experiment name {name!r} would put its artifacts outside {artifact_root}")
        try:
            return client.create_experiment(name, artifact_location=location, tags=dict([EXPERIMENT_KIND]))
        except MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            exp = client.get_experiment_by_name(name)  # two flow runs started together: the other created it
    if exp.tags.get(EXPERIMENT_KIND[0]) != EXPERIMENT_KIND[1]:
        client.set_experiment_tag(exp.experiment_id, *EXPERIMENT_KIND)
    return exp.experiment_id


def open_experiment(name: str, uri: str | None = None) -> tuple[str, str]:
    """Resolve the tracking URI (see ``resolve_tracking``) and get or create the experiment:
    returns (uri, experiment_id)."""
    uri, artifact_root = resolve_tracking(uri)
    return uri, ensure_experiment(MlflowClient(tracking_uri=uri), name, artifact_root)


def _inside(root: Path, name: str) -> Path:
    """``root / name`` when that stays inside ``root``: an artifact's file name, never a path out."""
    f = root / name
    if not f.resolve().is_relative_to(root.resolve()) or f.parent.resolve() != root.resolve():
        raise ValueError(f"artifact name {name!r} is not a file name")
    return f


@dataclass
class Tracker:
    """One MLflow run, addressed by id; safe to use from any thread."""

    uri: str
    run_id: str

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.uri)

    def log_metrics(self, metrics: dict[str, float], step: int = 0, timestamp_ms: int | None = None) -> None:
        from mlflow.entities import Metric
        import time

        ts = timestamp_ms if timestamp_ms is not None else int(time.time() * 1000)
        items = [Metric(k, float(v), ts, step) for k, v in metrics.items()]
        for i in range(0, len(items), 500):
            self.client.log_batch(self.run_id, metrics=items[i:i + 500])

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, redact(str(v))[:MAX_PARAM_LEN]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def set_tags(self, tags: dict[str, Any]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, redact(str(v)))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        p = Path(path)
        if p.is_dir():
            self.client.log_artifacts(self.run_id, str(p), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(p), artifact_path)

    def log_json(self, obj: Any, name: str) -> None:
        with tempfile.TemporaryDirectory() as d:
            f = _inside(Path(d), name)
            f.write_text(json.dumps(obj, indent=2, default=str))
            self.client.log_artifact(self.run_id, str(f))

    def log_text(self, text: str, name: str) -> None:
        with tempfile.TemporaryDirectory() as d:
            f = _inside(Path(d), name)
            f.write_text(text)
            self.client.log_artifact(self.run_id, str(f))

    def log_table(self, rows: list[dict[str, Any]], artifact_file: str) -> None:
        """Rows as an MLflow table artifact (the UI's artifact view shows it as a table, and
        ``mlflow.load_table`` reads it back across runs)."""
        if rows:
            columns = {k: [str(r.get(k, "")) for r in rows] for k in rows[0]}
            self.client.log_table(self.run_id, columns, artifact_file)

    def log_dataset(self, name: str, digest: str, source: str, context: str, profile: dict | None = None) -> None:
        """The data a run used, as an MLflow dataset input (the runs table's Dataset column)."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        ds = Dataset(name=name, digest=digest[:36], source_type="local", source=json.dumps({"uri": source}),
                     profile=json.dumps(profile or {}))
        self.client.log_inputs(self.run_id, datasets=[DatasetInput(ds, [InputTag("mlflow.data.context", context)])])

    def set_experiment_tags(self, experiment_id: str, tags: dict[str, str], only_new: bool = False) -> None:
        """Experiment-level tags (the claims ledger, the shared view). ``only_new``: a tag already
        there keeps its value (a ledger entry is written once, whoever writes first)."""
        have = self.client.get_experiment(experiment_id).tags if only_new else {}
        for k, v in tags.items():
            if k not in have:
                self.client.set_experiment_tag(experiment_id, k, v)

    def log_child(self, experiment_id: str, key: str, name: str, tags: dict[str, str], params: dict[str, Any],
                  metrics: dict[str, float], artifact_dir: str | None = None, start_time_ms: int | None = None,
                  timestamp_ms: int | None = None) -> str:
        """A finished child run of this one, logged whole (an evaluation point): found by its
        ``nai3.point_key`` tag if an earlier delivery created it, so a retried delivery completes
        that run instead of adding a second one. Returns its run id."""
        found = self.client.search_runs([experiment_id], filter_string=f"tags.`nai3.point_key` = '{key}'",
                                        max_results=1)
        child = (Tracker(self.uri, found[0].info.run_id) if found else
                 Tracker.start(self.uri, experiment_id, name, parent=self, tags={**tags, "nai3.point_key": key},
                               start_time_ms=start_time_ms))
        child.log_params(params)
        child.log_metrics(metrics, timestamp_ms=timestamp_ms)
        if artifact_dir:
            child.log_artifact(artifact_dir)
        child.finish(True)
        return child.run_id

    def finish(self, ok: bool = True) -> None:
        status = RunStatus.to_string(RunStatus.FINISHED if ok else RunStatus.FAILED)
        self.client.set_terminated(self.run_id, status=status)

    @contextmanager
    def running(self) -> Iterator["Tracker"]:
        """The run's lifecycle around a block: FINISHED when it completes, FAILED when it raises
        (Ctrl-C included), so no run is left RUNNING by this process."""
        try:
            yield self
        except BaseException:
            self.finish(False)
            raise
        self.finish(True)

    @classmethod
    def start(cls, uri: str, experiment_id: str, name: str, parent: "Tracker | None" = None,
              tags: dict[str, str] | None = None, start_time_ms: int | None = None) -> "Tracker":
        """A new run; ``start_time_ms`` back-dates it to when its work began (a point logged after
        it was measured still shows the measurement's duration)."""
        t = {k: redact(str(v)) for k, v in (tags or {}).items()}
        if parent is not None:
            t["mlflow.parentRunId"] = parent.run_id
        run = MlflowClient(tracking_uri=uri).create_run(experiment_id, start_time=start_time_ms, run_name=name,
                                                         tags=t)
        return cls(uri=uri, run_id=run.info.run_id)


def resolve_checkpoint(ref: str, uri: str, dest: str | Path) -> Path:
    """A checkpoint folder as given, or the ``checkpoint`` artifact of an MLflow run — by run id or
    ``runs:/<run id>/…`` model URI — downloaded under ``dest``."""
    p = Path(ref)
    if (p / "meta.json").is_file():
        return p
    if p.exists():
        raise FileNotFoundError(f"{p} is not a nai3 checkpoint (no meta.json)")
    run_id = ref.removeprefix("runs:/").split("/")[0]
    try:
        local = MlflowClient(tracking_uri=uri).download_artifacts(run_id, "checkpoint", str(Path(dest) / run_id))
    except Exception as e:
        raise FileNotFoundError(f"{ref} is neither a checkpoint folder nor an MLflow run with a 'checkpoint' "
                                f"artifact in {uri}: {e}") from None
    return Path(local)


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} → {'a.b': 1}: MLflow params are flat dotted names."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            for i, item in enumerate(v):
                out.update(flatten(item, f"{key}.{item.get('name', i)}."))
        else:
            out[key] = v
    return out
