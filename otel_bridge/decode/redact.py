"""Redaction: attributes dropped by key, secret-shaped text replaced by `[REDACTED]`.

Applied to every string a span carries as the exporter sent it (attribute values of spans, events, links,
resources and scopes; span and event names; status messages), to attribute and map keys and to bytes
values, while the span is decoded, so inputs, output, attributes and otel_dump all derive from redacted
values and nothing is queued or written before. A JSON document sent as a string attribute is matched as the
text it was sent as, then parsed, and walked as a map sent the same would be (Sanitizer.json_content) when
that can change it: an escape may spell out what the text hid, or a key rule may drop a key inside it.
Routing does not read redacted values (decoded.ROUTING_KEYS).

Cost matters: this runs on every string of every span, and LLM spans carry kilobytes of text. Python's `re`
finds a pattern that starts with a literal several times faster than one that starts with a class or a
lookbehind, and walks an alternation character by character, so one combined pattern would be the slow
case. Each built-in rule runs only on strings long enough to hold a match that contain one of its anchors
(short strings) or gates (long text: a rare character memchr finds, or a long literal). The C decoder does
better still: it calls text() only for a string holding one of a rule's `anchors`, found ignoring ASCII
case in one pass over its bytes (see text_plan), so most text never reaches the patterns.
"""

from __future__ import annotations

import fnmatch
import re
import sys
from dataclasses import dataclass

from otel_bridge.config import Redact

__all__ = ["DEFAULT_KEYS", "DEFAULT_REDACTION", "DEFAULT_VALUE_RULES", "REDACTED", "Redaction", "ValueRule", "compile_redaction"]

REDACTED = "[REDACTED]"


def _starts_word(prefix: str, before: str = "", *, capture: bool = False) -> str:
    """`prefix` (a fixed-width regex) where a word starts: not after a letter, digit or backslash; or right
    after a JSON escape (`\\n`, `\\"`, `\\u00e9`), since JSON sent as a string is matched as sent and a
    token on a new line there follows the `n` of `\\n`. The check sits behind the prefix so the pattern
    still starts with a literal. `capture`: the prefix is group 1, for a replacement that keeps it."""
    whole = before + prefix  # `before` is already matched, outside this group
    head = f"({prefix})" if capture else prefix
    return (
        f"{head}(?:(?<![A-Za-z0-9\\\\]{whole})|(?<=\\\\[nrtbf\\\\/\"]{whole})|(?<=\\\\u[0-9A-Fa-f]{{4}}{whole}))"
    )


@dataclass(frozen=True, slots=True)
class ValueRule:
    """A secret shape: `pattern` finds it, `replacement` replaces it. Every match holds one of `anchors`
    (compared ignoring ASCII case) and one of `gates` (as sent): a string holding no anchor is left alone,
    and so is a long one holding no gate (a rare character memchr finds, or a long literal: looking for
    every anchor in long text would cost as much as the pattern). Strings shorter than `min_length` cannot
    match. `ignore_case`: the provider's format allows any case (an HTTP auth scheme, an OpenAI key typed
    in capitals); ASCII case only, as the C decoder's pre-check folds it."""

    name: str
    pattern: str
    min_length: int
    anchors: tuple[str, ...]
    gates: tuple[str, ...]
    replacement: str = REDACTED
    ignore_case: bool = False


_BEARER_TOKEN = r"(\s+)[A-Za-z0-9\-._~+/]{16,}=*"

