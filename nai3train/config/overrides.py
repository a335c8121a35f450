"""From a YAML file plus ``--set key=value`` overrides to a validated AblationConfig."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .factorial import expand_factorial
from .locate import locate
from .schema import AblationConfig, from_dict
from .yaml_limits import YAMLTooLarge, safe_yaml


def read_yaml(path: str | Path) -> Any:
    """The file's YAML tree (``locate``: relative to the current directory, else a shipped config
    of that name); a missing or unparsable file is a ConfigError, not a traceback."""
    p = locate(path)
    try:
        return safe_yaml(p.read_text(errors="replace"), f"config file {p}") or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
    except (YAMLTooLarge, OSError) as e:
        raise ConfigError(str(e)) from None


def apply_override(tree: dict, assignment: str) -> None:
    """``train.steps=100`` → tree['train']['steps'] = 100 (value parsed as YAML).

    ``variants.<name>.field=value`` addresses a variant by its name, not its position."""
    path, eq, raw = assignment.partition("=")
    parts = path.strip().split(".")
    if not eq or not all(parts):
        raise ConfigError(f"override {assignment!r} must look like key.path=value")
    key = ".".join(parts)
    try:
        value = safe_yaml(raw, f"the value of {key}")
    except YAMLTooLarge as e:
        raise ConfigError(f"config error at {key}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config error at {key}: value {raw!r} is not valid YAML: {e}") from None
    node: Any = tree
    for depth, p in enumerate(parts[:-1]):
        if isinstance(node, list):
            matches = [v for v in node if isinstance(v, dict) and v.get("name") == p]
            if not matches:
                raise ConfigError(f"override {assignment!r}: no variant named {p!r}")
            node = matches[0]
        elif isinstance(node, dict):
            if node.get(p) is None:
                node[p] = {}
            node = node[p]
        else:
            raise _not_a_mapping(parts[:depth], node)
    if isinstance(node, list):
        raise ConfigError(f"config error at {key}: set one field of a variant by name: "
                          f"{'.'.join(parts[:-1])}.<name>.<field>=value")
    if not isinstance(node, dict):
        raise _not_a_mapping(parts[:-1], node)
    node[parts[-1]] = value


def _not_a_mapping(parts: list[str], node: Any) -> ConfigError:
    return ConfigError(f"config error at {'.'.join(parts) or 'config'}: expected a mapping, got {type(node).__name__}")


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> AblationConfig:
    """Read a YAML config (or the defaults), apply overrides, validate. Raises ConfigError.

    A ``factorial:`` mapping of axis → values (with an optional ``factorial_base:`` of shared variant
    fields) expands into ``variants`` (the full product); combinations that cannot be trained are
    listed in ``skipped_variants`` with the reason."""
    tree: Any = read_yaml(path) if path is not None else {}
    for o in overrides:
        apply_override(tree, o)
    if isinstance(tree, dict) and "factorial" in tree:
        axes = tree.pop("factorial")
        if not isinstance(axes, dict) or not all(isinstance(v, list) and v for v in axes.values()):
            raise ConfigError("config error at factorial: expected a mapping of axis → non-empty list of values")
        variants, skipped = expand_factorial(axes, tree.pop("factorial_base", None))
        tree["variants"] = list(tree.get("variants", [])) + variants
        tree["skipped_variants"] = skipped
    return from_dict(AblationConfig, tree)
