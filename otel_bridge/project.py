"""Project names: the one owner of what `entity/project` may be, for routing and for config."""

from __future__ import annotations

import re

__all__ = ["PROJECT_FORM", "parse_project"]

# Both names go into the upstream URL path: whitespace and control characters make it invalid, and
# \ # ? % : would change its meaning (W&B names cannot contain them either).
_NOT_IN_PROJECT_NAMES = re.compile(r"[\x00-\x20\x7f\\#?%:]")
PROJECT_FORM = "entity/project (names without whitespace, control characters or \\ # ? % :)"


def parse_project(value: str) -> tuple[str, str] | None:
    """`entity/project` -> (entity, project); None when it is not of that form."""
    entity, sep, project = value.strip().partition("/")
    if not sep or not entity or not project or "/" in project:
        return None
    if _NOT_IN_PROJECT_NAMES.search(entity) or _NOT_IN_PROJECT_NAMES.search(project):
        return None
    return entity, project
