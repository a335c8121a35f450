"""YAML from a user, within limits: a file size, and a count of the nodes the document expands to.

YAML anchors let a few hundred bytes expand to billions of nodes (the "billion laughs"): PyYAML
builds them as shared references, and the first walk over them (validation, hashing, JSON)
exhausts memory. The document is composed first, its expanded size counted over the node graph
(shared nodes counted as often as they are used, in linear time), and refused above the limit.
"""
from __future__ import annotations

from typing import Any

import yaml

MAX_BYTES = 1 << 20  # a config or claims spec is a few KiB
MAX_NODES = 200_000  # expanded: far above any real config, far below what exhausts memory


class YAMLTooLarge(ValueError):
    pass


def safe_yaml(text: str | bytes, what: str) -> Any:
    """``yaml.safe_load`` of ``text``, refused (``YAMLTooLarge``, naming the limit) when it is over
    MAX_BYTES or expands to over MAX_NODES nodes; parse errors are ``yaml.YAMLError`` as usual."""
    if len(text) > MAX_BYTES:
        raise YAMLTooLarge(f"{what} is {len(text)} bytes; the limit is {MAX_BYTES}")
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    if node is None:
        return None
    size: dict[int, int] = {}

    def expanded(n: yaml.Node, depth: int = 0) -> int:
        if id(n) in size:
            return size[id(n)]
        if depth > 100:
            raise YAMLTooLarge(f"{what} nests deeper than 100 levels")
        size[id(n)] = 1  # a recursive alias counts once on its way back
        if isinstance(n, yaml.SequenceNode):
            total = 1 + sum(expanded(c, depth + 1) for c in n.value)
        elif isinstance(n, yaml.MappingNode):
            total = 1 + sum(expanded(k, depth + 1) + expanded(v, depth + 1) for k, v in n.value)
        else:
            total = 1
        size[id(n)] = total
        if total > MAX_NODES:
            raise YAMLTooLarge(f"{what} expands to more than {MAX_NODES} YAML nodes (anchors and aliases?)")
        return total

    expanded(node)
    return yaml.safe_load(text)
