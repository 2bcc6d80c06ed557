"""The mapping's rule tables, listed once: each table's name and kind.

`mapping/rules.yaml` gives every table here its default, `config.py` validates the `mapping:` edits of
each by its kind, and `mapping/rules.py` compiles each by its kind. A new table is a line here, its
default in rules.yaml and a field of `Rules`; a test checks that the three agree.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["TABLES", "TableKind"]

TableKind = Literal["sources", "keys", "values", "names", "named_sources", "value_sets", "renames"]
# sources        attribute keys, read in order: the first with a value wins
# keys           attribute keys, each acted on (drop)
# values         plain strings: event names, usage fields
# names          entry -> one name (an event's role)
# named_sources  entry (a call field) -> attribute keys, read in order
# value_sets     attribute key -> a set of values: those it may take (usage_rollups), the schema
#                properties that are not inputs (input_schemas)
# renames        attribute key -> attribute key

TABLES: dict[str, TableKind] = {
    "inputs": "sources",
    "input_schemas": "value_sets",
    "output": "sources",
    "content_events": "values",
    "log_content_scopes": "values",
    "input_message_events": "names",
    "output_message_events": "names",
    "attributes": "named_sources",
    "custom_attributes": "sources",
    "usage": "named_sources",
    "model_responses": "sources",
    "usage_rollups": "value_sets",
    "input_excludes": "values",
    "op_name": "sources",
    "display_name": "sources",
    "thread_id": "sources",
    "is_turn": "sources",
    "root_turn": "sources",
    "wb_run_id": "sources",
    "wb_run_step": "sources",
    "wb_run_step_end": "sources",
    "started_at": "sources",
    "ended_at": "sources",
    "exception": "sources",
    "exception_details": "sources",
    "drop": "keys",
    "rename": "renames",
}
