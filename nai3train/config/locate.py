"""Where a config or prompt file named on the command line is.

A path the user gives is read relative to the current directory, as people expect. The configs
nai3 ships (``configs/`` in the repository, installed with the package as data) are found by name
from anywhere: ``smoke``, ``smoke.yaml`` and ``configs/smoke.yaml`` all name the bundled smoke
config when no such file exists where the command runs.
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from .errors import ConfigError

BUNDLED = "bundled"  # nai3train/config/bundled: the repository's configs/, shipped as package data


def bundled_root() -> Path:
    """The installed copy of ``configs/`` (a real folder in a wheel, the repository's in a checkout)."""
    return Path(str(files("nai3train.config") / BUNDLED))


def bundled_names() -> list[str]:
    root = bundled_root()
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.suffix in (".yaml", ".txt"))


def locate(path: str | Path, what: str = "config file") -> Path:
    """The file ``path`` names: relative to the current directory first, else a bundled file of that
    name. A ConfigError that lists the bundled names when neither exists."""
    given = Path(path).expanduser()
    if given.is_file():
        return given.resolve()
    parts = given.parts[1:] if given.parts[:1] == ("configs",) else given.parts
    root = bundled_root()
    for candidate in (root.joinpath(*parts), root.joinpath(*parts).with_suffix(".yaml")):
        if parts and candidate.is_file():
            return candidate.resolve()
    raise ConfigError(f"{what} {path} does not exist here ({Path.cwd()}) and is not one nai3 ships; "
                      f"shipped: {', '.join(bundled_names())}")
