"""The `drop` and `rename` tables: attribute rewrites applied to an attribute tree before it is mapped.

They work on the unflattened tree, so a key takes everything under it along: dropping `llm.input_messages`
removes `llm.input_messages.0.message.content` too, whether it was sent flat or as JSON. A renamed value
meets what is at its new key as the values of one key meet in the tree (decode.otlp.merge_at).
"""

from __future__ import annotations

from typing import Any

from otel_bridge.mapping.rules import KeyPath, Rules
from otel_bridge.decode.otlp import merge_at

__all__ = ["rewrite"]


def _pop(tree: dict[str, Any], path: KeyPath) -> Any:
    node: Any = tree
    for part in path[:-1]:
        node = node.get(part) if type(node) is dict else None
        if node is None:
            return None
    return node.pop(path[-1], None) if type(node) is dict else None


def rewrite(tree: dict[str, Any], rules: Rules) -> None:
    """Drops, then renames, in place; a rename of a key that is absent does nothing."""
    for path in rules.drop:
        _pop(tree, path)
    for old, new in rules.rename:
        value = _pop(tree, old)
        if value is not None:
            merge_at(tree, new, value)
