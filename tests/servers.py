"""Real servers for the end-to-end tests: free loopback ports, start in their own process group,
wait for health, read the REST API, kill the whole group."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, proc: subprocess.Popen, timeout: float = 180, any_status: bool = False) -> None:
    """Until ``url`` answers 200 — or, with ``any_status``, answers at all (an auth-protected health
    check answers 401)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early ({proc.returncode}): {url}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except urllib.error.HTTPError:
            if any_status:
                return
            time.sleep(0.5)
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(url)


def _api(base: str, path: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(base + path, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def _start(cmd: list[str], env: dict, log: Path, cwd: Path = ROOT) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)



def kill_by_env(marker: str) -> int:
    """SIGKILL every process whose environment holds ``marker`` (e.g. this test's PREFECT_API_URL):
    flow-run processes a process worker started live in their own session and outlive a killed
    worker, so they are found by what the test gave them, not by process group."""
    n = 0
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            if marker.encode() in (d / "environ").read_bytes().split(b"\0"):
                os.kill(int(d.name), signal.SIGKILL)
                n += 1
        except (OSError, ProcessLookupError):
            continue
    return n


def start_mlflow(root: Path, port: int, env: dict | None = None, log_name: str = "mlflow.log") -> subprocess.Popen:
    """An MLflow tracking server on SQLite + proxied artifacts under ``root``, healthy on return."""
    proc = _start([str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
                   "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
                   "--workers", "1"], env or dict(os.environ), root / log_name)
    _wait(f"http://127.0.0.1:{port}/health", proc)
    return proc


def _unprivileged() -> list[str]:
    """A command prefix that drops root (PostgreSQL refuses to run as root; CI runs as root)."""
    if os.geteuid() != 0:
        return []
    import pwd

    for user in ("postgres", "nobody"):
        try:
            pwd.getpwnam(user)
            return ["setpriv", f"--reuid={user}", f"--regid={pwd.getpwnam(user).pw_gid}", "--clear-groups"]
        except KeyError:
            continue
    raise RuntimeError("running as root with neither a 'postgres' nor a 'nobody' user to run PostgreSQL as")


def pg_bin(name: str) -> str:
    """A PostgreSQL server program (initdb, postgres): on PATH or in Debian's versioned folder."""
    import shutil

    found = shutil.which(name)
    if found:
        return found
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (folder / name).is_file():
            return str(folder / name)
    raise FileNotFoundError(f"PostgreSQL's {name} is not installed (apt-get install postgresql)")


TEST_SETTINGS = {"fsync": "off"}  # a test's cluster holds throw-away data


def start_postgres(databases: list[str], root: Path | None = None,
                   settings: dict[str, str] | None = None) -> tuple[subprocess.Popen, int, Path]:
    """A throw-away PostgreSQL cluster on a free loopback port (trust auth: nothing else can reach
    it) with ``databases`` created, in ``root`` or a fresh folder under the system temp dir
    (pytest's tmp_path sits in a root-only folder the unprivileged server could not reach); the
    caller stops the process and removes the folder. ``settings`` go to the server as ``-c k=v``
    (a benchmark keeps fsync on, as on a real database server)."""
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="nai3-pg-")) if root is None else root
    data, port = root / "pgdata", _free_port()
    drop = _unprivileged()
    if drop:
        shutil.chown(root, drop[1].split("=", 1)[1])
    subprocess.run([*drop, pg_bin("initdb"), "-D", str(data), "--auth=trust", "-U", "postgres", "-E", "UTF8"],
                   check=True, capture_output=True, timeout=120)
    proc = _run_postgres(root, port, TEST_SETTINGS if settings is None else settings)
    psql = [pg_bin("psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-c"]
    try:
        for db in databases:
            subprocess.run([*psql, f"create database {db}"], check=True, capture_output=True)
    except BaseException:
        _stop(proc)
        raise
    return proc, port, root


def _run_postgres(root: Path, port: int, settings: dict[str, str]) -> subprocess.Popen:
    """The cluster under ``root`` served on ``port``; returns once it accepts queries."""
    options = [arg for k, v in settings.items() for arg in ("-c", f"{k}={v}")]
    proc = _start([*_unprivileged(), pg_bin("postgres"), "-D", str(root / "pgdata"), "-p", str(port), "-k", str(root),
                   "-c", "listen_addresses=127.0.0.1", *options], dict(os.environ), root / "postgres.log")
    psql = [pg_bin("psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-c", "select 1"]
    deadline = time.time() + 60
    while subprocess.run(psql, capture_output=True).returncode != 0:
        if proc.poll() is not None or time.time() > deadline:
            _stop(proc)
            raise RuntimeError(f"PostgreSQL did not start: {(root / 'postgres.log').read_text()[-2000:]}")
        time.sleep(0.3)
    return proc


def restart_postgres(proc: subprocess.Popen, root: Path, port: int, down_s: float = 3.0) -> subprocess.Popen:
    """Kill the cluster hard (SIGKILL, as a crashed database host) and serve it again on the same
    port after ``down_s``: clients see dropped connections, then a server that recovered its log."""
    _stop(proc)
    time.sleep(down_s)
    return _run_postgres(root, port, TEST_SETTINGS)
