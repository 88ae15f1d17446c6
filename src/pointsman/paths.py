"""Where Pointsman keeps derived files (embedding caches, converted models): outside the repository."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_cache_dir"]


def default_cache_dir() -> Path:
    """``$POINTSMAN_CACHE_DIR`` or ``$XDG_CACHE_HOME/pointsman`` or ``~/.cache/pointsman``."""
    env = os.environ.get("POINTSMAN_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pointsman"
