"""Redaction: attributes dropped by key, secret-shaped text replaced by `[REDACTED]`.

Applied to every string a span carries as the exporter sent it (attribute values of spans, events, links,
resources and scopes; span and event names; status messages), while the span is decoded, so inputs,
output, attributes and otel_dump all derive from redacted values and nothing is queued or written before.
A JSON document sent as a string attribute is matched as the text it was sent as, then parsed (a value that
decodes to a JSON string is matched again, since its escapes can spell out what the text hid).

Cost matters: this runs on every string of every span, and LLM spans carry kilobytes of text. Python's `re`
finds a pattern that starts with a literal several times faster than one that starts with a class or a
lookbehind, and walks an alternation character by character, so one combined pattern would be the slow
case. Each built-in rule starts with its literal (the word boundary is checked behind it) and runs only on
strings long enough to hold a match that contain its literal (short strings) or its gate (long text: a
rare character memchr finds, or a long literal). Measured on bench/e2e.py's spans: about 2-3 us per KB.
The C decoder does better still: it calls text() only for a string holding one of a rule's `anchors`,
found in one pass over its bytes (see text_plan), so most text never reaches the patterns.
"""

from __future__ import annotations

import fnmatch
import re
import sys
from dataclasses import dataclass

from otel_bridge.config import Redact

__all__ = ["DEFAULT_KEYS", "DEFAULT_REDACTION", "DEFAULT_VALUE_RULES", "REDACTED", "Redaction", "ValueRule", "compile_redaction"]

REDACTED = "[REDACTED]"


def _starts_word(prefix: str, before: str = "") -> str:
    """`prefix` (a fixed-width regex) where a word starts: not after a letter, digit or backslash; or right
    after a JSON escape (`\\n`, `\\"`, `\\u00e9`), since JSON sent as a string is matched as sent and a
    token on a new line there follows the `n` of `\\n`. The check sits behind the prefix so the pattern
    still starts with a literal."""
    whole = before + prefix  # `before` is already matched, outside this group
    return (
        f"{prefix}(?:(?<![A-Za-z0-9\\\\]{whole})|(?<=\\\\[nrtbf\\\\/\"]{whole})|(?<=\\\\u[0-9A-Fa-f]{{4}}{whole}))"
    )


@dataclass(frozen=True, slots=True)
class ValueRule:
    """A secret shape: `pattern` finds it, `replacement` replaces it. `literal` and `gate` are in every
    match: the pattern runs only on strings that contain them (short strings are checked for the literal,
    long ones for the cheaper gate). Strings shorter than `min_length` cannot match."""

    name: str
    pattern: str
    min_length: int
    literal: str
    gate: str  # in every match, and fast to look for in long text: a rare character (memchr) or a long literal
    # Every match holds one of these: a string holding none is left alone. The C decoder looks for them all
    # in one pass over a string, and calls text() only for a string that holds one (see text_plan).
    anchors: tuple[str, ...]
    replacement: str = REDACTED


_BEARER_TOKEN = r"(\s+)[A-Za-z0-9\-._~+/]{16,}=*"

DEFAULT_VALUE_RULES: tuple[ValueRule, ...] = (
    # scheme://user:password@host keeps scheme and host (before the e-mail rule, which would take password@host).
    ValueRule("url_credentials", r"(?<=://)[^\s/?#@:\"\\]+:[^\s/?#@\"\\]+(?=@)", 7, "@", "@", ("@",)),
    ValueRule("email", r"(?:(?<![A-Za-z0-9._%+\-\\])|(?<=\\[nrtbf\\/\"])|(?<=\\u[0-9A-Fa-f]{4}))"
              r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}", 6, "@", "@", ("@",)),
    ValueRule("slack_token", _starts_word("xox") + r"[abposre]-[A-Za-z0-9\-]{10,}", 15, "xox", "x", ("xox",)),
    ValueRule("aws_access_key", _starts_word("A[KS]IA") + r"[A-Z0-9]{16}(?![A-Za-z0-9])", 20, "A", "A", ("AKIA", "ASIA")),
    # OpenAI, Anthropic, DeepSeek, OpenRouter...: sk-, sk-proj-, sk-ant-api03-, sk-or-v1-. A digit is required
    # so that words like "risk-assessment-framework-overview" stay.
    ValueRule("api_key", _starts_word("sk-") + r"(?=[A-Za-z0-9_\-]*[0-9])[A-Za-z0-9_\-]{20,}", 23, "sk-", "-", ("sk-",)),
    # The scheme word stays, so the text still says what was there.
    ValueRule("bearer_token", _starts_word("Bearer") + _BEARER_TOKEN, 23, "Bearer", "B", ("Bearer",), r"Bearer\g<1>" + REDACTED),
    ValueRule("jwt", _starts_word("eyJ") + r"[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]*", 25, "eyJ", "J", ("eyJ",)),
    # To the END line, or to the end of the text when a truncated key has none.
    ValueRule(
        "private_key",
        r"-----BEGIN[A-Z ]*PRIVATE KEY-----(?s:.*?)(?:-----END[A-Z ]*PRIVATE KEY-----|\Z)",
        30,
        "-----BEGIN",
        "-----BEGIN",
        ("-----BEGIN",),
    ),
    # One literal "g" first, so a "g" not followed by "h" or "ithub_pat_" fails at once.
    ValueRule(
        "github_token",
        "g(?:" + _starts_word("h[pousr]_", "g") + r"[A-Za-z0-9]{36,}|" + _starts_word("ithub_pat_", "g") + r"[A-Za-z0-9_]{22,})",
        33,
        "g",
        "_",
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    ),
    ValueRule("google_api_key", _starts_word("AIza") + r"[0-9A-Za-z_\-]{35}", 39, "AIza", "z", ("AIza",)),
)

