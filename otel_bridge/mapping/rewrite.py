"""The `drop` and `rename` tables: attribute rewrites applied to an attribute tree before it is mapped.

They work on the unflattened tree, so a key takes everything under it along: dropping `llm.input_messages`
removes `llm.input_messages.0.message.content` too, whether it was sent flat or as JSON.
"""

from __future__ import annotations

from typing import Any

from otel_bridge.mapping.rules import KeyPath, Rules
from otel_bridge.decode.otlp import CONFLICT_KEY

__all__ = ["rewrite"]


def _pop(tree: dict[str, Any], path: KeyPath) -> Any:
    node: Any = tree
    for part in path[:-1]:
        node = node.get(part) if type(node) is dict else None
        if node is None:
            return None
    return node.pop(path[-1], None) if type(node) is dict else None


def _put(tree: dict[str, Any], path: KeyPath, value: Any) -> None:
    node = tree
    for part in path[:-1]:
        child = node.get(part)
        if type(child) is not dict:
            child = node[part] = {} if child is None else {CONFLICT_KEY: child}
        node = child
    existing = node.get(path[-1])
    if type(existing) is dict and type(value) is dict:
        existing.update(value)
    else:
        node[path[-1]] = value


def rewrite(tree: dict[str, Any], rules: Rules) -> None:
    """Drops, then renames, in place; a rename of a key that is absent does nothing."""
    for path in rules.drop:
        _pop(tree, path)
    for old, new in rules.rename:
        value = _pop(tree, old)
        if value is not None:
            _put(tree, new, value)
