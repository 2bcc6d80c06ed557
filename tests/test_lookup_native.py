"""The rule look-ups in C (otel_bridge.mapping._lookup) against their Python reference (mapping/lookup.py): the same
results for the trees the decoder builds and the key paths rule tables hold, generated and hand-picked.

In CI the extension must be built (`pip install .` compiles it); elsewhere these tests skip without it.
"""

from __future__ import annotations

import math
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otel_bridge.mapping import lookup
from otel_bridge.decode.otlp import CONFLICT_KEY

if not lookup.NATIVE:
    if os.environ.get("CI"):
        pytest.fail("otel_bridge.mapping._lookup is not built: `pip install .` compiles it (needs a C compiler)", pytrace=False)
    pytest.skip("otel_bridge.mapping._lookup is not built", allow_module_level=True)

from otel_bridge.mapping import _lookup  # noqa: E402

REF = lookup.REFERENCE
PARTS = st.sampled_from(["gen_ai", "usage", "input_tokens", "0", "1", "2", "10", CONFLICT_KEY, "x", "", "\u0661", "\u00b2"])
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.sampled_from([2.0**63, -(2.0**63), 2.0**63 - 1024, 1e300, -0.0, 3.0, 3.5, math.nan, math.inf]),
    st.text(max_size=12),
    st.sampled_from(["12", " 12 ", "1_000", "+7", "-3", "0x10", "TRUE", "False", "true ", "", "\u0661\u0662", "9" * 25]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(PARTS, inner, max_size=4),
    max_leaves=20,
)
TREES = st.dictionaries(PARTS, VALUES, max_size=6)
PATHS = st.lists(PARTS, min_size=1, max_size=4).map(tuple)
SOURCES = st.lists(st.tuples(st.text(max_size=5), PATHS), max_size=5).map(tuple)
_SETTINGS = settings(
    max_examples=int(os.environ.get("LOOKUP_FUZZ_EXAMPLES", "400")),
    deadline=None,
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=[HealthCheck.too_slow],
)


def _same(a, b) -> bool:
    """Equal, NaN included, and of the same types (True is not 1 here)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b or a is b


def _outcome(function, *args):
    try:
        return ("ok", function(*args))
    except Exception as exc:  # int() of some Unicode digits raises in both
        return ("raises", type(exc))


@_SETTINGS
@given(TREES, PATHS)
def test_find(tree, path):
    native, python = _outcome(_lookup.find, tree, path), _outcome(REF["find"], tree, path)
    assert native[0] == python[0] and _same(native[1], python[1])


@_SETTINGS
@given(TREES, SOURCES)
def test_first_truthy_first_and_first_present(tree, sources):
    for name in ("first_truthy", "first", "first_present"):
        native, python = _outcome(getattr(_lookup, name), tree, sources), _outcome(REF[name], tree, sources)
        assert native[0] == python[0] and _same(native[1], python[1]), name


TABLES = st.lists(st.tuples(st.sampled_from(["model", "input_tokens", "x", ""]), SOURCES), max_size=4).map(tuple)


@_SETTINGS
@given(st.lists(TREES, min_size=1, max_size=3).map(tuple), TABLES)
def test_first_of_each(trees, table):
    native, python = _outcome(_lookup.first_of_each, trees, table), _outcome(REF["first_of_each"], trees, table)
    assert native[0] == python[0] and _same(native[1], python[1])
    if native[0] == "ok":
        assert list(native[1]) == list(python[1])  # the table's order: what a call's attributes show first


@_SETTINGS
@given(TREES, TABLES)
def test_counts(tree, table):
    native, python = _outcome(_lookup.counts, tree, table), _outcome(REF["counts"], tree, table)
    assert native[0] == python[0] and _same(native[1], python[1])


@_SETTINGS
@given(st.one_of(st.integers(0, 2**64 - 1), st.integers(-(2**70), 2**70), st.sampled_from([0, 999, 10**9 - 1, 2**63, 2**64 - 1])))
def test_iso_time(unix_nano):
    assert _outcome(_lookup.iso_time, unix_nano) == _outcome(REF["iso_time"], unix_nano)


def test_first_of_each_and_counts_examples():
    trees = ({"gen_ai": {"request": {"model": ""}}}, {"gen_ai": {"request": {"model": "m"}}, "llm": {"model": "n"}})
    table = (("model", (("", ("gen_ai", "request", "model")), ("", ("llm", "model")))), ("absent", (("", ("x",)),)))
    assert _lookup.first_of_each(trees, table) == REF["first_of_each"](trees, table) == {"model": "m"}
    tree = {"usage": {"input_tokens": "lots", "prompt_tokens": 7.0, "output_tokens": 0}}
    table = (
        ("input_tokens", (("", ("usage", "input_tokens")), ("", ("usage", "prompt_tokens")))),
        ("output_tokens", (("", ("usage", "output_tokens")),)),
    )
    assert _lookup.counts(tree, table) == REF["counts"](tree, table) == ({"input_tokens": 7, "output_tokens": 0}, 1)


@_SETTINGS
@given(st.one_of(VALUES, st.dictionaries(PARTS, VALUES, max_size=3)))
def test_conversions(value):
    for name in ("as_int", "as_str", "as_bool"):
        native, python = _outcome(getattr(_lookup, name), value), _outcome(REF[name], value)
        assert native[0] == python[0] and _same(native[1], python[1]), (name, value)


def test_a_null_array_item_is_absent():
    # Found by the generated trees: first_present must pass over it to the next source, as for a null value.
    tree, sources = {"gen_ai": [None, None]}, (("", ("gen_ai", "1")), ("", ("gen_ai",)))
    assert _lookup.first_present(tree, sources) == REF["first_present"](tree, sources) == [None, None]


@pytest.mark.parametrize(
    "value, expected",
    [(3.0, 3), (3.5, None), (2.0**63, None), (-(2.0**63), None), (2**63, None), (-(2**63), None), (2**63 - 1, 2**63 - 1),
     (-1, None), (-0.0, 0), ("12", 12), (" 12 ", None), ("1_000", None), ("+7", None), ("-3", None), ("\u0661", None),
     ("", None), ("x", None), (True, None), ({CONFLICT_KEY: "5", "cached": 1}, 5), (math.nan, None)],
)
def test_as_int_examples(value, expected):
    assert _lookup.as_int(value) == REF["as_int"](value) == expected


def test_the_mapping_uses_the_c_versions():
    assert lookup.find is _lookup.find and lookup.first_truthy is _lookup.first_truthy and lookup.as_int is _lookup.as_int
    assert lookup.first_of_each is _lookup.first_of_each and lookup.counts is _lookup.counts
    assert lookup.iso_time is _lookup.iso_time
