"""`serve --workers N`: one metrics directory the workers share (prometheus_client's multiprocess mode).

No prometheus_client import here: the variable must be set before anything imports it, in the parent, so that
every worker it spawns inherits it."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

from pointsman.observability.metrics_env import MULTIPROC_ENV

__all__ = ["share_metrics_between_workers"]


def share_metrics_between_workers() -> str:
    """The directory (PROMETHEUS_MULTIPROC_DIR if set, else a new temporary one removed at exit), emptied of an
    earlier run's files: counters would otherwise go on from where a previous gateway left them."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        Path(given).mkdir(parents=True, exist_ok=True)
        for stale in Path(given).glob("*.db"):
            stale.unlink()
        return given
    directory = tempfile.mkdtemp(prefix="pointsman-metrics-")
    os.environ[MULTIPROC_ENV] = directory
    atexit.register(shutil.rmtree, directory, True)
    return directory
