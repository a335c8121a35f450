"""One error type for every bad config, always naming the dotted key to fix.

Validators raise ``reason``/``reason_at`` (pydantic custom errors carrying our text); ``config_error``
turns the resulting ``ValidationError`` into a ``ConfigError`` whose lines read
``config error at variants[0].prediction: must be ...``.
"""
from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError

ROOT = "config"


class ConfigError(ValueError):
    """A configuration that must be fixed before anything runs."""


def reason(msg: str) -> PydanticCustomError:
    """Our own message for the field being validated (no pydantic prefix added)."""
    return PydanticCustomError("config", "{reason}", {"reason": msg})


def reason_at(field: str | tuple[int | str, ...], msg: str) -> PydanticCustomError:
    """A model-level (cross-field) check blamed on one field (or a path below the model), so the key
    points where to edit."""
    return PydanticCustomError("config", "{reason}", {"reason": msg, "field": field})


def dotted(root: str, loc: tuple[int | str, ...]) -> str:
    """('variants', 0, 'prediction') → 'variants[0].prediction'; the 'config' root is left out."""
    key = "" if root == ROOT else root
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key or root


def _model_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    tp: Any = model
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(part, str):
            if not (isinstance(tp, type) and issubclass(tp, BaseModel)) or part not in tp.model_fields:
                return None
            tp = tp.model_fields[part].annotation
        elif typing.get_origin(tp) is tuple:
            tp = typing.get_args(tp)[0]
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) in (typing.Union, types.UnionType, typing.Annotated):
        if typing.get_origin(tp) is typing.Annotated:
            tp = typing.get_args(tp)[0]
        else:
            tp = next(a for a in typing.get_args(tp) if a is not type(None))
    return tp


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _message(err: Any, model: type[BaseModel]) -> str:
    kind, value, ctx = err["type"], _short(err.get("input")), err.get("ctx") or {}
    if kind == "config":
        return ctx["reason"]
    if kind == "extra_forbidden":
        owner = _model_at(model, err["loc"][:-1])
        return "unknown key" + (f"; known: {sorted(owner.model_fields)}" if owner else "")
    if kind == "missing":
        return "is required"
    if kind == "literal_error":
        return f"must be {ctx['expected']}, got {value}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping, got {type(err.get('input')).__name__}"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    plain = {"float_type": "expected a number", "int_type": "expected an integer", "bool_type": "expected true/false",
             "string_type": "expected a string", "tuple_type": "expected a list"}
    if kind in plain:
        return f"{plain[kind]}, got {value}"
    return err["msg"]


def config_error(exc: ValidationError, model: type[BaseModel], root: str = ROOT) -> ConfigError:
    """All of pydantic's complaints, one ``config error at <key>: <why>`` line each."""
    lines = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        field = (err.get("ctx") or {}).get("field")
        if err["type"] == "config" and field:
            loc += tuple(field) if isinstance(field, (tuple, list)) else (field,)
        line = f"config error at {dotted(root, loc)}: {_message(err, model)}"
        if line not in lines:
            lines.append(line)
    return ConfigError("\n".join(lines))
