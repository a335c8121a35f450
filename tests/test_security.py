"""Nobody in, nothing leaked (fault matrix, issue 14): the team servers refuse to start without
their secrets and refuse unauthenticated requests (real servers); secrets never reach MLflow,
the console or the repository."""
import base64
import os
import re
import secrets
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from .servers import BIN, ROOT, _free_port, _start, _stop, _wait


def _status(url: str, auth: tuple[str, str] | None = None, body: bytes | None = None) -> int:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def _clean_env(**extra: str) -> dict:
    keep = {k: v for k, v in os.environ.items() if not re.search(r"PASSWORD|AUTH_STRING|TOKEN", k)}
    return dict(keep, MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="1", MLFLOW_BIN=str(BIN / "mlflow"),
                PREFECT_BIN=str(BIN / "prefect"), **extra)


def test_redact_masks_env_secrets_url_passwords_and_auth_strings(monkeypatch):
    from nai3train.ops.secrets import redact

    pw, auth_pw = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", pw)
    monkeypatch.setenv("PREFECT_API_AUTH_STRING", f"admin:{auth_pw}")
    text = f"failed: http://bob:hunter2x@db.internal:5432/x with {pw} and Basic admin:{auth_pw}"
    out = redact(text)
    assert pw not in out and auth_pw not in out and "hunter2x" not in out
    assert "http://bob:***@db.internal:5432/x" in out
    assert redact("plain text, no secrets: http://host:5000/#/experiments/1") == \
        "plain text, no secrets: http://host:5000/#/experiments/1"


