"""Rules.narrowed: the sources a span's attribute keys can reach, worked out once per key set."""

from __future__ import annotations

from otel_bridge.mapping import DEFAULT_RULES


def _keys(sources: tuple) -> list[str]:
    return [key for key, _ in sources]


def test_keeps_a_source_at_inside_or_above_a_key() -> None:
    narrowed = DEFAULT_RULES.narrowed(("gen_ai.input.messages", "gen_ai.usage.input_tokens", "gen_ai.request.model"))
    assert _keys(narrowed.inputs) == ["gen_ai.input.messages"]  # at the key
    usage = dict(narrowed.usage)
    assert _keys(usage["input_tokens"]) == ["gen_ai.usage.input_tokens"]
    assert "gen_ai.usage.input_tokens.cached" in _keys(usage["cache_read_input_tokens"])  # inside the key's value
    assert "gen_ai.request" in _keys(dict(narrowed.attributes)["model_parameters"])  # above the key: its subtree


def test_drops_what_no_key_reaches_and_keeps_order() -> None:
    narrowed = DEFAULT_RULES.narrowed(("input.value", "llm.model_name"))
    assert _keys(narrowed.inputs) == ["input.value", "input"]  # `input` holds the subtree input.value
    assert all(not key.startswith("gen_ai.") for key in _keys(narrowed.output))
    assert "output_tokens" not in dict(narrowed.usage)


def test_is_cached_per_key_set() -> None:
    keys = ("gen_ai.operation.name", "gen_ai.request.model")
    assert DEFAULT_RULES.narrowed(keys) is DEFAULT_RULES.narrowed(keys)
    assert DEFAULT_RULES.narrowed(()).inputs == ()
