"""The SDXL path with tiny random-weight components saved by the test and loaded back."""
import shutil
from pathlib import Path

import pytest
import torch

from nai3train.config import ConfigError, load_config
from nai3train.data import BucketedDataset, Vocabulary, default_buckets, scan_folder, synthesize
from nai3train.models.sdxl import encode_prompts, load_sdxl
from nai3train.trainer import train_variant

from .sdxl_tiny import build_tiny_sdxl

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_sdxl(tmp_path_factory):
    return build_tiny_sdxl(tmp_path_factory.mktemp("sdxl") / "model")


def test_missing_folder_or_component_names_the_path(tiny_sdxl, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_sdxl(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_sdxl, broken)
    shutil.rmtree(broken / "text_encoder_2")
    with pytest.raises(FileNotFoundError, match=str(broken / "text_encoder_2")):
        load_sdxl(broken)
    with pytest.raises(ConfigError, match="model.path"):
        load_config(ROOT / "configs/smoke.yaml", ["model.kind=sdxl", f"model.path={tmp_path / 'nowhere'}"])


def test_sdxl_text_conditioning_shapes(tiny_sdxl):
    c = load_sdxl(tiny_sdxl)
    emb, pooled = encode_prompts(c, ["red circle, black background", ""])
    assert emb.shape == (2, 32, 32) and pooled.shape == (2, 16)  # both encoders' 16-d states concatenated
    assert not torch.allclose(emb[0], emb[1])


def test_sdxl_path_trains_two_steps_and_caches(tiny_sdxl, tmp_path):
    synthesize(tmp_path / "bench", 24, 4, 16, seed=0)
    data = BucketedDataset.from_scan(scan_folder(tmp_path / "bench" / "train"), default_buckets(16))
    cfg = load_config(ROOT / "configs/smoke.yaml", ["model.kind=sdxl", f"model.path={tiny_sdxl}", "train.steps=2",
                                                     "train.batch_size=2", "data.resolution=16"])
    variant = cfg.variants[1]
    out = tmp_path / "work" / "variants" / "v"
    r = train_variant(cfg, variant, data, Vocabulary.build(data.tags), out, progress=False)
    assert torch.isfinite(torch.tensor(r.final_loss))
    assert (r.checkpoint / "model.safetensors").is_file()
    cache = tmp_path / "work" / "cache"
    n = len(list(cache.glob("*.safetensors")))
    assert n >= len(data) and n > 0
    train_variant(cfg, variant, data, Vocabulary.build(data.tags), tmp_path / "work" / "variants" / "w",
                  progress=False)
    assert len(list(cache.glob("*.safetensors"))) == n  # second run hits the cache
