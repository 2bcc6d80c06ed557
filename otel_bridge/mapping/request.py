"""The decoded spans of one OTLP ExportTraceServiceRequest -> serialized calls per project, plus the spans it
rejects. Decoding is not the mapping's: pipeline.map_request decodes (otel_bridge.decode), then maps here.

Routing, first that applies: resource attributes `wandb.entity` + `wandb.project`; the request's
`project_id` header/metadata; `exporter.weave.project`. A span with none is rejected, never guessed.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from otel_bridge.decode.decoded import ResourceSpans, Span
from otel_bridge.decode.otlp import short_hex
from otel_bridge.errors import RejectedSpan
from otel_bridge.mapping.rules import Rules
from otel_bridge.mapping.span import map_span
from otel_bridge.project import PROJECT_FORM, parse_project

__all__ = ["CallHook", "MappedRequest", "map_resource_spans", "NO_PROJECT", "route"]

# Called with each call (before it is serialized) and its span's attribute tree, by the per-trace stage
# (otel_bridge/traces/), which may change the call; False: the stage holds it (MappedRequest.held).
CallHook = Callable[[dict[str, Any], dict[str, Any]], bool]

log = logging.getLogger("otel_bridge.mapping")

NO_PROJECT = (
    "span has no project: set resource attributes wandb.entity + wandb.project, "
    "or the header project_id: entity/project, or exporter.weave.project (env WEAVE_PROJECT)"
)
_MAX_REASONS = 3

# Values the mapping could not use (they stay in otel_dump): kind -> text.
_VALUE_WARNINGS = {
    "token_count": "{n} token counts that are not non-negative integers left out of summary.usage",
    "model_name": "{n} model names that are not strings not used as the usage key",
    "override_time": "{n} override times (started_at/ended_at) not applied: unreadable, or ending before the start",
}


@dataclass(slots=True)
class MappedRequest:
    calls: dict[str, list[bytes]] = field(default_factory=dict)  # project_id -> calls as JSON
    held: list[tuple[str, str, str, bytes]] = field(default_factory=list)  # (project_id, trace_id, id, call)
    spans: int = 0
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)
    # What decoding cut, filled in by whoever decoded (pipeline.map_request), once the spans were iterated.
    limit_hits: dict[str, int] = field(default_factory=dict)  # mapping.limits key -> what it cut
    value_warnings: Counter = field(default_factory=Counter)  # kind (_VALUE_WARNINGS) -> values not used
    warnings: list[str] = field(default_factory=list)  # the limits hit, as text
    redacted_values: int = 0
    dropped_keys: int = 0

    @property
    def accepted(self) -> int:
        return self.spans - self.rejected

    def reject(self, span: Span, reason: str) -> None:
        self.rejected += 1
        if len(self.reasons) < _MAX_REASONS:
            self.reasons.append(f"span {short_hex(span.span_id) or '(no id)'}: {reason}")

    def refuse_project(self, project: str, reason: str) -> int:
        """Take out every call of `project`, rejected with `reason`; returns how many."""
        count = len(self.calls.pop(project, ()))
        self.rejected += count
        self.reasons.insert(0, f"{count} spans for {project}: {reason}")
        return count

    def error_message(self) -> str:
        """The partial_success message: how many were rejected and the first reasons, then the limits hit
        (a warning: those spans were kept)."""
        parts = []
        if self.rejected:
            more = self.rejected - len(self.reasons)
            tail = f"; and {more} more" if more > 0 else ""
            parts.append(f"rejected {self.rejected} of {self.spans} spans: " + "; ".join(self.reasons) + tail)
        if self.warnings:
            parts.append("limits hit, spans kept: " + "; ".join(self.warnings))
        if self.value_warnings:
            # In the table's order, as the limits.
            not_used = [text.format(n=self.value_warnings[k]) for k, text in _VALUE_WARNINGS.items() if k in self.value_warnings]
            parts.append("values not used, spans kept (otel_dump has them): " + "; ".join(not_used))
        return ". ".join(parts)


def _resource_project(routing: dict[str, str]) -> tuple[str | None, str | None]:
    """(project, None) from resource attributes wandb.entity + wandb.project as sent (ResourceSpans.routing:
    redaction is for content, a name is used as it was given), or (None, why not)."""
    entity = routing.get("wandb.entity")
    project = routing.get("wandb.project")
    if not project:
        return None, None  # wandb.entity alone names no project: the next routing rule applies
    candidate = f"{entity}/{project}" if entity else project
    if parse_project(candidate) is None:
        # Named, but wrongly: rejecting says so, where falling back to another project would hide it.
        return None, (
            f"resource attributes wandb.entity={entity!r} wandb.project={project!r} do not name a project: "
            f"set wandb.entity and wandb.project, or wandb.project alone as {PROJECT_FORM}"
        )
    return candidate, None


def route(routing: dict[str, str], *, header_project: str | None, default_project: str) -> tuple[str | None, str]:
    """The project of a resource's spans, by the routing rules above: (project, "") or (None, why none)."""
    project_id, reason = _resource_project(routing)
    if project_id is not None or reason is not None:
        return project_id, reason or ""
    if header_project:
        if parse_project(header_project) is None:
            return None, f"header project_id {header_project!r} is not of the form {PROJECT_FORM}"
        return header_project, ""
    return (default_project, "") if default_project else (None, NO_PROJECT)


def map_resource_spans(
    resource_spans: Iterable[ResourceSpans],
    *,
    header_project: str | None,
    default_project: str,
    rules: Rules,
    on_call: CallHook | None = None,
) -> MappedRequest:
    """Route and map every span (decoded, so limits and redaction were applied and no call holds what they
    removed)."""
    result = MappedRequest()
    for resources in resource_spans:
        resource = resources.resource
        project_id, reason = route(resources.routing, header_project=header_project, default_project=default_project)
        for scope_spans in resources.scope_spans:
            scope = scope_spans.scope
            scope_rules = rules.for_scope(scope["name"])
            for span in scope_spans.spans:
                result.spans += 1
                if project_id is None:
                    result.reject(span, reason)
                    continue
                try:
                    call = map_span(
                        span, project_id=project_id, resource=resource, scope=scope, rules=scope_rules,
                        warnings=result.value_warnings,
                    )
                    queue_now = on_call is None or on_call(call, span.attributes)
                    encoded = orjson.dumps(call)
                except RejectedSpan as exc:
                    result.reject(span, str(exc))
                    continue
                except Exception as exc:  # one span that breaks the mapping must not sink its neighbours
                    log.exception("failed to map span %s", short_hex(span.span_id))
                    result.reject(span, f"internal error while mapping: {type(exc).__name__}: {exc}")
                    continue
                if queue_now:
                    result.calls.setdefault(project_id, []).append(encoded)
                else:
                    result.held.append((project_id, call["trace_id"], call["id"], encoded))
    return result
