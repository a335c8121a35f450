"""Nothing stale: a changed dataset is never answered with an old checkpoint, and an edit to the
evaluation code never throws away a trained variant (only training code keys training reuse)."""
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from flows import pipeline, runs
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


def test_edited_image_retrains_and_evaluation_code_edit_does_not(tmp_path, tiny_config, monkeypatch):
    synthesize(tmp_path / "data", 32, 4, 8, seed=0)
    folder = tmp_path / "data" / "train"
    cfg = tiny_config(["train.steps=2", "data.kind=folder", f"data.path={folder}", "experiment=staleness"])
    ws = pipeline.Workspace.open(cfg, tmp_path / "work", f"sqlite:///{tmp_path}/mlflow.db")
    first = _train(cfg, ws)
    assert not first.reused and _train(cfg, ws).reused  # unchanged data: reused

    _edit_one_image(folder)
    after_edit = _train(cfg, ws)
    assert not after_edit.reused and after_edit.run_id != first.run_id

    code = tmp_path / "code"  # a copy of the sources, one evaluation module edited
    for pkg in ("nai3train", "nai3eval"):
        shutil.copytree(ROOT / pkg, code / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    before_train, before_eval = runs.training_code_version(), runs.evaluation_code_version()
    monkeypatch.setattr(runs, "ROOT", code)
    with open(code / "nai3eval" / "report.py", "a") as f:
        f.write("\n# a typo fixed in the report\n")
    assert runs.training_code_version() == before_train and runs.evaluation_code_version() != before_eval
    assert _train(cfg, ws).run_id == after_edit.run_id  # reused: the training code did not change
    with open(code / "nai3train" / "trainer.py", "a") as f:
        f.write("\n# a change to the training loop\n")
    retrained = _train(cfg, ws)
    assert not retrained.reused and retrained.run_id != after_edit.run_id
    # trained again, not "resumed" from the old code's final checkpoint (zero steps, the old weights)
    assert retrained.resumed_from == 0 and retrained.img_per_s > 0


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
