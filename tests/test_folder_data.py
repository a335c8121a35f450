"""Folder datasets: every image mode, EXIF, tag sources, bad files; normalisation; tag weights."""
import io
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from nai3train.data import DatasetError, TagWeighting, channel_stats, load_folder, scan_folder
from nai3train.data.folder import ALPHA_BACKGROUND, decode_rgb
from nai3train.data.normalize import SDXL_LATENT, ChannelStats


def _save(img: Image.Image, path, tags="a_tag", **kw):
    img.save(path, **kw)
    if tags is not None:
        path.with_suffix(".txt").write_text(tags)


def test_every_mode_becomes_rgb(tmp_path):
    _save(Image.new("L", (4, 3), 200), tmp_path / "l.png")
    _save(Image.new("LA", (4, 3), (10, 0)), tmp_path / "la.png")
    p = Image.new("P", (4, 3))
    p.putpalette([255, 0, 0] * 256)
    _save(p, tmp_path / "p.png")
    _save(Image.new("RGBA", (4, 3), (0, 0, 255, 128)), tmp_path / "rgba.png")
    _save(Image.new("CMYK", (4, 3), (0, 255, 255, 0)), tmp_path / "cmyk.jpg")
    _save(Image.fromarray(np.full((3, 4), 65535, dtype=np.uint16)), tmp_path / "g16.png")
    _save(Image.new("RGB", (4, 3), (1, 2, 3)), tmp_path / "w.webp", lossless=True)
    recs = {r.path.split("/")[-1]: r.pixels() for r in scan_folder(tmp_path).records}
    assert set(recs) == {"l.png", "la.png", "p.png", "rgba.png", "cmyk.jpg", "g16.png", "w.webp"}
    for px in recs.values():
        assert px.dtype == np.uint8 and px.shape == (3, 4, 3)
    assert (recs["l.png"] == 200).all()
    assert tuple(recs["la.png"][0, 0]) == ALPHA_BACKGROUND  # fully transparent → background
    assert tuple(recs["rgba.png"][0, 0]) == (127, 127, 255)  # half-transparent blue over white
    assert tuple(recs["p.png"][0, 0]) == (255, 0, 0)
    assert recs["cmyk.jpg"][0, 0, 0] > 200 and recs["cmyk.jpg"][0, 0, 1] < 60
    assert (recs["g16.png"] == 255).all()  # 16-bit full scale → 255, not clipped garbage
    assert tuple(recs["w.webp"][0, 0]) == (1, 2, 3)


def test_exif_orientation_is_honoured(tmp_path):
    img = Image.new("RGB", (60, 20), (0, 0, 0))
    img.paste((255, 0, 0), (0, 0, 10, 10))  # red block in the top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif.tobytes(), quality=95, subsampling=0)
    (tmp_path / "r.jpg").write_bytes(buf.getvalue())
    (tmp_path / "r.txt").write_text("x")
    px = decode_rgb(tmp_path / "r.jpg")
    assert px.shape[:2] == (60, 20)
    assert px[3, -3, 0] > 200 and px[3, -3, 1] < 60  # the red corner moved to the top right
    assert px[-3, 3, 0] < 60


def test_tag_sources_and_normalisation_of_tags(tmp_path):
    sub = tmp_path / "deep" / "er"
    sub.mkdir(parents=True)
    _save(Image.new("RGB", (4, 4)), sub / "a.png", tags=" Long Hair,  blue_eyes ,, ")
    _save(Image.new("RGB", (4, 4)), sub / "b.png", tags=None)
    _save(Image.new("RGB", (4, 4)), sub / "c.png", tags=None)
    (sub / "metadata.jsonl").write_text(json.dumps({"file": "b.png", "tags": "Solo, smile"}) + "\n"
                                        + json.dumps({"file": "c.png", "tags": ["Red Background"]}) + "\n"
                                        + "{not json\n")
    scan = scan_folder(tmp_path)
    tags = {r.path.split("/")[-1]: r.tags for r in scan.records}
    assert tags == {"a.png": ["long_hair", "blue_eyes"], "b.png": ["solo", "smile"], "c.png": ["red_background"]}
    assert any("bad metadata line" in s["reason"] for s in scan.skipped)


