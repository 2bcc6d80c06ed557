"""Files and directories the bridge creates hold calls (prompts, outputs), so only their owner may read them.

New directories are created 0700 and new files 0600 (the umask can only narrow that); an existing directory
or file keeps the mode it has: the operator chose it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

__all__ = ["make_private_dirs", "open_private"]


def make_private_dirs(path: Path) -> None:
    """`mkdir -p`, each directory it creates 0700 (Path.mkdir(parents=True) gives the parents the umask's mode)."""
    missing = []
    while not path.exists() and path.parent != path:
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)


def open_private(path: Path, *, append: bool = True) -> BinaryIO:
    """Open for appending (or truncate and write), creating the file 0600 when it does not exist."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_APPEND if append else os.O_TRUNC)
    return os.fdopen(os.open(path, flags, 0o600), "ab" if append else "wb")
