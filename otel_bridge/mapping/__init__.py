"""Span -> call: a pure function of (span, scope, resource, rules); the rules are data (rules.yaml)."""

from otel_bridge.mapping.request import NO_PROJECT, MappedRequest, Mapper, map_request
from otel_bridge.mapping.rules import DEFAULT_RULES, Rules, as_config, build_rules, compile_rules, default_tables
from otel_bridge.mapping.span import map_span

__all__ = [
    "DEFAULT_RULES",
    "NO_PROJECT",
    "MappedRequest",
    "Mapper",
    "Rules",
    "as_config",
    "build_rules",
    "compile_rules",
    "default_tables",
    "map_request",
    "map_span",
]
