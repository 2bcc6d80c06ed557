"""Span -> call: a pure function of (span, scope, resource, rules) over decoded data (otel_bridge.decode.decoded);
the rules are data (rules.yaml). Nothing here reads bytes."""

from otel_bridge.mapping.request import NO_PROJECT, MappedRequest, map_resource_spans
from otel_bridge.mapping.rules import DEFAULT_RULES, Rules, as_config, build_rules, compile_rules, default_tables
from otel_bridge.mapping.span import map_span

__all__ = [
    "DEFAULT_RULES",
    "NO_PROJECT",
    "MappedRequest",
    "Rules",
    "as_config",
    "build_rules",
    "compile_rules",
    "default_tables",
    "map_resource_spans",
    "map_span",
]
