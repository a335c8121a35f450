"""Progress without a terminal is lines, not carriage returns; torch threads come from the config,
else NAI3_THREADS, and a bad value is refused."""
import io
import time

import pytest
import torch

from nai3train.ops import progress as progress_module
from nai3train.ops.progress import progress
from nai3train.ops.threads import apply_threads, torch_threads


def test_without_a_terminal_progress_is_whole_lines(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.setattr(progress_module, "LINE_EVERY_S", 0.0)
    out = io.StringIO()  # not a tty, like a log file
    for _ in progress(range(5), desc="probes v", stream=out):
        time.sleep(0.01)
    text = out.getvalue()
    assert "\r" not in text and text.count("\n") >= 2 and "probes v" in text and "5/5" in text
    monkeypatch.setenv("TQDM_DISABLE", "1")
    quiet = io.StringIO()
    assert list(progress(range(3), desc="x", stream=quiet)) == [0, 1, 2] and quiet.getvalue() == ""


def test_threads_from_the_config_then_the_environment(monkeypatch):
    monkeypatch.delenv("NAI3_THREADS", raising=False)
    assert torch_threads(0) == 0 and torch_threads(3) == 3
    monkeypatch.setenv("NAI3_THREADS", "1")
    before = torch.get_num_threads()
    try:
        assert torch_threads(0) == 1 and torch_threads(2) == 2 and apply_threads() == 1
    finally:
        torch.set_num_threads(before)
    monkeypatch.setenv("NAI3_THREADS", "all")
    with pytest.raises(ValueError, match="NAI3_THREADS"):
        torch_threads(0)
