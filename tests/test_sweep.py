"""The evaluation sweep: points per variant, common random numbers, a value-level check of
``run_sweep`` on the closed-form Gaussian bundle, and the tiny model through the same interface."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from nai3eval.checkpoint import LoadedCheckpoint, load_checkpoint
from nai3eval.evaluate import build_instruments, evaluate_variant
from nai3eval.metrics import InstrumentSettings
from nai3eval.metrics.brightness import Brightness
from nai3eval.metrics.mean_leak import MeanLeak
from nai3eval.pixels import image_brightness
from nai3eval.prompts import make_prompt_set
from nai3eval.record import Record, Run
from nai3eval.setting import Setting
from nai3eval.sweep import run_sweep, sweep_points
from nai3eval.tagger import train_tagger
from nai3train.config import EvalConfig, VariantConfig
from nai3train.data import BucketedDataset, Vocabulary, default_buckets, load_folder, scan_folder, synthesize
from nai3train.diffusion import sampling_sigmas
from nai3train.trainer import train_variant
from nai3train.variant import build_denoiser, build_schedule

from .gaussian import GaussianBundle

ROOT = Path(__file__).resolve().parents[1]


def test_default_sweep_and_infinity_only_for_ztsnr():
    ec = EvalConfig()
    assert ec.cfg_scales == (1.0, 2.0, 3.5, 5.0, 7.5, 10.0)
    assert len(sweep_points(ec, math.inf)) == 6 * 5
    finite = sweep_points(ec, 14.6146)
    assert len(finite) == 6 * 4 and all(math.isfinite(p.start) for p in finite)


def test_prompt_set_is_shared_and_includes_extreme_brightness():
    tags = [["black_background", "1_object", "red_circle"], ["white_background", "2_objects", "blue_square"],
            ["grey_background", "1_object", "red_circle"]] * 4
    a = make_prompt_set(tags, 3, 2, (3, 4, 4), seed=5)
    b = make_prompt_set(tags, 3, 2, (3, 4, 4), seed=5)
    assert torch.equal(a.noise, b.noise) and a.prompts == b.prompts  # common random numbers
    assert {"black_background", "white_background"} <= {t for p in a.prompts for t in p}
    assert a.prompt_index.tolist() == [0, 0, 1, 1, 2, 2]


def _euler_mean_gain(sig: list[float], v_a: float) -> float:
    """Euler's map of (image mean − μ) over the steps of ``sig`` for the linear ideal denoiser:
    each step multiplies it by 1 + σ_n(σ_{n+1} − σ_n)/(v_a + σ_n²), v_a the variance of x0 along
    the unit mean direction (tests/gaussian.py)."""
    return math.prod(1 + a * (b - a) / (v_a + a * a) for a, b in zip(sig[:-1], sig[1:]))


@pytest.mark.parametrize("cfg_scale", [1.0, 2.0])
def test_run_sweep_on_the_gaussian_bundle_equals_the_closed_form(cfg_scale):
    """Through the bundle interface, the sweep's brightness and mean-leak values equal what the
    linear ideal denoiser gives in closed form: image mean = μ_eff + G·(start mean − μ_eff) from a
    finite start, μ_eff + G₁·σ₁·mean(ε) from ∞, with μ_eff = s·μ_prompt under CFG s (the empty
    prompt's mean is 0) and G the product of Euler's per-step gains."""
    side, mu = 4, 0.3
    variant = VariantConfig(name="gauss", prediction="v", ztsnr=True)
    schedule = build_schedule(variant, 3 * side * side)
    bundle = GaussianBundle(mu=mu, s_m=0.05, s_r=0.04, side=side, prediction="v", schedule=schedule)
    ck = LoadedCheckpoint(bundle, build_denoiser(bundle.network, variant, 3 * side * side), variant)
    tags = [["black_background", "a"], ["white_background", "b"], ["grey_background", "c"]]
    ps = make_prompt_set(tags, 3, 40, ck.sample_shape, seed=0)
    ps.noise = ps.noise.double()
    real = torch.stack([torch.full((3, side, side), v) for v in (-mu, mu, 0.0)])
    points = [Setting("sweep", 14.6, cfg_scale, steps=12), Setting("sweep", math.inf, cfg_scale, steps=12)]
    run = Run(variant, 0, ps.prompts, ps.prompt_index.tolist())
    record = run_sweep(ck, run, points, ps, [MeanLeak(), Brightness(image_brightness(real), tags)], progress=False)

    v_a = bundle.images.v_a
    mu_prompt = torch.tensor([bundle.prompt_mean(t) for t in ps.texts], dtype=torch.float64)
    mu_eff = cfg_scale * mu_prompt
    noise_mean = ps.noise.flatten(1).mean(1)
    black = torch.tensor(["black_background" in t for t in ps.texts])
    slope = {}
    for p in points:
        sig = [float(s) for s in sampling_sigmas(schedule, 12, p.start, "native")]
        slope[p.start] = record.scalar(run, p, "mean_leak_slope")
        if math.isinf(sig[0]):
            gain = _euler_mean_gain(sig[1:], v_a)
            want = mu_eff + gain * sig[1] * noise_mean
        else:
            gain = _euler_mean_gain(sig, v_a)
            want = mu_eff + gain * (sig[0] * noise_mean - mu_eff)
            assert slope[p.start] == pytest.approx(gain, rel=1e-6)  # the leak of a finite start (t↔σ round trip ≈ 1e-8)
        np.testing.assert_allclose(record.per_image(run, p, "out_mean")[0], want.numpy(), rtol=1e-6, atol=1e-9)
        assert record.scalar(run, p, "brightness_black") == pytest.approx(float(((1 + want[black]) / 2).mean()),
                                                                          rel=1e-6)
        assert record.scalar(run, p, "brightness_err_black") == pytest.approx(
            float(((1 + want[black]) / 2 - (1 - mu) / 2).abs().mean()), rel=1e-6)
    assert slope[14.6] > 0.5 and abs(slope[math.inf]) < 1e-3  # the paper's C3, exactly


def test_tiny_checkpoint_through_the_bundle_without_real_data_weights(tmp_path, tiny_config):
    synthesize(tmp_path / "b", 48, 8, 8, seed=0)
    data = BucketedDataset.from_scan(scan_folder(tmp_path / "b" / "train"), default_buckets(8))
    vocab = Vocabulary.build(data.tags)
    # present but unusable (a missing path is refused with the config): listed as problems, the sweep goes on
    (tmp_path / "no-inception.pth").write_bytes(b"not a state dict")
    (tmp_path / "no-clip").mkdir()
    cfg = tiny_config(["train.steps=2", "eval.prompts=2", "eval.seeds_per_prompt=2", "eval.steps=2",
                       "eval.cfg_scales=[2]", "eval.first_sigmas=[14.6, inf]",
                       "eval.inception=true", f"eval.inception_weights={tmp_path / 'no-inception.pth'}",
                       f"eval.clip_path={tmp_path / 'no-clip'}"])
    v = VariantConfig(name="v", prediction="v", ztsnr=True)
    folder = train_variant(cfg, v, data, vocab, tmp_path / "run", progress=False).checkpoint
    ck = load_checkpoint(folder)
    assert ck.bundle.kind == "tiny" and ck.sample_shape == (3, 8, 8)
    # C4: a 2× canvas has 4× the dimension, so its own σ table is scaled by √4; the naive start keeps the native one
    native = ck.denoiser.schedule.scale
    assert ck.at_size((16, 16)).denoiser.schedule.scale == pytest.approx(2 * native)
    assert ck.at_size((16, 16), rescaled=False).denoiser.schedule.scale == pytest.approx(native)
    ev = load_folder(tmp_path / "b" / "eval", 8)
    tagger = train_tagger(ev.images, vocab.multi_hot(ev.tags), steps=2)
    inst = build_instruments(InstrumentSettings.of(cfg.eval), ev.images, ev.tags, tagger, list(vocab.tags))
    res = evaluate_variant(ck, cfg.eval, inst, progress=False)
    run = res.runs[("v", 0)]
    points = res.settings(run, "sweep")
    assert [p.name for p in points] == ["cfg2-sigma14.6-euler2", "cfg2-sigmainf-euler2"]
    assert any("no-inception.pth" in m for m in run.problems) and any("no-clip" in m for m in run.problems)
    for p in points:
        assert math.isfinite(res.scalar(run, p, "fd_tagger")) and res.scalar(run, p, "fd_inception") is None
    assert res.scalar(run, Setting("x0", math.inf), "nonfinite_frac") == 0.0  # v has a finite exact limit at σ = ∞
    assert {56.0, math.inf} <= {s.start for s in res.settings(run, "practical_infinity")}
    again = Record.from_dict(json.loads(json.dumps(res.to_dict())))  # what evaluation reuse reads back
    assert json.dumps(again.to_dict()) == json.dumps(res.to_dict()) and again.settings(run, "sweep")[1].start == math.inf
    assert again.runs[run.key].variant == run.variant
    with pytest.raises(ValueError, match="format"):  # an evaluation stored in another format is never misread
        Record.from_dict({**res.to_dict(), "format": 1})
