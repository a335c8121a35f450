"""Run configuration: YAML file + ``--set key=value`` overrides, validated before any work starts.

A config is a tree of frozen pydantic models (``schema``). Unknown keys, wrong types and out-of-range
values are refused with a ``ConfigError`` naming the dotted key (``errors``). Every run logs the fully
resolved config (``hashing.to_dict``); ``overrides`` loads files, ``factorial`` expands matrices.
"""
from .errors import ConfigError
from .factorial import FACTORIAL_AXES, expand_factorial
from .hashing import stable_hash, to_dict
from .overrides import apply_override, load_config
from .schema import AblationConfig, DataConfig, EvalConfig, ModelConfig, TrainConfig, VariantConfig, from_dict

__all__ = ["ConfigError", "DataConfig", "ModelConfig", "TrainConfig", "VariantConfig", "EvalConfig", "AblationConfig",
           "load_config", "apply_override", "expand_factorial", "FACTORIAL_AXES", "stable_hash", "to_dict", "from_dict"]

