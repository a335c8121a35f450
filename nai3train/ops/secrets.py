"""Secrets never leave the environment: whatever nai3 logs (MLflow params and tags, printed URLs,
error messages, its libraries' output) passes through ``redact`` first.

A secret is the value of an environment variable whose name says so (PASSWORD, TOKEN, SECRET,
AUTH_STRING, ACCESS_KEY, API_KEY), the password half of a ``user:password`` auth string, and the
password in a URL's user-info (``https://user:password@host``) — wherever it appears, once a URL
that carries it has been seen (``remember``), also percent-decoded or split from its URL.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from typing import Iterator, TextIO
from urllib.parse import unquote

MASK = "***"
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|AUTH_STRING|ACCESS_KEY|API_KEY|PASSWD", re.IGNORECASE)
# the user-info runs to the LAST '@' of the authority, as urllib and requests read it: a password
# may hold '@' and ':' (and the user may be empty)
URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<info>[^/\s?#]*)@(?=[^@/\s?#]*)")
_REMEMBERED: set[str] = set()


def remember(*texts: str | None) -> None:
    """Treat the password of every URL in ``texts`` as a secret from now on — raw and
    percent-decoded — so that it is masked wherever it turns up, with or without its URL."""
    for text in texts:
        for m in URL_USERINFO.finditer(text or ""):
            user, sep, pw = m["info"].partition(":")
            for value in (pw, unquote(pw)) if sep else (user, unquote(user)):
                if len(value) >= 4:
                    _REMEMBERED.add(value)


def secret_values() -> list[str]:
    """The secrets known now, longest first (so a secret inside another is masked whole)."""
    found = set(_REMEMBERED)
    for name, value in os.environ.items():
        if not value or not SECRET_NAME.search(name):
            continue
        found.add(value)
        if "AUTH_STRING" in name.upper() and ":" in value:
            found.add(value.split(":", 1)[1])
    return sorted((v for v in found if len(v) >= 4), key=len, reverse=True)  # 1–3 characters would mask noise


def _mask_userinfo(m: re.Match) -> str:
    user, sep, _pw = m["info"].partition(":")
    return f"{m['scheme']}{user}:{MASK}@" if sep else f"{m['scheme']}{MASK}@"


def redact(text: str) -> str:
    """``text`` with every secret (see the module docstring) replaced by ``***``."""
    if not text:
        return text
    out = URL_USERINFO.sub(_mask_userinfo, text)
    for value in secret_values():
        out = out.replace(value, MASK)
    return out


def strip_userinfo(uri: str) -> str:
    """``uri`` without its user-info: what may be written to a file (credentials come from the
    environment when the file is read back: MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD)."""
    return URL_USERINFO.sub(lambda m: m["scheme"], uri)


class RedactingStream(io.TextIOBase):
    """A text stream that redacts each write before passing it on (stdout and stderr of a nai3
    process: its own lines, MLflow's run links, tracebacks, warnings, progress)."""

    def __init__(self, inner: TextIO):
        self.inner = inner

    def write(self, s: str) -> int:
        self.inner.write(redact(s))
        return len(s)

    def flush(self) -> None:
        self.inner.flush()

    def isatty(self) -> bool:
        return self.inner.isatty()

    def fileno(self) -> int:
        return self.inner.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.inner, "encoding", "utf-8")

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


@contextlib.contextmanager
def redacted_output() -> Iterator[None]:
    """stdout and stderr redacted for the duration (installed before anything else prints)."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = RedactingStream(sys.stdout), RedactingStream(sys.stderr)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        sys.stdout, sys.stderr = saved