DEFAULT_VALUE_RULES: tuple[ValueRule, ...] = (
    # scheme://user:password@host keeps scheme and host (before the e-mail rule, which would take password@host).
    ValueRule("url_credentials", r"(?<=://)[^\s/?#@:\"\\]+:[^\s/?#@\"\\]+(?=@)", 7, ("@",), ("@",)),
    # ?password=... (and token=, secret=, api_key=...) in a URL's query keeps the parameter's name; the value
    # runs to the next parameter, and punctuation that ends a sentence after it stays.
    ValueRule(
        "url_query_secret",
        r"(?<=[?&;])([A-Za-z0-9_.\-]*(?:password|passwd|pwd|secret|token|api[_-]?key)=)"
        r"(?!\[REDACTED\])[^&#\s\"'\\<>]*[^&#\s\"'\\<>.,;:!?)\]]",  # once redacted, it stays as it is
        6,
        ("password=", "passwd=", "pwd=", "secret=", "token=", "api_key=", "apikey=", "api-key="),
        ("=",),
        r"\g<1>" + REDACTED,
        ignore_case=True,
    ),
    ValueRule("email", r"(?:(?<![A-Za-z0-9._%+\-\\])|(?<=\\[nrtbf\\/\"])|(?<=\\u[0-9A-Fa-f]{4}))"
              r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}", 6, ("@",), ("@",)),
    ValueRule("slack_token", _starts_word("xox") + r"[abposre]-[A-Za-z0-9\-]{10,}", 15, ("xox",), ("x",)),
    ValueRule("aws_access_key", _starts_word("A[KS]IA") + r"[A-Z0-9]{16}(?![A-Za-z0-9])", 20, ("AKIA", "ASIA"), ("A",)),
    # OpenAI, Anthropic, DeepSeek, OpenRouter...: sk-, sk-proj-, sk-ant-api03-, sk-or-v1-. A digit is required
    # so that words like "risk-assessment-framework-overview" stay.
    ValueRule(
        "api_key", _starts_word("sk-") + r"(?=[A-Za-z0-9_\-]*[0-9])[A-Za-z0-9_\-]{20,}", 23, ("sk-",), ("-",),
        ignore_case=True,
    ),
    # Stripe secret and restricted keys (publishable pk_ keys are public).
    ValueRule("stripe_key", _starts_word("[sr]k_(?:live|test)_") + r"[0-9A-Za-z]{16,}", 24,
              ("sk_live_", "sk_test_", "rk_live_", "rk_test_"), ("_",)),
    # Hugging Face access tokens; a digit is required, as for api_key, so identifiers stay.
    ValueRule("huggingface_token", _starts_word("hf_") + r"(?=[A-Za-z]*[0-9])[A-Za-z0-9]{30,}", 33, ("hf_",), ("_",)),
    # W&B API keys (40 hex, `local-` for W&B Server) where they are named: WANDB_API_KEY=..., and the Basic
    # auth user:password pair api:<key>. The name stays.
    ValueRule(
        "wandb_api_key",
        r"(WANDB_API_KEY\s*[=:]\s*[\"']?|api:)(?:local-)?[0-9a-f]{40}(?![0-9a-z])",
        44,
        ("wandb_api_key", "api:"),
        ("_", ":"),
        r"\g<1>" + REDACTED,
        ignore_case=True,
    ),
    # The scheme word stays, as sent, so the text still says what was there.
    ValueRule(
        "bearer_token", _starts_word("Bearer", capture=True) + _BEARER_TOKEN, 23, ("bearer",), ("B", "b"),
        r"\g<1>\g<2>" + REDACTED, ignore_case=True,
    ),
    ValueRule("jwt", _starts_word("eyJ") + r"[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]*", 25, ("eyJ",), ("J",)),
    # To the END line, or to the end of the text when a truncated key has none.
    ValueRule(
        "private_key",
        r"-----BEGIN[A-Z ]*PRIVATE KEY-----(?s:.*?)(?:-----END[A-Z ]*PRIVATE KEY-----|\Z)",
        30,
        ("-----BEGIN",),
        ("-----BEGIN",),
    ),
    # One literal "g" first, so a "g" not followed by "h" or "ithub_pat_" fails at once.
    ValueRule(
        "github_token",
        "g(?:" + _starts_word("h[pousr]_", "g") + r"[A-Za-z0-9]{36,}|" + _starts_word("ithub_pat_", "g") + r"[A-Za-z0-9_]{22,})",
        33,
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
        ("_",),
    ),
    ValueRule("google_api_key", _starts_word("AIza") + r"[0-9A-Za-z_\-]{35}", 39, ("AIza",), ("z",)),
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

# Keys repeat across spans, so a key's verdict (and what its text becomes) is cached; a hostile stream of
# unique keys only refills the caches.
_KEY_CACHE_SIZE = 4096

# A short string is checked for a rule's anchors before the pattern runs (`in` costs less than a regex
# call); a long one for the rule's gates, since scanning for every anchor would cost as much as the pattern.
_SHORT = 128

# JSON escapes that can spell out a secret the text as sent does not show (`\u0073k-...`, `https:\/\/`):
# JSON text holding one is scanned again once decoded.
_HIDING_ESCAPES = ("\\u", "\\/")

_GLOB_SPECIAL = frozenset("*?[].")


def _key_anchor(glob: str) -> str | None:
    """What a key inside JSON text must hold, as sent, for `glob` to drop it: for `*word*` and `*word`
    (no other wildcard, no dot) the word, which only a key in the text can add to a path; else None (any
    key might match: the text is walked whatever it holds)."""
    word = glob[1:-1] if glob.endswith("*") else glob[1:]
    if glob.startswith("*") and word and not _GLOB_SPECIAL.intersection(word):
        return word.lower()
    return None


class Redaction:
    """Compiled redaction rules. `text(s)` returns `s` itself when nothing matches; `drops(key)` says whether
    an attribute key (dotted path) is to be dropped."""

    __slots__ = (
        "_rules", "_min_length", "_custom", "_keys", "key_verdicts", "key_texts", "enabled", "drops_keys",
        "text_plan", "json_plan",
    )

    def __init__(self, *, rules: tuple[ValueRule, ...], custom: tuple[str, ...], keys: tuple[str, ...]) -> None:
        # In their order: url_credentials must run before email.
        self._rules = tuple(
            (
                rule.min_length,
                tuple(anchor.lower() for anchor in rule.anchors),
                rule.gates,
                re.compile(rule.pattern, re.IGNORECASE | re.ASCII if rule.ignore_case else 0).sub,
                rule.replacement,
            )
            for rule in rules
        )
        self._min_length = min((rule.min_length for rule in rules), default=0)
        self._custom = tuple(re.compile(pattern).sub for pattern in custom)
        self._keys = re.compile("|".join(fnmatch.translate(k) for k in keys), re.IGNORECASE) if keys else None
        self.key_verdicts: dict[str, bool] = {}
        self.key_texts: dict[str, str] = {}  # attribute key -> itself redacted
        self.enabled = bool(rules or custom)
        self.drops_keys = self._keys is not None
        # When `text(s)` may return other than `s`, for a caller that skips the call otherwise (the C decoder):
        # (call_always, min_length, rules). Unless `call_always` (custom patterns), `text(s)` is `s` when
        # len(s) < min_length, or when `s` holds none of the anchors (lowercase; compare ignoring ASCII
        # case) of the (rule_min_length, anchors) rules with rule_min_length <= len(s). Disabled redaction:
        # min_length is beyond any string. Built once here, since every request's Sanitizer hands it on.
        self.text_plan: tuple[bool, int, tuple[tuple[int, tuple[str, ...]], ...]] = (
            (
                bool(custom),
                self._min_length,
                tuple(sorted((min_length, anchors) for min_length, anchors, *_ in self._rules)),
            )
            if self.enabled
            else (False, sys.maxsize, ())
        )
        # When JSON text, once decoded, must be walked (Sanitizer.json_content) as well as matched as sent:
        # (walk_always, anchors). The text as sent was matched already; a walk can change the value only if
        # an escape hid something (custom patterns: any escape), or a key rule may drop a key inside it.
        # Unless walk_always, text holding none of the anchors (ignoring ASCII case) is left as decoded.
        anchors: list[str] = []
        if custom:
            anchors.append("\\")
        elif rules:
            anchors.extend(_HIDING_ESCAPES)
        key_anchors = [_key_anchor(k) for k in keys]
        self.json_plan: tuple[bool, tuple[str, ...]] = (
            None in key_anchors,
            tuple(dict.fromkeys(anchors + [a for a in key_anchors if a is not None])),
        )

    def text(self, s: str) -> str:
        """`s` with every match of a rule replaced; `s` itself when nothing matched."""
        length = len(s)
        if length >= self._min_length:
            short = length < _SHORT
            folded = s.lower() if short else s  # every anchor is in it, lowercase, if in `s` in any case
            for min_length, anchors, gates, sub, replacement in self._rules:
                if length < min_length:
                    continue
                for needle in anchors if short else gates:
                    if needle in folded:
                        s = sub(replacement, s)
                        break
        for sub in self._custom:
            s = sub(REDACTED, s)
        return s

    def key_text(self, key: str) -> str:
        """An attribute or map key, redacted as a value is (a secret can be sent as a key); cached."""
        text = self.key_texts.get(key)
        if text is None:
            text = self.text(key)
            if len(self.key_texts) >= _KEY_CACHE_SIZE:
                self.key_texts.clear()
            self.key_texts[key] = text
        return text

    def walks_json(self, source: str) -> bool:
        """Whether decoded JSON text `source` must be walked (see json_plan)."""
        always, anchors = self.json_plan
        if always:
            return True
        folded = source.lower()
        return any(anchor in folded for anchor in anchors)

    def drops(self, key: str) -> bool:
        """Whether the key rules drop `key`. Cached; False is cached only for a key that redaction leaves as
        it is, so a False in key_verdicts tells the C decoder the key is kept as sent (it skips key())."""
        verdict = self.key_verdicts.get(key)
        if verdict is None:
            verdict = self._keys is not None and self._keys.match(key) is not None
            if verdict or self.key_text(key) == key:
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
