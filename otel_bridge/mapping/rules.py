"""Rule tables: the data that says which span attributes fill which call field.

The defaults ship as `rules.yaml` beside this file; the `mapping:` section of the config edits them
(`apply_edits`), and `compile_rules` turns the result into key paths once, so the hot path walks tuples
and never splits strings.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any

import yaml

from otel_bridge.decode.otlp import key_path
from otel_bridge.rule_tables import TABLES, TableKind

__all__ = [
    "DEFAULT_RULES",
    "KeyPath",
    "Rules",
    "Source",
    "apply_edits",
    "as_config",
    "build_rules",
    "compile_rules",
    "default_tables",
]

KeyPath = tuple[str, ...]
# A source is the attribute key as written (inputs/output store the value under it) and its path.
Source = tuple[str, KeyPath]
Sources = tuple[Source, ...]


def default_tables() -> dict[str, Any]:
    text = resources.files("otel_bridge.mapping").joinpath("rules.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def _edit_list(current: list[str], edit: Any) -> list[str]:
    """A list replaces the table; {prepend: [...], append: [...]} extends it (keys already in it move)."""
    if type(edit) is list:
        return list(edit)
    front, back = edit.get("prepend", []), edit.get("append", [])
    kept = [key for key in current if key not in front and key not in back]
    return [*front, *kept, *back]


def apply_edits(tables: dict[str, Any], edits: dict[str, Any]) -> dict[str, Any]:
    """The tables with the config's `mapping:` edits applied; `edits` is already validated (config.py).

    A list table takes a list edit. A table of named entries (attributes, usage, ...) takes, per entry, a
    list edit, a plain value for the message-event roles and renames, or null to remove the entry; a name
    that is not there yet adds an entry. A scope's entry in `scopes` is replaced by its edits as given.
    """
    result = copy.deepcopy(tables)
    for name, edit in edits.items():
        if edit is None:
            continue
        table = result[name]
        if type(table) is list:
            result[name] = _edit_list(table, edit)
            continue
        for entry, entry_edit in edit.items():
            if entry_edit is None:
                table.pop(entry, None)
            elif type(entry_edit) is str or name == "scopes":  # a scope's edits replace its entry whole
                table[entry] = entry_edit
            else:
                table[entry] = _edit_list(table.get(entry, []), entry_edit)
    return result


def _path(key: str) -> KeyPath:
    return tuple(key.split("."))


def _sources(keys: list[str]) -> Sources:
    return tuple((key, _path(key)) for key in keys)


def _value_sets(table: dict[str, list[str]]) -> tuple[tuple[KeyPath, frozenset[str]], ...]:
    return tuple((_path(key), frozenset(values)) for key, values in table.items())


# How a table of each kind (rule_tables.py) is compiled: into key paths, so the hot path never splits strings.
_COMPILE: dict[TableKind, Callable[[Any], Any]] = {
    "sources": _sources,
    "keys": lambda keys: tuple(_path(key) for key in keys),
    "values": frozenset,
    "names": dict,
    "named_sources": lambda table: tuple((name, _sources(keys)) for name, keys in table.items()),
    "value_sets": _value_sets,
    "renames": lambda table: tuple((_path(old), _path(new)) for old, new in table.items()),
}


@dataclass(frozen=True, slots=True)
class Rules:
    """The compiled tables: one attribute per table of rule_tables.TABLES, typed for the hot path."""

    inputs: Sources
    input_schemas: tuple[tuple[KeyPath, frozenset[str]], ...]
    output: Sources
    content_events: frozenset[str]
    log_content_scopes: frozenset[str]
    input_message_events: dict[str, str]
    output_message_events: dict[str, str]
    attributes: tuple[tuple[str, Sources], ...]
    custom_attributes: Sources
    usage: tuple[tuple[str, Sources], ...]
    model_responses: Sources
    usage_rollups: tuple[tuple[KeyPath, frozenset[str]], ...]
    input_excludes: frozenset[str]
    op_name: Sources
    display_name: Sources
    thread_id: Sources
    is_turn: Sources
    root_turn: Sources
    wb_run_id: Sources
    wb_run_step: Sources
    wb_run_step_end: Sources
    started_at: Sources
    ended_at: Sources
    exception: Sources
    exception_details: Sources
    drop: tuple[KeyPath, ...]
    rename: tuple[tuple[KeyPath, KeyPath], ...]
    tables: dict[str, Any]  # the effective tables as plain data, as check-config shows them
    # Instrumentation scope name -> the rules for its spans (the tables with that scope's edits).
    scopes: dict[str, Rules] = field(default_factory=dict, compare=False, repr=False)
    # Attribute keys of a span -> these rules without the sources no such span can have (see narrowed).
    _narrowed: dict[tuple[str, ...], Rules] = field(default_factory=dict, compare=False, repr=False)

    def for_scope(self, name: str) -> Rules:
        """The rules for the spans of an instrumentation scope."""
        return self.scopes.get(name, self)

    def narrowed(self, keys: tuple[str, ...]) -> Rules:
        """The rules for a span whose attribute trees were built from these keys, without a source that
        none of them can reach: most sources belong to conventions the span does not use, and a span of
        the same instrumentation comes with the same keys, so this is worked out once per key set.

        A source can find a value only at a key it names, inside a key's value (JSON, kvlist), or above
        keys (a subtree). Only for trees as attribute_tree builds them: not after drop/rename rewrites.
        """
        found = self._narrowed.get(keys)
        if found is None:
            if len(self._narrowed) >= _MAX_NARROWED:
                self._narrowed.clear()
            found = self._narrowed[keys] = _narrow(self, [key_path(key) for key in set(keys)])
        return found


# Distinct key sets remembered per Rules; instrumentations send few, and it is cleared when full.
_MAX_NARROWED = 1024


def _narrow(rules: Rules, key_paths: list[KeyPath]) -> Rules:
    def reachable(path: KeyPath) -> bool:
        return any(path[: len(key)] == key or key[: len(path)] == path for key in key_paths)

    def sources(table: Sources) -> Sources:
        return tuple(source for source in table if reachable(source[1]))

    def named(table: tuple[tuple[str, Sources], ...]) -> tuple[tuple[str, Sources], ...]:
        return tuple((name, kept) for name, table_sources in table if (kept := sources(table_sources)))

    def value_sets(table: tuple[tuple[KeyPath, frozenset[str]], ...]) -> tuple[tuple[KeyPath, frozenset[str]], ...]:
        return tuple(entry for entry in table if reachable(entry[0]))

    narrow: dict[TableKind, Callable[[Any], Any]] = {
        "sources": sources,
        "named_sources": named,
        "value_sets": value_sets,
    }
    kept = {name: narrow[kind](getattr(rules, name)) for name, kind in TABLES.items() if kind in narrow}
    return replace(rules, **kept, _narrowed={})


def compile_rules(tables: dict[str, Any]) -> Rules:
    """The tables compiled; each scope's rules are the tables with that scope's edits applied."""
    unscoped = {name: table for name, table in tables.items() if name != "scopes"}
    return _compile(
        tables,
        {name: _compile(apply_edits(unscoped, edits), {}) for name, edits in tables.get("scopes", {}).items()},
    )


def _compile(tables: dict[str, Any], scopes: dict[str, Rules]) -> Rules:
    compiled = {name: _COMPILE[kind](tables[name]) for name, kind in TABLES.items()}
    return Rules(**compiled, tables=tables, scopes=scopes)


def as_config(tables: dict[str, Any]) -> dict[str, Any]:
    """Effective tables as a `mapping:` section that gives them again: every table in full, and the
    default entries a table of named entries no longer has written as null (removed)."""
    config = copy.deepcopy(tables)
    for name, default in default_tables().items():
        if type(default) is dict:
            for entry in default:
                config[name].setdefault(entry, None)
    return config


def build_rules(edits: dict[str, Any]) -> Rules:
    """The rules for a config's `mapping:` edits (Mapping.edits())."""
    return compile_rules(apply_edits(default_tables(), edits))


DEFAULT_RULES = compile_rules(default_tables())
