"""``nai3 eval``'s argument, resolved in one place: each kind of model, and each refusal."""
import json
import struct

import pytest

from flows.model_ref import resolve_model


def test_each_kind_of_model_is_resolved(tmp_path):
    ours = tmp_path / "checkpoint"
    ours.mkdir()
    (ours / "meta.json").write_text(json.dumps({"variant": {"name": "nai-v-ztsnr"}}))
    (ours / "config.json").write_text(json.dumps({"kind": "tiny"}))
    ref = resolve_model(str(ours), None, tmp_path / "dl")
    assert (ref.kind, ref.name, ref.ours, ref.run_id) == ("nai3", "nai-v-ztsnr", True, None)
    folder = tmp_path / "my-sdxl"
    folder.mkdir()
    (folder / "model_index.json").write_text("{}")
    assert resolve_model(str(folder), None, tmp_path / "dl").kind == "diffusers-sdxl"
    single = tmp_path / "community.safetensors"
    single.write_bytes(struct.pack("<Q", 2) + b"{}")  # an empty safetensors file
    ref = resolve_model(str(single), None, tmp_path / "dl", model_config=str(folder))
    assert (ref.kind, ref.name, ref.ours) == ("single-file-sdxl", "community", False)


def test_what_cannot_be_evaluated_is_refused_with_the_reason(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_model(str(tmp_path / "nothing.safetensors"), None, tmp_path / "dl")
    pickle = tmp_path / "model.ckpt"
    pickle.write_bytes(b"\x80\x04")
    with pytest.raises(ValueError, match="pickled checkpoints are refused"):
        resolve_model(str(pickle), None, tmp_path / "dl")
    single = tmp_path / "community.safetensors"
    single.write_bytes(struct.pack("<Q", 2) + b"{}")
    with pytest.raises(FileNotFoundError, match="--model-config"):
        resolve_model(str(single), None, tmp_path / "dl")
    with pytest.raises(FileNotFoundError, match="neither a checkpoint folder nor an MLflow run"):
        resolve_model("0123456789abcdef", f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "dl")
