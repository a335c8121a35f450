"""Secrets never leave the environment: whatever nai3 logs (MLflow params and tags, printed URLs,
error messages) passes through ``redact`` first.

A secret is the value of an environment variable whose name says so (PASSWORD, TOKEN, SECRET,
AUTH_STRING, ACCESS_KEY, API_KEY), the password half of a ``user:password`` auth string, and the
password in a URL's user-info (``https://user:password@host``).
"""
from __future__ import annotations

import os
import re

MASK = "***"
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|AUTH_STRING|ACCESS_KEY|API_KEY|PASSWD", re.IGNORECASE)
URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]+):(?P<pw>[^@/\s]+)@")


def secret_values() -> list[str]:
    """The secrets in the current environment, longest first (so a secret inside another is masked whole)."""
    found = set()
    for name, value in os.environ.items():
        if not value or not SECRET_NAME.search(name):
            continue
        found.add(value)
        if "AUTH_STRING" in name.upper() and ":" in value:
            found.add(value.split(":", 1)[1])
    return sorted((v for v in found if len(v) >= 4), key=len, reverse=True)  # 1–3 characters would mask noise


def redact(text: str) -> str:
    """``text`` with every secret (see the module docstring) replaced by ``***``."""
    if not text:
        return text
    out = URL_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    for value in secret_values():
        out = out.replace(value, MASK)
    return out
