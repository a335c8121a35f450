"""Nothing stale, nothing redone: a changed dataset or training code is never answered with an old
checkpoint, and an edit that cannot change a trained weight (progress bar, report, claims, a
comment) never throws away a trained variant (the training identity keys training reuse)."""
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from flows import identity, pipeline, runs
from nai3train.data import synthesize
from nai3train.data.identity import content_identity

from .conftest import ROOT


def _edit_one_image(folder: Path) -> None:
    img = sorted(folder.glob("*.png"))[3]
    px = np.asarray(Image.open(img)).copy()
    px[0, 0] = 255 - px[0, 0]
    Image.fromarray(px).save(img)


def test_content_identity_follows_content_not_location(tmp_path):
    synthesize(tmp_path / "a", 12, 4, 8, seed=0)
    root = tmp_path / "a" / "train"
    cache = tmp_path / "cache.json"
    first = content_identity(root, cache)
    assert content_identity(root, cache) == first == content_identity(root)  # the cache changes nothing
    moved = tmp_path / "moved"
    shutil.copytree(root, moved)
    assert content_identity(moved) == first  # same content elsewhere: same identity
    _edit_one_image(moved)
    edited = content_identity(moved, cache)
    assert edited != first
    (moved / "000001.txt").write_text("white_background, 1_object, red_circle\n")
    assert content_identity(moved, cache) not in (first, edited)  # a tag edit counts too
    (moved / "000002.png").unlink()
    assert content_identity(moved, cache) != edited


def _train(cfg, ws):
    data = pipeline.prepare_data(cfg, ws)
    return pipeline.train(cfg, cfg.variants[1], data, ws, progress=False)


def _copy_sources(dest: Path) -> Path:
    for pkg in ("nai3train", "nai3eval", "flows"):
        shutil.copytree(ROOT / pkg, dest / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def _append(path: Path, text: str) -> None:
    with open(path, "a") as f:
        f.write(text)


def test_edited_image_retrains(tmp_path, tiny_config):
    synthesize(tmp_path / "data", 32, 4, 8, seed=0)
    folder = tmp_path / "data" / "train"
    cfg = tiny_config(["train.steps=2", "data.kind=folder", f"data.path={folder}", "experiment=staleness"])
    ws = pipeline.Workspace.open(cfg, tmp_path / "work", f"sqlite:///{tmp_path}/mlflow.db")
    first = _train(cfg, ws)
    assert not first.reused and _train(cfg, ws).reused  # unchanged data: reused
    _edit_one_image(folder)
    after_edit = _train(cfg, ws)
    assert not after_edit.reused and after_edit.run_id != first.run_id


def test_only_edits_that_can_change_weights_retrain(tmp_path, tiny_config, monkeypatch):
    """Against a real store: edits to the progress bar, the report or a comment in the trainer reuse
    the trained run (and the nightly's seed count goes on); a code edit in the trainer retrains, from
    scratch (never "resumed" from the old code's final checkpoint)."""
    cfg = tiny_config(["train.steps=2", "experiment=staleness"])
    ws = pipeline.Workspace.open(cfg, tmp_path / "work", f"sqlite:///{tmp_path}/mlflow.db")
    first = _train(cfg, ws)
    code = _copy_sources(tmp_path / "code")
    monkeypatch.setattr(identity, "ROOT", code)
    before_train, before_eval = identity.training_identity(), identity.evaluation_identity()
    assert before_train.digest == runs.training_identity().digest  # the copy is the same code
    data = pipeline.prepare_data(cfg, ws)
    one = cfg.model_copy(update={"variants": (cfg.variants[1],)})  # the arm _train trains

    for edited in ("nai3train/ops/progress.py", "nai3eval/reporting/report.py", "nai3eval/claims/decide.py",
                   "flows/cli.py"):
        _append(code / edited, "\n\ndef _an_unused_function():\n    return 1\n")
        assert identity.training_identity() == before_train, edited
    _append(code / "nai3train" / "trainer.py", "\n# a comment in the training loop\n")
    assert identity.training_identity() == before_train  # comments and docstrings are not code
    assert identity.evaluation_identity() == before_eval  # nor is anything on the reporting side
    again = _train(cfg, ws)
    assert again.reused and again.run_id == first.run_id
    assert runs.next_seeds(runs.seeds_by_arm(one, data.content_hash, ws.uri, ws.experiment_id)) == (0, 1)  # the nightly goes on

    (code / "nai3eval" / "metrics" / "brightness.py").write_text(
        (code / "nai3eval" / "metrics" / "brightness.py").read_text() + "\nSCALE = 2.0\n")
    assert identity.training_identity() == before_train and identity.evaluation_identity() != before_eval
    assert any("brightness.py changed" in c for c in identity.evaluation_identity().changes_from(before_eval))
    assert _train(cfg, ws).run_id == first.run_id  # a metric edit re-evaluates, never retrains

    lr = code / "nai3train" / "training" / "lr.py"
    lr.write_text(lr.read_text().replace("return", "return 0.5 *", 1))
    changed = identity.training_identity()
    assert changed != before_train and changed.changes_from(before_train) == ["nai3train/training/lr.py changed"]
    retrained = _train(cfg, ws)
    assert not retrained.reused and retrained.run_id != first.run_id
    assert retrained.resumed_from == 0 and retrained.img_per_s > 0
    assert runs.next_seeds(runs.seeds_by_arm(one, data.content_hash, ws.uri, ws.experiment_id)) == (0, 1)  # seed 0 only, anew
    seen = runs.provenance(ws.uri, ws.experiment_id, one, data.content_hash, changed, tmp_path / "dl")
    assert sorted((r.identity, r.seeds, r.current) for r in seen.rows) == sorted(
        [(before_train.digest, (0,), False), (changed.digest, (0,), True)])
    assert seen.restarts() == [f"K restarts for {cfg.variants[1].name}: 1 seed(s) under identity {before_train.digest} "
                               f"are not pooled with 1 under {changed.digest}; changed: nai3train/training/lr.py "
                               "changed"]


def test_an_edited_prompt_file_is_evaluated_again_and_a_moved_one_is_not(tmp_path):
    from nai3train.config import EvalConfig

    first = tmp_path / "a.txt"
    first.write_text("red_circle, black_background\n")
    moved = tmp_path / "b.txt"
    shutil.copy(first, moved)
    key = runs.eval_key(EvalConfig(prompt_file=str(first)), "tagger", "run")
    assert runs.eval_key(EvalConfig(prompt_file=str(moved)), "tagger", "run") == key
    first.write_text("red_circle, white_background\n")
    assert runs.eval_key(EvalConfig(prompt_file=str(first)), "tagger", "run") != key
