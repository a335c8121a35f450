"""The evaluation sweep: points per variant, common random numbers, missing real-data weights."""
import math
from pathlib import Path

import torch

from nai3eval.sweep import evaluate_checkpoint, make_prompt_set, sweep_points
from nai3eval.tagger import train_tagger
from nai3train.config import EvalConfig, VariantConfig, load_config
from nai3train.data import BucketedDataset, Vocabulary, default_buckets, load_folder, scan_folder, synthesize
from nai3train.trainer import train_variant

ROOT = Path(__file__).resolve().parents[1]


def test_default_sweep_and_infinity_only_for_ztsnr():
    ec = EvalConfig()
    assert ec.cfg_scales == (1.0, 2.0, 3.5, 5.0, 7.5, 10.0)
    assert len(sweep_points(ec, math.inf)) == 6 * 5
    finite = sweep_points(ec, 14.6146)
    assert len(finite) == 6 * 4 and all(math.isfinite(p.first_sigma) for p in finite)


def test_prompt_set_is_shared_and_includes_extreme_brightness():
    tags = [["black_background", "1_object", "red_circle"], ["white_background", "2_objects", "blue_square"],
            ["grey_background", "1_object", "red_circle"]] * 4
    a = make_prompt_set(tags, 3, 2, (3, 4, 4), seed=5)
    b = make_prompt_set(tags, 3, 2, (3, 4, 4), seed=5)
    assert torch.equal(a.noise, b.noise) and a.prompts == b.prompts  # common random numbers
    assert {"black_background", "white_background"} <= {t for p in a.prompts for t in p}
    assert a.prompt_index.tolist() == [0, 0, 1, 1, 2, 2]


def test_sweep_runs_without_real_data_weights_and_says_why(tmp_path):
    synthesize(tmp_path / "b", 48, 8, 8, seed=0)
    data = BucketedDataset.from_scan(scan_folder(tmp_path / "b" / "train"), default_buckets(8))
    vocab = Vocabulary.build(data.tags)
    cfg = load_config(ROOT / "configs/smoke.yaml", [
        "data.resolution=8", "train.steps=2", "train.batch_size=4", "model.block_out_channels=[16,32]",
        "model.cross_attention_dim=16", "eval.prompts=2", "eval.seeds_per_prompt=2", "eval.steps=2",
        "eval.cfg_scales=[2]", "eval.first_sigmas=[14.6, inf]",
        f"eval.inception_weights={tmp_path / 'no-inception.pth'}", f"eval.clip_path={tmp_path / 'no-clip'}"])
    v = VariantConfig(name="v", prediction="v", ztsnr=True)
    ck = train_variant(cfg, v, data, vocab, tmp_path / "run", progress=False).checkpoint
    ev = load_folder(tmp_path / "b" / "eval", 8)
    tagger = train_tagger(ev.images, vocab.multi_hot(ev.tags), steps=2)
    res = evaluate_checkpoint(ck, cfg.eval, ev.images, ev.tags, tagger, list(vocab.tags), progress=False)
    assert [p["point"] for p in res["points"]] == ["cfg2-sigma14.6-euler2", "cfg2-sigmainf-euler2"]
    assert any("no-inception.pth" in m for m in res["problems"]) and any("no-clip" in m for m in res["problems"])
    for p in res["points"]:
        assert math.isfinite(p["fd_tagger"]) and "fid_inception" not in p
    assert res["probes"]["x0_inf_nonfinite_frac"] == 0.0  # v has a finite exact limit at σ = ∞
    assert "per_image_start_dist_56" in res["probes"]
