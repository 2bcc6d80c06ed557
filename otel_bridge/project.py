"""Project names: the one owner of what `entity/project` may be, for routing, for config and for the
upstream URL."""

from __future__ import annotations

import re
from urllib.parse import quote

__all__ = ["PROJECT_FORM", "parse_project", "project_path"]

# Both names become one segment each of the upstream URL path. Whitespace and control characters make it
# invalid; / \ # ? % : would change its meaning; "." and ".." are dot segments that HTTP clients and servers
# resolve (/v2/../x/calls/complete is /x/calls/complete). W&B entity and project names cannot be any of these.
_NOT_IN_PROJECT_NAMES = re.compile(r"[\x00-\x20\x7f/\\#?%:]")
_DOT_SEGMENTS = frozenset((".", ".."))
PROJECT_FORM = "entity/project (names without whitespace, control characters or / \\ # ? % :, and not . or ..)"


def _valid_name(name: str) -> bool:
    return bool(name) and name not in _DOT_SEGMENTS and not _NOT_IN_PROJECT_NAMES.search(name)


def parse_project(value: str) -> tuple[str, str] | None:
    """`entity/project` -> (entity, project); None when it is not of that form."""
    entity, sep, project = value.strip().partition("/")
    if not sep or not _valid_name(entity) or not _valid_name(project):
        return None
    return entity, project


def project_path(project_id: str) -> str:
    """`entity/project` -> `entity/project` as two percent-encoded URL path segments. Raises ValueError for a
    name parse_project refuses: the last guard before a name reaches a URL."""
    names = parse_project(project_id)
    if names is None:
        raise ValueError(f"project {project_id!r} is not of the form {PROJECT_FORM}")
    return "/".join(quote(name, safe="") for name in names)
