"""The benchmark generator and the folder loader."""
import numpy as np
import pytest
from PIL import Image

from nai3train.data import DatasetError, Vocabulary, load_folder, synthesize


def test_synth_is_deterministic_and_long_tailed(tmp_path):
    a = synthesize(tmp_path / "a", 300, 16, 16, seed=3)
    b = synthesize(tmp_path / "b", 300, 16, 16, seed=3)
    c = synthesize(tmp_path / "c", 300, 16, 16, seed=4)
    assert a["content_hash"] == b["content_hash"] != c["content_hash"]
    freq = a["splits"]["train"]["tag_frequency"]
    assert min(freq.values()) < 0.02  # rare tags exist
    assert freq["black_background"] > 0.1 and freq["white_background"] > 0.1
    d = load_folder(tmp_path / "a" / "train", 16)
    assert len(d) == 300 and d.images.shape == (300, 3, 16, 16)
    black = np.array(["black_background" in t for t in d.tags])
    white = np.array(["white_background" in t for t in d.tags])
    means = d.images.mean(dim=(1, 2, 3)).numpy()
    assert means[black].max() < means[white].min()  # the tags mean what they say


def test_folder_loader_skips_and_reports_bad_files(tmp_path):
    Image.new("RGB", (20, 12), (255, 0, 0)).save(tmp_path / "good.png")
    (tmp_path / "good.txt").write_text("Red Square, solo\n")
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(tmp_path / "sub_alpha.png")
    (tmp_path / "sub_alpha.txt").write_text("transparent")
    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "zero.txt").write_text("x")
    Image.new("RGB", (8, 8)).save(tmp_path / "untagged.png")
    full = tmp_path / "trunc.png"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(full)
    full.write_bytes(full.read_bytes()[:40])
    (tmp_path / "trunc.txt").write_text("x")
    (tmp_path / "notes.bin").write_bytes(b"\x00\x01")
    d = load_folder(tmp_path, 8)
    assert len(d) == 2
    assert d.tags[0] == ["red_square", "solo"]
    assert float(d.images[1].min()) == pytest.approx(1.0)  # transparent → documented white background
    reasons = {p.split("/")[-1]: r for p, r in ((s["path"], s["reason"]) for s in d.skipped)}
    assert set(reasons) == {"zero.png", "untagged.png", "trunc.png", "notes.bin"}
    assert "no tags" in reasons["untagged.png"] and "not an image" in reasons["notes.bin"]


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="no usable images"):
        load_folder(tmp_path, 16)
    with pytest.raises(DatasetError, match="does not exist"):
        load_folder(tmp_path / "missing", 16)


def test_vocabulary_ids_and_multi_hot():
    v = Vocabulary.build([["a", "b"], ["a"], ["c", "a"]])
    assert v.tags[0] == "a"
    ids = v.ids([["a", "zzz", "c"]], max_tags=4)
    assert ids.tolist() == [[1, 3, 0, 0]]
    assert v.multi_hot([["c"]]).tolist() == [[0.0, 0.0, 1.0]]
