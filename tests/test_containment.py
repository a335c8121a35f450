"""Nobody gets in, nothing leaks, second pass: passwords in URLs never printed or stored, no read
or write outside the given folders, a journal that is data and not commands, pickles refused
before work, numeric arguments validated. Each test is a case the outside campaign found."""
import json
import os
import secrets
import stat
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

PASSWORDS = ["p@ss:w0rd!x", "s3cr%40et-pw", "plain-" + "secret-pw"]  # the shapes the campaign used


@pytest.mark.parametrize("user", ["alice", ""])
@pytest.mark.parametrize("password", PASSWORDS)
def test_a_url_password_is_masked_however_it_is_spelled(user, password):
    from urllib.parse import unquote

    from nai3train.ops.secrets import redact, remember, strip_userinfo

    uri = f"https://{user}:{password}@mlflow.internal:5000/api"
    out = redact(f"connect to {uri} failed")
    assert password not in out and f"https://{user}:***@mlflow.internal:5000/api" in out
    assert strip_userinfo(uri) == "https://mlflow.internal:5000/api"
    remember(uri)  # later, the password alone (or percent-decoded) in a library's message
    assert password not in redact(f"auth failed for {password}") and unquote(password) not in \
        redact(f"auth failed for {unquote(password)}")


def test_nothing_nai3_or_mlflow_prints_shows_the_password(tmp_path):
    """An unreachable server: MLflow's error and the traceback go through the one redaction."""
    pw = "p@ss:w0rd!" + secrets.token_hex(4)
    env = dict(os.environ, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="2",
               PREFECT_HOME=str(tmp_path / "prefect"))
    ckpt = tmp_path / "checkpoint"
    ckpt.mkdir()
    (ckpt / "meta.json").write_text(json.dumps({"variant": {"name": "x"}}))
    (ckpt / "config.json").write_text(json.dumps({"kind": "tiny"}))
    p = subprocess.run([sys.executable, "-m", "flows.cli", "eval", str(ckpt), "--work-dir", str(tmp_path / "w"),
                        "--tracking-uri", f"http://bob:{pw}@127.0.0.1:9/"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 3 and "127.0.0.1" in p.stderr  # it did reach for the server
    assert "does not answer" in p.stderr and "Traceback" not in p.stderr
    assert "p@ss" not in p.stdout + p.stderr and "w0rd" not in p.stdout + p.stderr


class _Stub:
    uri = "http://bob:p@ss:w0rd@mlflow.internal/"
    run_id = "0" * 32


def test_a_journal_holds_no_credentials_and_only_its_owner_reads_it(tmp_path):
    from nai3train.ops.buffered import BufferedTracker

    journal = tmp_path / "journals" / "j.jsonl"
    b = BufferedTracker(_Stub(), journal, patience_s=0)
    b._closing = True
    text = journal.read_text()
    assert "w0rd" not in text and json.loads(text.splitlines()[0])["uri"] == "http://mlflow.internal/"
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600


def _store(tmp_path):
    from nai3train.ops.tracking import Tracker, open_experiment

    uri, exp = open_experiment("journals", f"sqlite:///{tmp_path}/mlflow.db")
    _, other = open_experiment("someone-else", uri)
    return uri, Tracker.start(uri, exp, "run"), Tracker.start(uri, other, "theirs")


def _journal(folder: Path, uri: str, run_id: str, *ops: dict) -> Path:
    j = folder / "journals" / "mlflow-journal-x.jsonl"
    j.parent.mkdir(parents=True, exist_ok=True)
    j.write_text("\n".join(json.dumps(x) for x in [{"uri": uri, "run_id": run_id},
                                                    *({"seq": i, **op} for i, op in enumerate(ops))]) + "\n")
    return j


def test_relog_refuses_a_journal_that_asks_for_what_nai3_never_writes(tmp_path):
    from mlflow.tracking import MlflowClient

    from nai3train.ops.buffered import RefusedJournal, relog

    uri, run, theirs = _store(tmp_path)
    work = tmp_path / "work"
    cases = {"another store": ({"op": "tags", "items": {"a": "b"}}, f"sqlite:///{tmp_path}/elsewhere.db"),
             "a file outside": ({"op": "artifact", "path": "/etc/passwd", "artifact_path": None}, uri),
             "an unknown call": ({"op": "delete_run", "items": {}}, uri),
             "another experiment's run": ({"op": "tags", "items": {"a": "b"}, "run_id": theirs.run_id}, uri)}
    for what, (op, journal_uri) in cases.items():
        j = _journal(work, journal_uri, run.run_id, op)
        with pytest.raises(RefusedJournal):
            relog(j, uri)
        assert j.is_file(), what  # refused whole: nothing sent, the journal kept
    assert not (tmp_path / "elsewhere.db").exists()
    assert not MlflowClient(uri).list_artifacts(run.run_id) and "a" not in MlflowClient(uri).get_run(
        theirs.run_id).data.tags
    inside = work / "results" / "note.txt"
    inside.parent.mkdir(parents=True)
    inside.write_text("ok")
    j = _journal(work, uri, run.run_id, {"op": "artifact", "path": str(inside), "artifact_path": None},
                 {"op": "tags", "items": {"x": "1"}})
    assert relog(j, uri) == 2 and not j.exists()  # what nai3 writes is delivered
    assert MlflowClient(uri).get_run(run.run_id).data.tags["x"] == "1"


def test_no_read_through_a_symlink_that_leaves_the_data_folder(tmp_path):
    from nai3train.data import scan_folder, synthesize

    synthesize(tmp_path / "d", 8, 2, 8, seed=0)
    root = tmp_path / "d" / "train"
    outside = tmp_path / "outside"
    (outside / "deep").mkdir(parents=True)
    (outside / "secret.txt").write_text("root:x:0:0, secret_tag\n")
    (outside / "deep" / "img.png").write_bytes((root / "000000.png").read_bytes())
    (root / "000001.txt").unlink()
    (root / "000001.txt").symlink_to(outside / "secret.txt")
    (root / "linked").symlink_to(outside, target_is_directory=True)
    scan = scan_folder(root)
    assert not any("secret_tag" in r.tags or "root:x:0:0" in r.tags for r in scan.records)
    reasons = {Path(s["path"]).name: s["reason"] for s in scan.skipped}
    assert "leaves the dataset folder" in reasons["000001.txt"] and "leaves" in reasons["linked"]
    assert not any(str(outside) in r.path for r in scan.records)


def test_names_cannot_leave_the_work_folder_or_the_store(tmp_path):
    from nai3train.config import ConfigError, load_config

    for bad in ("../../x/exp", "a/b", "x" * 300, "tab\tname"):
        with pytest.raises(ConfigError, match="experiment"):
            load_config("smoke", [f"experiment={json.dumps(bad)}"])
    ckpt = tmp_path / "checkpoint"
    ckpt.mkdir()
    (ckpt / "meta.json").write_text(json.dumps({"variant": {"name": "x"}}))
    (ckpt / "config.json").write_text(json.dumps({"kind": "tiny"}))
    p = subprocess.run([sys.executable, "-m", "flows.cli", "eval", str(ckpt), "--experiment", "../../x/exp",
                        "--work-dir", str(tmp_path / "w"), "--tracking-uri", f"sqlite:///{tmp_path}/m.db"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, PREFECT_HOME=str(tmp_path / "prefect")))
    assert p.returncode == 2 and "--experiment must not contain" in p.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path.parent / "x").exists()


def _safetensors(path: Path, header: bytes, declared: int | None = None) -> Path:
    path.write_bytes(struct.pack("<Q", len(header) if declared is None else declared) + header)
    return path


def test_pickles_and_damaged_weights_are_refused_before_any_work(tmp_path):
    from nai3train.models import pretrained_format
    from nai3train.models.files import RefusedWeights, check_weights_file

    renamed = tmp_path / "model.safetensors"
    renamed.write_bytes(b"\x80\x04\x95" + b"\0" * 64)  # a pickle's first bytes
    with pytest.raises(RefusedWeights, match="pickle"):
        pretrained_format(str(renamed), str(tmp_path))
    for damaged in (_safetensors(tmp_path / "huge.safetensors", b"{}", declared=2**40),
                    _safetensors(tmp_path / "lies.safetensors", b"[1, 2]"),
                    _safetensors(tmp_path / "cut.safetensors", b'{"a": {"dtype"')):
        with pytest.raises(RefusedWeights, match="not a readable safetensors"):
            check_weights_file(damaged, "model")
    folder = tmp_path / "sdxl"
    (folder / "unet").mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")
    (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"PK\x03\x04")
    with pytest.raises(RefusedWeights, match="pickle"):
        pretrained_format(str(folder))
    inception = tmp_path / "inception.pth"
    inception.write_bytes(b"PK\x03\x04" + b"\0" * 16)
    real = tmp_path / "real"
    real.mkdir()
    cmd = [sys.executable, "-m", "flows.cli", "metrics", str(real), str(real), "--features", "inception",
           "--inception", str(inception)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "is a pickle" in p.stderr and "--allow-pickle" in p.stderr
    p = subprocess.run(cmd + ["--allow-pickle"], capture_output=True, text=True, timeout=300)
    assert "is a pickle" not in p.stderr  # the documented exception goes on (to torch.load(weights_only=True))


def test_numeric_arguments_are_validated_like_config_values():
    for args in (["claims", "validate", "--tau", "nan"], ["claims", "validate", "--s-w", "-1"],
                 ["schedule", "--steps", "100000000"], ["schedule", "--first-sigma", "nan"]):
        p = subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, timeout=120,
                           cwd=ROOT)
        assert p.returncode == 2 and ("finite" in p.stderr or "must be" in p.stderr), args