def test_secrets_never_reach_mlflow_params_tags_or_cli_errors(tmp_path, monkeypatch, capsys):
    from mlflow.tracking import MlflowClient

    from flows.cli import main as nai3
    from nai3train.ops.tracking import Tracker, ensure_experiment

    pw = secrets.token_urlsafe(12)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", pw)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    exp = ensure_experiment(MlflowClient(uri), "secrets", None)
    run = Tracker.start(uri, exp, "r", tags={"nai3.note": f"started by user:{pw}"})
    run.log_params({"tracking_uri": f"https://alice:{pw}@mlflow.internal", "other": "fine"})
    run.set_tags({"nai3.error": f"HTTP 401 for password {pw}"})
    got = MlflowClient(uri).get_run(run.run_id).data
    stored = " ".join([*got.params.values(), *got.tags.values()])
    assert pw not in stored and "***" in stored and got.params["other"] == "fine"

    assert nai3(["eval", str(tmp_path / f"model-{pw}"), "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert "error" in err and pw not in err and "***" in err


def test_no_password_or_token_is_committed():
    """No literal secret in any tracked file: a quoted value assigned to a secret-named key, or a
    shell/env line ``…PASSWORD=value``. Values read from the environment (``$VAR``, ``os.environ``)
    or generated (``secrets.…``) are fine."""
    quoted = re.compile(r"(?i)(password|passwd|auth_string|secret|token)\w*[\"']?\s*[=:]\s*[\"']"
                        r"(?!\$|…|\{|\*\*\*)[^\"'\s]{6,}[\"']")
    env_line = re.compile(r"^\s*(export\s+)?[A-Z_]*(PASSWORD|TOKEN|SECRET|AUTH_STRING)[A-Z_]*="
                          r"(?![\"']?\$|…|\{)[^\s\"']{6,}")
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    hits = []
    for f in files:
        p = ROOT / f
        if p.suffix in {".png", ".jpg", ".webp", ".safetensors"} or not p.is_file():
            continue
        for n, line in enumerate(p.read_text(errors="ignore").splitlines(), 1):
            if (quoted.search(line) or env_line.search(line)) and "tokenizer" not in line.lower():
                hits.append(f"{f}:{n}: {line.strip()[:120]}")
    assert not hits, "literal secrets in the repository:\n" + "\n".join(hits)
    key, value = "PG" + "PASS" + "WORD", secrets.token_hex(6)  # positive controls, built so this file stays clean
    assert quoted.search(f'{key}: "{value}"') and env_line.search(f"{key}={value}")
    assert not env_line.search(f'{key}="${key}"') and not quoted.search(f"{key.lower()} = os.environ['X']")


@pytest.mark.parametrize("script, var", [("mlflow/serve-team.sh", "MLFLOW_AUTH_ADMIN_PASSWORD"),
                                         ("flows/serve-team.sh", "PREFECT_SERVER_API_AUTH_STRING")])
def test_team_servers_refuse_to_start_without_their_secret(script, var, tmp_path):
    p = subprocess.run(["bash", str(ROOT / script)], env=_clean_env(MLFLOW_STATE_DIR=str(tmp_path)),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and var in p.stderr


@pytest.mark.slow
def test_team_mlflow_server_refuses_unauthenticated_requests(tmp_path):
    from mlflow.tracking import MlflowClient

    from nai3train.ops.tracking import Tracker, ensure_experiment

    pw, port = secrets.token_urlsafe(16), _free_port()
    env = _clean_env(MLFLOW_AUTH_ADMIN_PASSWORD=pw, MLFLOW_STATE_DIR=str(tmp_path / "state"), MLFLOW_PORT=str(port))
    base = f"http://127.0.0.1:{port}"
    proc = _start(["bash", str(ROOT / "mlflow/serve-team.sh")], env, tmp_path / "mlflow.log")
    try:
        _wait(base + "/health", proc, any_status=True)
        search = base + "/api/2.0/mlflow/experiments/search?max_results=5"
        assert _status(search) == 401
        assert _status(search, ("admin", "not-the-password")) == 401
        assert _status(search, ("admin", pw)) == 200
        os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = "admin", pw
        try:
            exp = ensure_experiment(MlflowClient(base), "team", None)
            run = Tracker.start(base, exp, "authenticated")
            run.log_params({"ok": 1})
            run.finish()
            assert MlflowClient(base).get_run(run.run_id).info.status == "FINISHED"
        finally:
            del os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]
        for f in (tmp_path / "state").rglob("*.ini"):
            assert pw not in f.read_text()
        cmdlines = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        assert pw not in cmdlines
    finally:
        _stop(proc)


@pytest.mark.slow
def test_team_prefect_server_refuses_unauthenticated_requests(tmp_path):
    pw, port = secrets.token_urlsafe(16), _free_port()
    env = _clean_env(PREFECT_SERVER_API_AUTH_STRING=f"admin:{pw}", PREFECT_PORT=str(port),
                     PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    api = f"http://127.0.0.1:{port}/api"
    proc = _start(["bash", str(ROOT / "flows/serve-team.sh")], env, tmp_path / "prefect.log")
    try:
        _wait(api + "/health", proc, any_status=True)
        deadline = time.time() + 120
        while _status(api + "/flows/filter", ("admin", pw), b"{}") != 200 and time.time() < deadline:
            time.sleep(1)
        assert _status(api + "/flows/filter", body=b"{}") == 401
        assert _status(api + "/flows/filter", ("admin", "wrong-password"), body=b"{}") == 401
        assert _status(api + "/flows/filter", ("admin", pw), body=b"{}") == 200
        client = dict(_clean_env(PREFECT_HOME=str(tmp_path / "client"), PREFECT_API_URL=api))
        cmd = [str(BIN / "prefect"), "--no-prompt", "work-pool", "ls"]
        denied = subprocess.run(cmd, env=client, capture_output=True, text=True, timeout=120)
        allowed = subprocess.run(cmd, env=dict(client, PREFECT_API_AUTH_STRING=f"admin:{pw}"), capture_output=True,
                                 text=True, timeout=120)
        assert denied.returncode != 0 and allowed.returncode == 0, (denied.stdout[-500:], allowed.stderr[-500:])
    finally:
        _stop(proc)
