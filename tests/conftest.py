import os
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# two pytest workers share 2 cores with the servers they start: give Prefect's ephemeral API more than
# its default 20 s to come up (inherited by the subprocesses the end-to-end tests run)
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)  # `make test`: 2 workers × 1 thread

ROOT = Path(__file__).resolve().parents[1]
# The smallest config that trains and evaluates in seconds: 8 px images, a two-level UNet.
# eval.inception off: the 299² Inception costs ~0.15 CPU-s an image; tests/test_inception.py measures with it
TINY = ["data.resolution=8", "data.train_size=64", "data.eval_size=8", "train.batch_size=4", "train.log_every=5",
        "model.block_out_channels=[16,32]", "model.cross_attention_dim=16", "eval.inception=false"]


@pytest.fixture
def tiny_config():
    """``tiny_config(["train.steps=2", …])``: the smoke config shrunk to ``TINY``, plus overrides."""
    from nai3train.config import load_config

    def make(extra: list[str] | tuple[str, ...] = ()):
        return load_config(ROOT / "configs" / "smoke.yaml", TINY + list(extra))

    return make


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """(bucketed training set, vocabulary) of a 64-image 8 px benchmark, built once per module."""
    from nai3train.data import BucketedDataset, Vocabulary, default_buckets, scan_folder, synthesize

    root = tmp_path_factory.mktemp("bench")
    synthesize(root, 64, 8, 8, seed=0)
    d = BucketedDataset.from_scan(scan_folder(root / "train"), default_buckets(8))
    return d, Vocabulary.build(d.tags)


def assert_same_weights(reference: Path, checkpoint: Path, after: str) -> None:
    """Model and EMA weights of two nai3 checkpoint folders are bit-identical (``after``: what
    happened in between, for the message)."""
    import torch
    from safetensors.torch import load_file

    for name in ("model.safetensors", "ema.safetensors"):
        a, b = load_file(str(reference / name)), load_file(str(checkpoint / name))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}:{k} differs after {after}"
