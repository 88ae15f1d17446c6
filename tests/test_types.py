"""Types are checked with the tests, so that `.ci/run` (the README's test command) holds them: mypy with the
project's configuration (pyproject.toml, [tool.mypy]) over the package."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_mypy_finds_nothing():
    assert importlib.util.find_spec("mypy") is not None, "mypy is missing: pip install -e '.[test]'"
    done = subprocess.run([sys.executable, "-m", "mypy", "src/pointsman"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
