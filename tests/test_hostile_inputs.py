"""Hostile or broken input is refused or skipped with the reason — never a traceback, never a hang
(the fault matrix's input rows; docs/faults.md)."""
import json
import os

import pytest
from PIL import Image

from nai3train.data import load_folder
from nai3train.data import folder as F
from nai3train.data.identity import content_identity


def _good(path, tags="red_square, solo"):
    Image.new("RGB", (12, 12), (255, 0, 0)).save(path)
    if tags is not None:
        path.with_suffix(".txt").write_text(tags)


def _reasons(d) -> dict[str, str]:
    return {s["path"].split("/")[-1]: s["reason"] for s in d.skipped}


def test_decompression_bomb_and_huge_dimensions_are_refused_before_decoding(tmp_path, monkeypatch):
    _good(tmp_path / "ok.png")
    _good(tmp_path / "big.png")
    Image.new("RGB", (300, 300)).save(tmp_path / "big.png")  # 90 000 pixels
    monkeypatch.setattr(F, "MAX_PIXELS", 50_000)
    monkeypatch.setattr(F.decode_rgb, "__defaults__", (50_000,))
    d = load_folder(tmp_path, 8)
    assert len(d) == 1 and "decompression bomb" in _reasons(d)["big.png"]


def test_animated_images_are_refused(tmp_path):
    _good(tmp_path / "ok.png")
    frames = [Image.new("RGB", (10, 10), c) for c in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(tmp_path / "anim.png", save_all=True, append_images=frames[1:])  # APNG
    (tmp_path / "anim.txt").write_text("x")
    d = load_folder(tmp_path, 8)
    assert len(d) == 1 and "multi-frame" in _reasons(d)["anim.png"]


def test_symlink_loops_end_and_symlinks_out_of_the_folder_are_skipped(tmp_path):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    _good(data / "ok.png")
    _good(data / "sub" / "two.png")
    os.symlink(data, data / "sub" / "loop")  # a directory loop
    outside_file = tmp_path / "outside.png"
    _good(outside_file)
    os.symlink(outside_file, data / "escape.png")
    os.symlink(outside_file.with_suffix(".txt"), data / "escape.txt")
    d = load_folder(data, 8)
    assert sorted(p.split("/")[-1] for p in d.paths) == ["ok.png", "two.png"]
    assert "leaves the dataset folder" in _reasons(d)["escape.png"]
    content_identity(data)  # ends too


def test_tag_files_non_utf8_thousands_of_tags_and_empty_lines(tmp_path):
    _good(tmp_path / "latin.png", tags=None)
    (tmp_path / "latin.txt").write_bytes("caf\xe9, solo\n\n".encode("latin-1"))
    _good(tmp_path / "many.png", tags=", ".join(f"tag{i}" for i in range(5000)))
    _good(tmp_path / "blank.png", tags="\n\n  \n")
    d = load_folder(tmp_path, 8)
    assert len(d) == 1 and d.tags[0][1] == "solo"  # the undecodable byte is replaced, the rest kept
    r = _reasons(d)
    assert "5000 tags" in r["many.png"] and "no tags" in r["blank.png"]


def test_metadata_jsonl_paths_duplicates_and_malformed_lines(tmp_path):
    for name in ("a.png", "b.png"):
        _good(tmp_path / name, tags=None)
    _good(tmp_path.parent / "victim.png", tags=None)
    lines = [json.dumps({"file": "a.png", "tags": ["red_square"]}), "{not json",
             json.dumps({"file": "../victim.png", "tags": ["x"]}), json.dumps({"file": "a.png", "tags": ["dup"]}),
             json.dumps({"tags": ["no file"]}), json.dumps({"file": "b.png", "tags": 7})]
    (tmp_path / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    d = load_folder(tmp_path, 8)
    assert [p.split("/")[-1] for p in d.paths] == ["a.png"] and d.tags[0] == ["red_square"]
    reasons = " | ".join(s["reason"] for s in d.skipped)
    for fragment in ("bad metadata line", "not a file name", "duplicate metadata entry", "no tags"):
        assert fragment in reasons, fragment


def test_an_mlflow_run_id_that_does_not_exist_is_a_clear_error(tmp_path):
    from flows.cli import main

    code = main(["eval", "0123456789abcdef0123456789abcdef", "--work-dir", str(tmp_path / "w"),
                 "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"])
    assert code == 2


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".bin"])
def test_pickled_checkpoints_are_never_unpickled(tmp_path, suffix, capsys):
    from flows.cli import main

    f = tmp_path / f"model{suffix}"
    f.write_bytes(b"\x80\x04K\x01.")  # a valid pickle: it must not be loaded
    assert main(["eval", str(f), "--work-dir", str(tmp_path / "w"),
                 "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"]) == 2
    assert "pickled checkpoints are refused" in capsys.readouterr().err


DROP_DAC = """
import ctypes, json, sys
class Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
class Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]
libc = ctypes.CDLL(None, use_errno=True)
hdr, data = Header(0x20080522, 0), (Data * 2)()
assert libc.capget(ctypes.byref(hdr), data) == 0
for bit in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH: without them root obeys file modes too
    data[0].effective &= ~(1 << bit); data[0].permitted &= ~(1 << bit)
assert libc.capset(ctypes.byref(hdr), data) == 0, ctypes.get_errno()
from nai3train.data import scan_folder
from nai3train.data.identity import content_identity
scan = scan_folder(sys.argv[1])
content_identity(sys.argv[1])
print(json.dumps({"kept": [r.path for r in scan.records], "skipped": scan.skipped}))
"""


def test_unreadable_images_tag_files_and_folders_are_skipped_with_the_reason(tmp_path):
    """File modes are obeyed (as root too: the scan runs without the capabilities that bypass them)."""
    import subprocess
    import sys

    for name in ("ok", "locked", "locked_tags"):
        _good(tmp_path / f"{name}.png")
    (tmp_path / "sub").mkdir()
    _good(tmp_path / "sub" / "hidden.png")
    (tmp_path / "metadata.jsonl").write_text("")
    for p in (tmp_path / "locked.png", tmp_path / "locked_tags.txt", tmp_path / "metadata.jsonl"):
        p.chmod(0)
    (tmp_path / "sub").chmod(0)
    try:
        out = subprocess.run([sys.executable, "-c", DROP_DAC, str(tmp_path)], capture_output=True, text=True,
                             timeout=120)
    finally:
        (tmp_path / "sub").chmod(0o755)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert [p.split("/")[-1] for p in got["kept"]] == ["ok.png"]
    reasons = {s["path"].split("/")[-1]: s["reason"] for s in got["skipped"]}
    assert "PermissionError" in reasons["locked.png"]
    assert "unreadable tag file locked_tags.txt" in reasons["locked_tags.png"]
    assert "unreadable folder" in reasons["sub"]


@pytest.mark.parametrize("argv", [["eval", "x", "--no-such-flag"], ["ablation", "--stepz", "3"], ["nonsense"]])
def test_unknown_cli_flags_and_commands_are_refused_with_exit_2(argv, capsys):
    from flows.cli import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments" in err or "invalid choice" in err
