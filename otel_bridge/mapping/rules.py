"""Rule tables: the data that says which attribute keys fill which call field.

The defaults ship as `rules.yaml` beside this file. Tables are compiled once into key paths, so the hot
path walks tuples and never splits strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

__all__ = ["Rules", "Source", "compile_rules", "default_tables", "DEFAULT_RULES"]

# A source is the attribute key as written (used as the key in inputs/output) and its path.
Source = tuple[str, tuple[str, ...]]


def _sources(keys: list[str]) -> tuple[Source, ...]:
    return tuple((key, tuple(key.split("."))) for key in keys)


@dataclass(frozen=True, slots=True)
class Rules:
    inputs: tuple[Source, ...]
    output: tuple[Source, ...]
    attributes: dict[str, tuple[Source, ...]]
    usage: dict[str, tuple[Source, ...]]
    fields: dict[str, tuple[Source, ...]]
    tables: dict[str, Any]  # the tables as plain data, as check-config shows them

    def field(self, name: str) -> tuple[Source, ...]:
        return self.fields.get(name, ())


def default_tables() -> dict[str, Any]:
    text = resources.files("otel_bridge.mapping").joinpath("rules.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def compile_rules(tables: dict[str, Any]) -> Rules:
    return Rules(
        inputs=_sources(tables["inputs"]),
        output=_sources(tables["output"]),
        attributes={name: _sources(keys) for name, keys in tables["attributes"].items()},
        usage={name: _sources(keys) for name, keys in tables["usage"].items()},
        fields={name: _sources(keys) for name, keys in tables["fields"].items()},
        tables=tables,
    )


DEFAULT_RULES = compile_rules(default_tables())
