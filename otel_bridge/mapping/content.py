"""call.inputs and call.output: from the span's attributes, else from the span events that carry content.

`trees` is the span's attribute tree followed by the attribute trees of its content events
(rules.content_events): the first tree with a value wins, so what the span's attributes say comes first,
as in Weave's own ingestion.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from otel_bridge.decode.otlp import key_path
from otel_bridge.mapping.lookup import find, first_truthy
from otel_bridge.mapping.rules import Rules

__all__ = ["inputs", "output", "messages"]

_WRAPPED_INPUTS = ("input", "inputs")
_WRAPPED_OUTPUTS = ("output", "outputs")
# Messages from one-event-per-message spans go where the attributes those events replaced went.
_INPUT_MESSAGES_KEY = "gen_ai.prompt"
_OUTPUT_MESSAGES_KEY = "gen_ai.completion"


def _named_by_schema(tree: dict[str, Any], rules: Rules) -> dict[str, Any] | None:
    """The attributes the first input schema (input_schemas) names in its `properties`, but those its entry
    leaves out, each under its key as sent; None when the schemas name no attribute that is present."""
    for path, not_inputs in rules.input_schemas:
        schema = find(tree, path)
        properties = schema.get("properties") if type(schema) is dict else None
        if type(properties) is not dict:
            continue
        named = {}
        for key in properties:
            if key in not_inputs:
                continue
            value = find(tree, key_path(key))  # where attribute_tree put it, dotted or past the depth limit
            if value is not None:
                named[key] = value
        if named:
            return named
    return None


def inputs(trees: Sequence[dict[str, Any]], rules: Rules) -> dict[str, Any] | None:
    """The attributes an input schema of the span names, else the first input source found, stored under
    the key it was found at; a generic `input`/`inputs` holding a dict is unwrapped, as Weave's own
    ingestion does. None when nothing is found."""
    if rules.input_schemas:  # empty but for the scopes that set it (Logfire)
        named = _named_by_schema(trees[0], rules)
        if named is not None:
            return named
    for tree in trees:
        found = first_truthy(tree, rules.inputs)
        if found is not None:
            key, value = found
            if key in _WRAPPED_INPUTS and type(value) is dict:
                return value
            return {key: value}
    return None


def output(trees: Sequence[dict[str, Any]], rules: Rules) -> Any:
    """Like inputs; a generic `output`/`outputs` is unwrapped whatever its type. None when nothing is found."""
    for tree in trees:
        found = first_truthy(tree, rules.output)
        if found is not None:
            key, value = found
            return value if key in _WRAPPED_OUTPUTS else {key: value}
    return None


def _body(tree: dict[str, Any]) -> dict[str, Any]:
    """A message event's fields. Some SDKs (Azure AI Inference) send them as one JSON attribute,
    gen_ai.event.content; the others as attributes beside gen_ai.system, which names the provider."""
    gen_ai = tree.get("gen_ai")
    if type(gen_ai) is dict:
        event = gen_ai.get("event")
        if type(event) is dict and type(event.get("content")) is dict:
            return event["content"]
    return {key: value for key, value in tree.items() if key != "gen_ai"}


def _choice(body: dict[str, Any], role: str) -> dict[str, Any]:
    """A gen_ai.choice event ({index, finish_reason, message: {...}}) as one message. A message that is not
    an object (Strands sends the answer as text, or as JSON text of content blocks) is its content."""
    message = body.get("message")
    fields = {key: value for key, value in body.items() if key != "message"}
    if type(message) is dict:
        return {"role": role, **message, **fields}
    return {"role": role, **({} if message is None else {"content": message}), **fields}


def messages(events: Sequence[tuple[str, dict[str, Any]]], rules: Rules) -> tuple[dict | None, dict | None]:
    """(inputs, output) from one-event-per-message spans (OTel GenAI v1.28-v1.36), None where there are
    no such events. Each message keeps its event's fields; its role is the event's, else the table's."""
    sent: list[dict[str, Any]] = []
    received: list[dict[str, Any]] = []
    for name, tree in events:
        role = rules.input_message_events.get(name)
        if role is not None:
            sent.append({"role": role, **_body(tree)})
            continue
        role = rules.output_message_events.get(name)
        if role is not None:
            received.append(_choice(_body(tree), role))
    return (
        {_INPUT_MESSAGES_KEY: sent} if sent else None,
        {_OUTPUT_MESSAGES_KEY: received} if received else None,
    )
