"""The `mapping:` section: editing the rule tables from the config, and the rewrites it configures."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import yaml
from conftest import bridge_settings
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from spans import request, span

from otel_bridge.config import Settings, load_settings
from otel_bridge.errors import ConfigError
from otel_bridge.decode.limits import DEFAULT_LIMITS
from otel_bridge.mapping import Rules, build_rules, default_tables
from otel_bridge.pipeline import map_request
from otel_bridge.decode.redact import DEFAULT_REDACTION
from otel_bridge.rule_tables import TABLES

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = Path(__file__).resolve().parent / "testdata" / "config"
OTLP = Path(__file__).resolve().parent / "testdata" / "otlp"
DEFAULTS = default_tables()


def tables_of(path: Path) -> dict:
    return build_rules(load_settings(path).mapping.edits()).tables


def test_no_mapping_section_means_the_default_tables() -> None:
    assert build_rules(Settings().mapping.edits()).tables == DEFAULTS


# Beside the tables, mapping: holds redact and limits (tests/test_hostile.py).
NOT_TABLES = {"redact", "limits"}


def test_every_table_can_be_edited_from_the_config() -> None:
    assert set(type(Settings().mapping).model_fields) - NOT_TABLES == set(DEFAULTS)


def test_the_one_list_of_tables_names_each_default_and_each_compiled_table() -> None:
    """rule_tables.TABLES is the list; rules.yaml gives each a default and Rules has a field for each."""
    compiled = {f.name for f in dataclasses.fields(Rules)} - {"tables", "scopes", "_narrowed"}
    assert set(TABLES) | {"scopes"} == set(DEFAULTS)
    assert set(TABLES) == compiled


def test_edits_give_the_effective_tables() -> None:
    tables = tables_of(CONFIGS / "mapping.yaml")
    assert tables["thread_id"] == ["app.chat_id", *DEFAULTS["thread_id"]]
    assert tables["inputs"] == [*DEFAULTS["inputs"], "app.request"]
    assert tables["display_name"] == ["app.title", "wandb.display_name"]
    assert tables["attributes"]["customer"] == ["app.customer.id"]
    assert "agent_id" not in tables["attributes"]
    assert tables["attributes"]["model"] == ["app.model", *DEFAULTS["attributes"]["model"]]
    assert tables["usage"]["audio_input_tokens"] == ["gen_ai.usage.details.input_audio_tokens"]
    assert tables["model_responses"] == [*DEFAULTS["model_responses"], "app.response_id"]
    assert tables["usage_rollups"]["app.step"] == ["run"]
    kept = {name: edits for name, edits in DEFAULTS["scopes"].items() if name != "com.anthropic.claude_code.tracing"}
    assert tables["scopes"] == {**kept, "app.tracer": {"usage": {"input_tokens": {"prepend": ["tokens_in"]}}}}
    assert tables["input_message_events"]["app.user.message"] == "user"
    assert tables["drop"] == ["http.request.header.authorization", "app.secret"]
    assert tables["rename"] == {"app.conversation": "gen_ai.conversation.id"}
    untouched = set(DEFAULTS) - {"thread_id", "inputs", "display_name", "attributes", "usage", "model_responses",
                                 "usage_rollups", "scopes", "input_message_events", "drop", "rename"}
    assert {name: tables[name] for name in untouched} == {name: DEFAULTS[name] for name in untouched}
    assert DEFAULTS == default_tables()  # the defaults themselves are never modified


def test_prepending_a_key_already_in_a_table_moves_it() -> None:
    last = DEFAULTS["thread_id"][-1]
    settings = Settings.model_validate({"mapping": {"thread_id": {"prepend": [last]}}})
    assert build_rules(settings.mapping.edits()).tables["thread_id"] == [last, *DEFAULTS["thread_id"][:-1]]


def test_errors_name_every_problem_with_its_key() -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(CONFIGS / "mapping_errors.yaml")
    message = str(raised.value)
    for expected in (
        "`mapping.thread`: unknown key",
        "`mapping.inputs`: unknown key 'prepnd': a table is edited with prepend and append",
        "`mapping.output` ('app.response'): expected a list (it replaces the table) or {prepend: [...], append: [...]}",
        "`mapping.attributes.model`: attribute key 'gen_ai..model' has an empty part",
        "`mapping.usage_rollups.app.step`: expected a non-empty string, found 1",
        "`mapping.rename.app.a` (' spaced '): attribute key ' spaced ' has an empty part or surrounding spaces",
    ):
        assert expected in message
    assert message.count("\n  - ") == 6


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "otel_bridge", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={key: value for key, value in os.environ.items() if key not in ("WEAVE_PROJECT", "WANDB_API_KEY")},
    )


def test_check_config_prints_the_effective_tables_which_load_back(tmp_path: Path) -> None:
    result = _cli("check-config", "--config", str(CONFIGS / "mapping.yaml"))
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)["mapping"]
    effective = tables_of(CONFIGS / "mapping.yaml")
    assert printed["attributes"]["agent_id"] is None  # a removed default entry shows as removed
    assert printed["scopes"]["com.anthropic.claude_code.tracing"] is None
    assert {name: table for name, table in printed.items() if name not in ("attributes", "scopes", *NOT_TABLES)} == {
        name: table for name, table in effective.items() if name not in ("attributes", "scopes")
    }
    assert printed["redact"] == {"default_rules": True, "keys": [], "patterns": []}
    again = tmp_path / "again.yaml"
    again.write_text(yaml.safe_dump({"mapping": printed}))
    assert tables_of(again) == effective


EXAMPLE_1 = {"scopes": {"acme.llm": {"usage": {"input_tokens": {"prepend": ["tokens_in"]},
                                                "output_tokens": {"prepend": ["tokens_out"]}},
                                      "attributes": {"model": {"append": ["model"]}}}}}


def test_worked_example_scope_edits_read_bare_keys_on_that_scope_only() -> None:
    """README, worked example 1: bare keys read on the spans of one instrumentation scope, nowhere else."""
    rules = build_rules(Settings.model_validate({"mapping": EXAMPLE_1}).mapping.edits())
    sent = {"model": "m-1", "tokens_in": 12, "tokens_out": 3}
    usage = {}
    for scope in ("acme.llm", "other.scope"):
        result = map_request(request(span(attributes=sent), scope=(scope, "1")).SerializeToString(), header_project=None,
                             default_project="e/p", rules=rules, limits=DEFAULT_LIMITS, redaction=DEFAULT_REDACTION)
        usage[scope] = orjson.loads(result.calls["e/p"][0])["summary"].get("usage")
    assert usage == {"acme.llm": {"m-1": {"input_tokens": 12, "output_tokens": 3, "total_tokens": 15, "requests": 1}},
                     "other.scope": None}


EXAMPLE_2 = {
    "attributes": {"customer": ["app.customer.id"]},
    "usage": {"input_tokens": {"append": ["app.llm.tokens_in"]}, "output_tokens": {"append": ["app.llm.tokens_out"]}},
    "drop": ["http.request.header.authorization"],
    "rename": {"app.llm.model": "gen_ai.request.model"},
}


def test_worked_example_in_house_attributes_through_grpc(upstream, start_bridge) -> None:
    """README, worked example 2, through a running bridge: in-house spellings read, a header dropped."""
    import grpc

    bridge = start_bridge(bridge_settings(upstream, mapping=EXAMPLE_2))
    sent = span(
        "summarize",
        {
            "app.kind": "llm",
            "app.llm.model": "mistral-large-2411",
            "app.llm.tokens_in": 812,
            "app.llm.tokens_out": 64,
            "app.customer.id": "c-19",
            "http.request.header.authorization": "Bearer sk-secret",
        },
    )
    with grpc.insecure_channel(bridge.grpc_endpoint) as channel:
        trace_service_pb2_grpc.TraceServiceStub(channel).Export(
            request(sent, resource={"wandb.entity": "e", "wandb.project": "p"}), timeout=10
        )
    (call,) = upstream.wait_for_calls(1)
    assert call["summary"]["usage"] == {
        "mistral-large-2411": {"input_tokens": 812, "output_tokens": 64, "total_tokens": 876, "requests": 1}
    }
    assert call["attributes"]["customer"] == "c-19"
    assert call["attributes"]["model"] == "mistral-large-2411"
    assert "Bearer sk-secret" not in orjson.dumps(call).decode()
    assert call["otel_dump"]["attributes"]["gen_ai"] == {"request": {"model": "mistral-large-2411"}}


def _mapped(attributes: dict, mapping: dict, events: list | None = None) -> dict:
    rules = build_rules(Settings.model_validate({"mapping": mapping}).mapping.edits())
    result = map_request(request(span(attributes=attributes, events=events)).SerializeToString(), header_project=None,
                         default_project="e/p", rules=rules, limits=DEFAULT_LIMITS, redaction=DEFAULT_REDACTION)
    (encoded,) = result.calls["e/p"]
    return orjson.loads(encoded)


def test_drop_takes_everything_under_a_key_from_span_and_event_attributes() -> None:
    call = _mapped(
        {"llm.input_messages.0.message.content": "secret", "llm.model_name": "m", "input.value": "kept"},
        {"drop": ["llm.input_messages"]},
        events=[("gen_ai.client.inference.operation.details", {"llm.input_messages": '[{"content": "secret"}]'})],
    )
    assert "secret" not in orjson.dumps(call).decode()
    assert call["otel_dump"]["attributes"]["llm"] == {"model_name": "m"}
    assert call["inputs"] == {"input.value": "kept"}


@pytest.mark.parametrize(
    ("attributes", "rename", "expected"),
    [
        pytest.param({"sid": "s1"}, {"sid": "gen_ai.conversation.id"}, {"gen_ai": {"conversation": {"id": "s1"}}},
                     id="flat-to-dotted"),
        pytest.param({"a.b.c": 1, "a.b.d": 2}, {"a.b": "x"}, {"x": {"c": 1, "d": 2}, "a": {}}, id="subtree-moves"),
        pytest.param({"a.b": 1, "x.c": 2}, {"a": "x"}, {"x": {"b": 1, "c": 2}}, id="merged-into-existing"),
        pytest.param({"a": 1}, {"missing": "x"}, {"a": 1}, id="absent-key-nothing-happens"),
        pytest.param(  # as the values of one key merge: depth first, lists by index, nothing lost
            {"app.out.0.calls.1.id": "c1", "out": '[{"calls": [{"id": "c0"}], "role": "assistant"}]'},
            {"app.out": "out"},
            {"app": {}, "out": [{"calls": [{"id": "c0"}, {"id": "c1"}], "role": "assistant"}]},
            id="merged-deep-with-lists",
        ),
        pytest.param({"a": 1, "x.y": 2}, {"a": "x"}, {"x": {"_value": 1, "y": 2}}, id="scalar-beside-subtree-kept"),
    ],
)
def test_rename(attributes: dict, rename: dict, expected: dict) -> None:
    assert _mapped(attributes, {"rename": rename})["otel_dump"]["attributes"] == expected


def test_renamed_attribute_feeds_the_tables() -> None:
    call = _mapped({"app.session": "s-9"}, {"rename": {"app.session": "gen_ai.conversation.id"}})
    assert (call["thread_id"], call["turn_id"]) == ("s-9", call["id"])


def test_input_schemas_map_the_arguments_a_schema_names_on_its_scope_only() -> None:
    """Logfire's scope: the plain attributes logfire.json_schema lists are the inputs, `return` the output;
    the same attributes on another scope are not read that way."""
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "days": {}, "return": {}}}
    sent = {"city": "Paris", "days": 3, "return": "sunny", "code.function": "forecast",
            "logfire.json_schema": orjson.dumps(schema).decode()}
    calls = {}
    for scope in ("logfire", "other.scope"):
        result = map_request(request(span("forecast", attributes=sent), scope=(scope, "1")).SerializeToString(),
                             header_project=None, default_project="e/p", rules=build_rules({}),
                             limits=DEFAULT_LIMITS, redaction=DEFAULT_REDACTION)
        calls[scope] = orjson.loads(result.calls["e/p"][0])
    assert calls["logfire"]["inputs"] == {"city": "Paris", "days": 3}
    assert calls["logfire"]["output"] == {"return": "sunny"}
    assert "city" not in calls["other.scope"]["inputs"]
    assert calls["other.scope"]["output"] == {}