def test_planted_bad_files_are_skipped_and_reported(tmp_path):
    _save(Image.new("RGB", (20, 12), (255, 0, 0)), tmp_path / "good.png", tags="Red Square, solo")
    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "zero.txt").write_text("x")
    _save(Image.new("RGB", (8, 8)), tmp_path / "untagged.png", tags=None)
    full = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(full, "PNG")
    (tmp_path / "trunc.png").write_bytes(full.getvalue()[:60])
    (tmp_path / "trunc.txt").write_text("x")
    (tmp_path / "fake.jpg").write_bytes(b"this is not a jpeg at all")
    (tmp_path / "fake.txt").write_text("x")
    (tmp_path / "notes.bin").write_bytes(b"\x00\x01")
    d = load_folder(tmp_path, 8)
    assert len(d) == 1 and d.tags[0] == ["red_square", "solo"]
    reasons = {s["path"].split("/")[-1]: s["reason"] for s in d.skipped}
    assert set(reasons) == {"zero.png", "untagged.png", "trunc.png", "fake.jpg", "notes.bin"}
    assert "zero-byte" in reasons["zero.png"] and "no tags" in reasons["untagged.png"]
    assert "unreadable" in reasons["trunc.png"] and "unreadable" in reasons["fake.jpg"]
    assert "not an image" in reasons["notes.bin"]


def test_all_invalid_folder_is_a_clear_error(tmp_path):
    (tmp_path / "zero.png").write_bytes(b"")
    with pytest.raises(DatasetError, match="no usable images.*1 skipped"):
        scan_folder(tmp_path)


def test_normalised_channels_are_standard_against_numpy():
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn(n, 3, 5, 7, generator=gen) * torch.tensor([2.0, 0.5, 3.0]).reshape(1, 3, 1, 1)
               + torch.tensor([1.0, -2.0, 0.3]).reshape(1, 3, 1, 1) for n in (4, 9, 1)]
    stats = channel_stats(batches)
    whole = torch.cat(batches).double().numpy()
    np.testing.assert_allclose(stats.mean, whole.mean(axis=(0, 2, 3)), rtol=1e-10)
    np.testing.assert_allclose(stats.std, whole.std(axis=(0, 2, 3), ddof=1), rtol=1e-10)
    z = stats.apply(torch.cat(batches).double()).numpy()
    np.testing.assert_allclose(z.mean(axis=(0, 2, 3)), 0, atol=1e-10)
    np.testing.assert_allclose(z.std(axis=(0, 2, 3), ddof=1), 1, rtol=1e-10)
    x = torch.cat(batches)
    torch.testing.assert_close(stats.invert(stats.apply(x)), x)
    assert SDXL_LATENT.mean[0] == 4.8119 and len(SDXL_LATENT.std) == 4
    assert isinstance(SDXL_LATENT, ChannelStats)


def test_tag_weights_mean_one_within_bounds_and_lift_rare_tags():
    rng = np.random.default_rng(0)
    tags = [["common"] + (["rare"] if rng.random() < 0.01 else []) + [f"mid{rng.integers(0, 5)}"]
            for _ in range(2000)]
    tw = TagWeighting(alpha=0.5, lo=0.2, hi=5.0)
    w = tw.weights(tags)
    assert w.mean() == pytest.approx(1.0, abs=1e-9)
    assert w.min() >= 0.2 - 1e-12 and w.max() <= 5.0 + 1e-12
    rare = np.array(["rare" in t for t in tags])
    assert w[rare].mean() > w[~rare].mean()
    tight = TagWeighting(alpha=3.0, lo=0.9, hi=1.1).weights(tags)  # clipping must bind here
    assert tight.mean() == pytest.approx(1.0, abs=1e-9) and tight.min() >= 0.9 - 1e-12 and tight.max() <= 1.1 + 1e-12


def test_cli_data_inspect_json(tmp_path):
    from nai3train.data import synthesize

    synthesize(tmp_path / "b", 40, 4, 16, seed=1)
    out = subprocess.run([sys.executable, "-m", "flows.cli", "data", "inspect", str(tmp_path / "b" / "train"),
                          "--resolution", "16", "--json"], capture_output=True, text=True, check=True).stdout
    card = json.loads(out)
    assert card["count"] == 40 and card["skipped_count"] == 0
    assert card["bucketing"]["mean_pixels_kept"] >= card["bucketing"]["mean_pixels_kept_centre_square"]
    assert abs(card["tag_weights"]["mean"] - 1) < 1e-9


def test_the_scan_cache_forgets_deleted_files(tmp_path):
    """The decode cache of a work folder keeps only files that still exist: a dataset that changes
    night after night does not grow it forever (and a deleted file is not answered from it)."""
    from nai3train.data import synthesize

    synthesize(tmp_path / "b", 12, 4, 8, seed=0)
    cache = tmp_path / "scan.json"
    first = scan_folder(tmp_path / "b" / "train", cache)
    assert len(json.loads(cache.read_text())) == len(first.records)
    gone = sorted((tmp_path / "b" / "train").glob("*.png"))[:3]
    for f in gone:
        f.unlink()
    again = scan_folder(tmp_path / "b" / "train", cache)
    kept = json.loads(cache.read_text())
    assert len(again.records) == len(first.records) - 3 and len(kept) == len(again.records)
    assert not {str(f.resolve()) for f in gone} & set(kept)