# Attribute keys whose values are secrets whatever they look like (passwords have no shape).
DEFAULT_KEYS: tuple[str, ...] = (
    "*password*",
    "*passwd*",
    "*secret*",
    "*api_key*",
    "*api-key*",
    "*apikey*",
    "*access_token*",
    "*refresh_token*",
    "*session_token*",
    "*private_key*",
    "*credential*",
    "*authorization*",
    "*cookie*",
)

# Keys repeat across spans, so a key's verdict is cached; a hostile stream of unique keys only refills it.
_KEY_CACHE_SIZE = 4096


# A short string is checked for a rule's literal before the pattern runs (`in` costs less than a regex
# call); a long one for the rule's gate, since scanning for the literal would cost as much as the pattern.
_SHORT = 128


class Redaction:
    """Compiled redaction rules. `text(s)` returns `s` itself when nothing matches; `drops(key)` says whether
    an attribute key (dotted path) is to be dropped."""

    __slots__ = ("_at_rules", "_rules", "_min_length", "_custom", "_keys", "key_verdicts", "enabled", "drops_keys", "text_plan")

    def __init__(self, *, rules: tuple[ValueRule, ...], custom: tuple[str, ...], keys: tuple[str, ...]) -> None:
        at_rules = [rule for rule in rules if rule.literal == "@"]
        # Ordered by length, so a string stops at the first rule it is too short for.
        token_rules = sorted((rule for rule in rules if rule.literal != "@"), key=lambda rule: rule.min_length)
        self._at_rules = tuple((re.compile(rule.pattern).sub, rule.replacement) for rule in at_rules)
        self._rules = tuple(
            (rule.min_length, rule.literal, rule.gate, re.compile(rule.pattern).sub, rule.replacement)
            for rule in token_rules
        )
        self._min_length = min((rule.min_length for rule in rules), default=0)
        self._custom = tuple(re.compile(pattern).sub for pattern in custom)
        self._keys = re.compile("|".join(fnmatch.translate(k) for k in keys), re.IGNORECASE) if keys else None
        self.key_verdicts: dict[str, bool] = {}
        self.enabled = bool(rules or custom)
        self.drops_keys = self._keys is not None
        # When `text(s)` may return other than `s`, for a caller that skips the call otherwise (the C decoder):
        # (call_always, min_length, rules). Unless `call_always` (custom patterns), `text(s)` is `s` when
        # len(s) < min_length, or when `s` holds none of the anchors of the (rule_min_length, anchors) rules
        # with rule_min_length <= len(s). Disabled redaction: min_length is beyond any string. Built once
        # here, since every request's Sanitizer hands it on.
        self.text_plan: tuple[bool, int, tuple[tuple[int, tuple[str, ...]], ...]] = (
            (bool(custom), self._min_length, tuple(sorted((rule.min_length, rule.anchors) for rule in rules)))
            if self.enabled
            else (False, sys.maxsize, ())
        )

    def text(self, s: str) -> str:
        """`s` with every match of a rule replaced; `s` itself when nothing matched."""
        length = len(s)
        if length >= self._min_length:
            if "@" in s:  # memchr: the e-mail rules' own patterns are slow to search
                for sub, replacement in self._at_rules:
                    s = sub(replacement, s)
            short = length < _SHORT
            for min_length, literal, gate, sub, replacement in self._rules:
                if length < min_length:
                    break
                if (literal if short else gate) in s:
                    s = sub(replacement, s)
        for sub in self._custom:
            s = sub(REDACTED, s)
        return s

    def drops(self, key: str) -> bool:
        verdict = self.key_verdicts.get(key)
        if verdict is None:
            verdict = self._keys is not None and self._keys.match(key) is not None
            if len(self.key_verdicts) >= _KEY_CACHE_SIZE:
                self.key_verdicts.clear()
            self.key_verdicts[key] = verdict
        return verdict


def compile_redaction(config: Redact) -> Redaction:
    """The `mapping.redact` settings -> rules ready for the hot path (the patterns are already validated)."""
    return Redaction(
        rules=DEFAULT_VALUE_RULES if config.default_rules else (),
        custom=tuple(config.patterns),
        keys=(DEFAULT_KEYS if config.default_rules else ()) + tuple(config.keys),
    )


DEFAULT_REDACTION = compile_redaction(Redact())
