"""Where Pointsman keeps derived files (embedding caches, converted models): outside the repository."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

__all__ = ["default_cache_dir", "exclusive"]


def default_cache_dir() -> Path:
    """``$POINTSMAN_CACHE_DIR`` or ``$XDG_CACHE_HOME/pointsman`` or ``~/.cache/pointsman``."""
    env = os.environ.get("POINTSMAN_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pointsman"


@contextlib.contextmanager
def exclusive(target: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``<target>.lock`` while a derived file is made, so that several gateway
    workers (or threads) starting at once make it once: the others wait, then find it made. POSIX only;
    elsewhere the atomic rename of the result still keeps the file whole."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(target.with_name(target.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
