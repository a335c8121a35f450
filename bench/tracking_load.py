"""Load test of the team MLflow tracking server: does it keep up with N workers logging at once, and
does it keep every write?

A team runs one tracking server (``mlflow/serve-team.sh``: the basic-auth app, proxied artifacts,
PostgreSQL underneath) for every GPU worker. This starts exactly that on loopback — a throw-away
PostgreSQL cluster, the server through ``serve-team.sh`` itself — then N writer processes, each
with its own ``MlflowClient`` and logged in as a team member (a non-admin user, like the workers
in docs/operations.md, "Team setup"), each logging as a nai3 training and evaluation do: a run,
a batch of params, tags one call each, a ``log_batch`` of metrics per step, every few steps a
small artifact uploaded through the server, and ``set_terminated`` FINISHED. Writers log back to
back (``--interval 0``: the worst case, every writer always has a call in flight) for
``--seconds``, at most ``--max-steps`` steps each. Every call is timed; failed calls are counted
by kind. Afterwards everything is read back through the API and every acknowledged write that is
missing (a metric value at its step, a param, a tag, an artifact, a FINISHED status) counts as
lost.

Prints per N: writers, calls, calls/s, p50 and p99 latency, errors, lost (per call kind to
stderr). With ``--sweep`` the last line is the largest N whose p99 stays under 1 s with no
error and nothing lost; the target is p99 < 1 s at N = 16. Exits 1 if anything was lost, 2
if PostgreSQL is not installed (``--sqlite`` runs on serve-team.sh's SQLite default instead).
Servers are killed and the temporary folder removed at exit, Ctrl-C included.

    .venv/bin/python bench/tracking_load.py                          # N = 16 for 20 s
    .venv/bin/python bench/tracking_load.py --sweep 1,2,4,8,16,32    # the largest N with p99 < 1 s
    .venv/bin/python bench/tracking_load.py --writers 2 --seconds 3 --server-workers 1   # does it run
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import multiprocessing as mp
import os
import queue
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.context import BaseContext
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunStatus
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.servers import pg_bin, start_postgres  # noqa: E402  (the tests' throw-away cluster)
BIN = Path(sys.executable).parent
TARGET_S, TARGET_N = 1.0, 16
USER = "worker"  # the team member every writer logs in as (docs/operations.md, "Team setup")
METRICS = ("train/loss", "train/lr", "train/grad_norm", "train/images_per_s", "eval/kid_tagger", "eval/clip_score")
ARTIFACT_BYTES = 4096


# --- servers ---------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """A server in its own session, so ``stop`` kills it with everything it started."""
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    """Until ``url`` answers at all (the auth app may answer 401)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer in {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def session_cpu_s(sid: int) -> float:
    """CPU seconds used so far by the live processes of session ``sid``."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def settle(sid: int, timeout: float = 120) -> None:
    """Until the server's processes use under a tenth of a core: after it answers, MLflow still starts
    its job runner (several processes), which would otherwise be measured as the load's cost."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        used = session_cpu_s(sid)
        time.sleep(2)
        if session_cpu_s(sid) - used < 0.2:
            return


def start_mlflow(root: Path, pg_port: int | None, admin_password: str,
                 workers: int | None) -> tuple[subprocess.Popen, str]:
    """``mlflow/serve-team.sh`` on a free loopback port: on the cluster at ``pg_port`` (store and user
    store), or on the script's SQLite defaults when ``pg_port`` is None. Returns (process, URL)."""
    port = free_port()
    env = dict(os.environ, MLFLOW_AUTH_ADMIN_PASSWORD=admin_password, MLFLOW_STATE_DIR=str(root / "mlflow"),
               MLFLOW_HOST="127.0.0.1", MLFLOW_PORT=str(port), MLFLOW_BIN=str(BIN / "mlflow"))
    if pg_port is not None:
        pg = f"postgresql+psycopg://postgres@127.0.0.1:{pg_port}"
        env.update(MLFLOW_BACKEND_STORE_URI=f"{pg}/mlflow", MLFLOW_AUTH_DATABASE_URI=f"{pg}/mlflow_auth")
    log = root / "mlflow.log"
    extra = ["--workers", str(workers)] if workers else []
    proc = start(["bash", str(ROOT / "mlflow/serve-team.sh"), *extra], env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/health", proc, log)
        settle(proc.pid)
    except BaseException:
        stop(proc)
        raise
    return proc, url


def create_user(url: str, admin_password: str, username: str, password: str) -> None:
    """A team member's account, created by the admin (as `create_user` of the auth client does)."""
    auth = base64.b64encode(f"admin:{admin_password}".encode()).decode()
    req = urllib.request.Request(f"{url}/api/2.0/mlflow/users/create",
                                 data=json.dumps({"username": username, "password": password}).encode(),
                                 headers={"Content-Type": "application/json", "Authorization": f"Basic {auth}"})
    urllib.request.urlopen(req, timeout=30).close()


# --- writers ---------------------------------------------------------------------------------------

@dataclass
class Written:
    """What one writer logged (acknowledged writes only) and how its calls went."""

    run_id: str | None = None
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    artifacts: dict[str, int] = field(default_factory=dict)  # path -> size
    finished: bool = False
    latencies: dict[str, list[float]] = field(default_factory=dict)  # call kind -> seconds
    errors: Counter = field(default_factory=Counter)  # "call: ExceptionType" -> count
    span: tuple[float, float] = (0.0, 0.0)  # wall clock of the first call's start and the last call's end


@dataclass(frozen=True)
class Plan:
    uri: str
    experiment_id: str
    seconds: float
    max_steps: int
    artifact_every: int
    interval: float
    folder: str


def timed(w: Written, kind: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[bool, Any]:
    """Run one client call, its latency recorded: (True, its result), or (False, None) with the
    error counted if it raised."""
    t0 = time.perf_counter()
    try:
        return True, call(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 — every failure is a data point here
        w.errors[f"{kind}: {type(e).__name__}"] += 1
        return False, None
    finally:
        w.latencies.setdefault(kind, []).append(time.perf_counter() - t0)


def params_of(i: int) -> dict[str, str]:
    """~30 params, as a nai3 run logs its resolved config."""
    keys = [f"train.{k}" for k in ("steps", "batch_size", "lr", "warmup", "ema", "seed", "grad_clip", "log_every",
                                   "checkpoint_every", "min_snr_gamma")]
    keys += [f"eval.{k}" for k in ("prompts", "seeds_per_prompt", "steps", "cfg_scale", "sampler", "tagger_steps")]
    keys += [f"variant.{k}" for k in ("name", "prediction", "schedule", "ztsnr", "sigma_max", "weighting")]
    keys += [f"data.{k}" for k in ("train_size", "eval_size", "resolution", "buckets", "caption_dropout")]
    keys += ["experiment", "run_key", "git_sha"]
    return {k: f"{k}-value-{i}" for k in keys}


def log_step(client: MlflowClient, w: Written, step: int) -> None:
    now = int(time.time() * 1000)
    values = {k: step * 0.001 + j for j, k in enumerate(METRICS)}
    if timed(w, "log_batch metrics", client.log_batch, w.run_id,
             metrics=[Metric(k, v, now, step) for k, v in values.items()])[0]:
        for k, v in values.items():
            w.metrics.setdefault(k, []).append((step, v))


def log_sample(client: MlflowClient, w: Written, step: int, folder: Path) -> None:
    """A few-KB file through the server's artifact proxy (nai3 logs JSON and images this way)."""
    f = folder / f"step-{step:06d}.json"
    f.write_text(json.dumps({"step": step, "pad": "x" * ARTIFACT_BYTES}))
    if timed(w, "log_artifact", client.log_artifact, w.run_id, str(f), "samples")[0]:
        w.artifacts[f"samples/{f.name}"] = f.stat().st_size
    f.unlink()


def start_run(client: MlflowClient, w: Written, i: int, experiment_id: str) -> None:
    """The run, its params in one batch and its tags one call each, as ``nai3train.ops.tracking.Tracker`` logs them."""
    tags = {"nai3.kind": "train", "nai3.variant": f"variant-{i % 2}", "nai3.seed": str(i)}
    ok, run = timed(w, "create_run", client.create_run, experiment_id, run_name=f"writer-{i}", tags=tags)
    if not ok:
        return
    w.run_id = run.info.run_id
    w.tags.update(tags)
    params = params_of(i)
    if timed(w, "log_batch params", client.log_batch, w.run_id, params=[Param(k, v) for k, v in params.items()])[0]:
        w.params.update(params)
    for k, v in {"nai3.run_key": f"{i:012x}", "nai3.config_sha": f"{i:016x}", "nai3.host": "bench"}.items():
        if timed(w, "set_tag", client.set_tag, w.run_id, k, v)[0]:
            w.tags[k] = v


def log_run(client: MlflowClient, w: Written, i: int, plan: Plan, folder: Path) -> None:
    """Everything one writer logs, from ``create_run`` to ``set_terminated``."""
    t0, w.span = time.perf_counter(), (time.time(), 0.0)
    start_run(client, w, i, plan.experiment_id)
    if w.run_id is not None:
        for step in range(1, plan.max_steps + 1):  # at least one step, however slow the server
            log_step(client, w, step)
            if step % plan.artifact_every == 0:
                log_sample(client, w, step, folder)
            if time.perf_counter() - t0 >= plan.seconds:
                break
            time.sleep(plan.interval)
        w.finished = timed(w, "set_terminated", client.set_terminated, w.run_id,
                           RunStatus.to_string(RunStatus.FINISHED))[0]
    w.span = (w.span[0], time.time())


def write(i: int, plan: Plan, barrier: Barrier, out: Queue) -> None:
    """One writer process: waits for all, logs one run; puts (i, its ``Written``) on ``out``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops the writers
    client, w = MlflowClient(tracking_uri=plan.uri), Written()
    folder = Path(plan.folder) / f"writer-{i}"
    folder.mkdir()
    barrier.wait(timeout=300)
    with contextlib.redirect_stdout(io.StringIO()):  # set_terminated prints the run's URL
        log_run(client, w, i, plan, folder)
    out.put((i, w))


def run_writers(ctx: BaseContext, n: int, plan: Plan) -> list[Written]:
    """``n`` writer processes started together; their records once all have finished."""
    barrier, out = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=write, args=(i, plan, barrier, out), daemon=True) for i in range(n)]
    results: dict[int, Written] = {}
    deadline = time.time() + plan.seconds + 600
    try:
        for p in procs:
            p.start()
        while len(results) < n:
            try:
                i, w = out.get(timeout=1)
                results[i] = w
            except queue.Empty:
                crashed = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                if crashed or time.time() > deadline:
                    raise RuntimeError(f"writers crashed (exit codes {crashed}) or hung") from None
        for p in procs:
            p.join(timeout=60)
        return [results[i] for i in range(n)]
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()


# --- read back and report --------------------------------------------------------------------------

def lost_in(client: MlflowClient, w: Written) -> Counter:
    """Acknowledged writes of one writer that the server does not return, by kind."""
    lost: Counter = Counter()
    if w.run_id is None:
        return lost
    run = client.get_run(w.run_id)
    lost["param"] = sum(run.data.params.get(k) != v for k, v in w.params.items())
    lost["tag"] = sum(run.data.tags.get(k) != v for k, v in w.tags.items())
    lost["run not FINISHED"] = int(w.finished and run.info.status != "FINISHED")
    for key, points in w.metrics.items():
        stored = {(m.step, m.value) for m in client.get_metric_history(w.run_id, key)}
        lost["metric value"] += sum(p not in stored for p in points)
    stored_files = {f.path: f.file_size for f in client.list_artifacts(w.run_id, "samples")}
    lost["artifact"] = sum(stored_files.get(p) != size for p, size in w.artifacts.items())
    return +lost


def percentile(xs: list[float], q: int) -> float:
    if len(xs) < 2:
        return xs[0] if xs else float("nan")
    return statistics.quantiles(xs, n=100, method="inclusive")[q - 1]


@dataclass
class Point:
    writers: int
    calls: int
    per_s: float
    p50: float
    p99: float
    errors: int
    lost: int

    def line(self) -> str:
        return (f"writers {self.writers}: calls {self.calls}, {self.per_s:.1f} calls/s, p50 {self.p50 * 1e3:.1f} ms, "
                f"p99 {self.p99 * 1e3:.1f} ms, errors {self.errors}, lost {self.lost}")


def summarize(n: int, written: list[Written], lost: Counter) -> Point:
    by_kind: dict[str, list[float]] = {}
    for w in written:
        for kind, xs in w.latencies.items():
            by_kind.setdefault(kind, []).extend(xs)
    for kind, xs in sorted(by_kind.items()):
        p50, p99 = percentile(xs, 50) * 1e3, percentile(xs, 99) * 1e3
        print(f"  {kind}: {len(xs)} calls, p50 {p50:.1f} ms, p99 {p99:.1f} ms", file=sys.stderr)
    errors = sum((w.errors for w in written), Counter())
    for what, count in errors.most_common():
        print(f"  error {what}: {count}", file=sys.stderr)
    for what, count in lost.most_common():
        print(f"  lost {what}: {count}", file=sys.stderr)
    every = [x for xs in by_kind.values() for x in xs]
    span = max(w.span[1] for w in written) - min(w.span[0] for w in written)
    return Point(n, len(every), len(every) / span, percentile(every, 50), percentile(every, 99),
                 sum(errors.values()), sum(lost.values()))


def measure(ctx: BaseContext, url: str, n: int, args: argparse.Namespace, folder: Path) -> Point:
    """One load point: a fresh experiment, ``n`` writers, everything read back."""
    client = MlflowClient(tracking_uri=url)
    experiment_id = client.create_experiment(f"tracking-load-n{n}-{secrets.token_hex(3)}")
    print(f"N = {n}: {n} writers for {args.seconds:g} s (load average {os.getloadavg()[0]:.1f}) …", file=sys.stderr)
    plan = Plan(url, experiment_id, args.seconds, args.max_steps, args.artifact_every, args.interval, str(folder))
    written = run_writers(ctx, n, plan)
    with ThreadPoolExecutor(8) as pool:  # reading back is not measured: overlap its calls
        lost = sum(pool.map(lambda w: lost_in(client, w), written), Counter())
    point = summarize(n, written, lost)
    print(point.line(), flush=True)
    return point


def verdict(points: list[Point]) -> str:
    if len(points) == 1:
        p = points[0]
        return f"p99 {p.p99:.2f} s at N = {p.writers} (target < {TARGET_S:g} s), lost {p.lost}"
    good = [p.writers for p in points if p.p99 < TARGET_S and p.errors == 0 and p.lost == 0]
    return (f"largest N with p99 < {TARGET_S:g} s: {max(good) if good else 'none'} "
            f"(target: p99 < {TARGET_S:g} s at N = {TARGET_N})")


# --- main ------------------------------------------------------------------------------------------

def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--writers", type=int, default=TARGET_N, help="concurrent writer processes (default %(default)s)")
    ap.add_argument("--sweep", type=lambda s: [int(x) for x in s.split(",")],
                    help="comma-separated N to measure in turn (e.g. 1,2,4,8,16,32), replaces --writers")
    ap.add_argument("--seconds", type=float, default=20, help="how long each writer logs (default %(default)s)")
    ap.add_argument("--max-steps", type=int, default=5000,
                    help="at most this many steps per writer, at least one (default %(default)s)")
    ap.add_argument("--artifact-every", type=int, default=10,
                    help="a small artifact every this many steps (default %(default)s)")
    ap.add_argument("--interval", type=float, default=0.0,
                    help="seconds a writer waits between steps (default 0: back to back, the worst case)")
    ap.add_argument("--server-workers", type=int,
                    help="the tracking server's --workers (default: serve-team.sh's default, MLflow's 4)")
    ap.add_argument("--sqlite", action="store_true", help="SQLite store instead of PostgreSQL (no PostgreSQL needed)")
    return ap.parse_args()


def client_env() -> str:
    """Writers' environment, set before the first writer process exists: one thread each, nai3's HTTP
    retry settings (nai3train/ops/tracking.py), a team member's login. Returns that member's password."""
    password = secrets.token_urlsafe(16)
    os.environ.update(OMP_NUM_THREADS="1", MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="1",
                      MLFLOW_HTTP_REQUEST_MAX_RETRIES="3", MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="1",
                      MLFLOW_HTTP_REQUEST_TIMEOUT="30",
                      MLFLOW_TRACKING_USERNAME=USER, MLFLOW_TRACKING_PASSWORD=password)
    return password


def main() -> int:
    args = parse()
    if not args.sqlite:
        try:
            pg_bin("initdb")
        except FileNotFoundError as e:
            print(f"tracking_load: {e}; or run with --sqlite", file=sys.stderr)
            return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the finally below also runs on SIGTERM
    admin_password = secrets.token_urlsafe(16)
    password = client_env()
    # writers fork from multiprocessing's fork server, which imports this module (mlflow with it) once and
    # never opens a connection: fast starts, no socket shared with this process
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["__main__"])
    root = Path(tempfile.mkdtemp(prefix="nai3-load-"))
    servers: list[subprocess.Popen] = []
    try:
        pg_port = None
        if not args.sqlite:
            # fsync on, as on a real database server; connections for every server worker's pools
            pg, pg_port, _ = start_postgres(["mlflow", "mlflow_auth"], root, {"max_connections": "300"})
            servers.append(pg)
        print(f"starting the tracking server ({'SQLite' if args.sqlite else 'PostgreSQL'}) …", file=sys.stderr)
        t0 = time.time()
        mlflow, url = start_mlflow(root, pg_port, admin_password, args.server_workers)
        print(f"  up and idle after {time.time() - t0:.0f} s", file=sys.stderr)
        servers.insert(0, mlflow)
        create_user(url, admin_password, USER, password)
        folder = root / "writers"
        folder.mkdir()
        points = []
        for n in args.sweep or [args.writers]:
            run_folder = folder / f"n{n}"
            run_folder.mkdir()
            points.append(measure(ctx, url, n, args, run_folder))
        print(verdict(points))
        return 1 if any(p.lost for p in points) else 0
    except KeyboardInterrupt:
        print("tracking_load: interrupted", file=sys.stderr)
        return 130
    finally:
        for proc in servers:
            stop(proc)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
