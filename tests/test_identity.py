"""Identities follow the numbers, and the fingerprint catches a boundary drawn wrong."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flows import identity, runs
from flows.fingerprint import BoundaryBreach, Fingerprint, check
from flows.identity import Identity, code_digest

ROOT = Path(__file__).resolve().parents[1]


def test_code_digest_reads_code_not_comments_docstrings_or_layout():
    base = code_digest('"""Module."""\nimport math\n\n\ndef f(x):\n    """Doc."""\n    return math.sqrt(x) + 1\n')
    assert code_digest('import math\n\n\ndef f(x):  # why\n    return (math.sqrt(x)\n            + 1)\n') == base
    assert code_digest('"""Other words."""\nimport math\n\n\ndef f(x):\n    return math.sqrt(x) + 1\n') == base
    assert code_digest('import math\n\n\ndef f(x):\n    return math.sqrt(x) + 2\n') != base
    assert code_digest('x = 1\ny = "a string after code is code"\n') != code_digest('x = 1\n')


def test_identity_names_what_changed():
    before = Identity("training", {"a.py": "1", "b.py": "2", "c.py": "3"}, {"python": "3.11", "torch": "2.9.1"})
    after = Identity("training", {"a.py": "1", "b.py": "9", "d.py": "4"}, {"python": "3.11", "torch": "2.10.0"})
    assert after.digest != before.digest and Identity.from_dict(after.to_dict()) == after
    assert after.changes_from(before) == ["torch 2.9.1 → 2.10.0", "b.py changed", "d.py added", "c.py removed"]
    assert before.changes_from(before) == []


def test_the_boundary_is_where_the_layout_says():
    """Training identity: all of nai3train but ops/; evaluation identity: no reporting, claims or
    training loop; nothing that measures imports the reporting side."""
    train = set(identity.training_identity().files)
    assert "nai3train/trainer.py" in train and "nai3train/training/lr.py" in train
    assert "nai3train/diffusion/parameterization.py" in train and "nai3train/data/bucketing.py" in train
    assert not [f for f in train if f.startswith(("nai3train/ops/", "nai3eval/", "flows/"))]
    ev = set(identity.evaluation_identity().files)
    assert {"nai3eval/sampling.py", "nai3eval/metrics/brightness.py", "nai3train/diffusion/samplers.py"} <= ev
    assert not [f for f in ev if f.startswith(("nai3eval/reporting/", "nai3eval/claims/", "nai3train/ops/",
                                               "nai3train/training/", "flows/"))]
    assert "nai3eval/tagger.py" in identity.instrument_identity().files
    assert set(identity.training_identity().libraries) >= {"torch", "diffusers", "python"}
    from tests.test_layout import _internal_imports

    for f in (ROOT / "nai3eval").rglob("*.py"):
        rel = f.relative_to(ROOT).as_posix()
        if rel.startswith(("nai3eval/reporting/", "nai3eval/claims/")):
            continue
        bad = {m for m in _internal_imports(f, "nai3eval") if m.startswith(("nai3eval.reporting", "nai3eval.claims"))}
        assert not bad, f"{rel} measures, yet imports the reporting side: {bad}"


PROBE = """
import json
from flows import identity
from flows.fingerprint import fingerprint
from nai3train.config import load_config
cfg = load_config("smoke", [])
print(json.dumps({"identity": identity.training_identity().digest,
                  "fingerprint": fingerprint(cfg, cfg.variants[1]).text}))
"""


def _probe(code: Path) -> tuple[str, Fingerprint]:
    env = dict(os.environ, PYTHONPATH=str(code), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=code, env=env, capture_output=True, text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    return got["identity"], Fingerprint.parse(got["fingerprint"])


def test_fingerprint_catches_a_numeric_edit_outside_the_training_identity(tmp_path):
    """Positive control for the boundary: a progress bar that drops a step keeps the identity (it
    lives in ops/) but changes numbers; the fingerprint says so. An unused function does neither."""
    code = tmp_path / "code"
    for pkg in ("nai3train", "nai3eval", "flows"):
        shutil.copytree(ROOT / pkg, code / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    base_id, base = _probe(code)
    assert base_id == identity.training_identity().digest
    progress = code / "nai3train" / "ops" / "progress.py"
    progress.write_text(progress.read_text() + "\n\ndef _unused():\n    return 1\n")
    same_id, same = _probe(code)
    assert same_id == base_id and same.matches(base)
    src = progress.read_text()
    planted = src.replace('    stream = stream or sys.stderr\n',
                          '    stream = stream or sys.stderr\n    iterable = list(iterable)[1:] if iterable is not None '
                          'else None\n', 1)
    assert planted != src
    progress.write_text(planted)
    planted_id, planted_fp = _probe(code)
    assert planted_id == base_id  # the identity cannot see it: progress.py is on the ops side
    assert not planted_fp.matches(base)
    with pytest.raises(BoundaryBreach, match="fingerprint"):
        check(base, planted_fp, "nai-v-ztsnr")


def test_a_stored_run_with_another_fingerprint_is_not_reused(tmp_path, caplog):
    """In a nightly the breach is not answered with the old weights: the run is passed over, loudly."""
    from nai3train.ops.tracking import Tracker, open_experiment

    uri, exp = open_experiment("fingerprints", f"sqlite:///{tmp_path}/mlflow.db")
    fp = Fingerprint((1.0, 2.0, 0.5))
    run = Tracker.start(uri, exp, "train/x", tags={"nai3.kind": "train", "nai3.run_key": "k",
                                                     "nai3.train_identity": "abc", "nai3.fingerprint": fp.text})
    run.finish(True)
    assert runs.find_finished_training(uri, exp, "k", "abc", Fingerprint((1.0, 2.0, 0.5000001))).info.run_id \
        == run.run_id  # within the tolerance: the last bits of a float sum
    assert runs.find_finished_training(uri, exp, "k", "other", fp) is None
    with caplog.at_level("ERROR"):
        assert runs.find_finished_training(uri, exp, "k", "abc", Fingerprint((1.0, 2.1, 0.5))) is None
    assert "another numerics fingerprint" in caplog.text
