"""Deploying routers: promote a candidate, roll back to the one before, keep the history.

``learning.routers_dir`` holds ``deployed.npz`` (what a policy's ``router: deployed`` routes with; the
shipped router while it is absent), ``history/`` (every router ever deployed, numbered) and
``history.jsonl`` (one line per promotion or rollback: when, which file, why). A deployment is an atomic
rename, so a gateway reading the file mid-promotion sees the old router or the new one, never half of
either; gateways notice the new file within ``learning.reload_check_s`` and swap without a restart.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pointsman.routing.semantic import DEPLOYED

__all__ = ["Deployment", "RouterShelf"]


@dataclass(frozen=True, slots=True)
class Deployment:
    version: int  # 0 = the shipped router
    file: str | None  # under history/, None for the shipped router
    ts: float
    action: str  # "promote" | "rollback"
    note: dict[str, Any]


class RouterShelf:
    def __init__(self, routers_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(routers_dir)
        self.deployed = self.dir / DEPLOYED
        self.log = self.dir / "history.jsonl"

    def history(self) -> list[Deployment]:
        if not self.log.exists():
            return []
        return [Deployment(**json.loads(line)) for line in self.log.read_text().splitlines() if line.strip()]

    def current(self) -> Deployment | None:
        """What is deployed now (None: the shipped router, nothing was ever promoted)."""
        history = self.history()
        return history[-1] if history and history[-1].version else None

    def promote(self, candidate: str | os.PathLike[str], note: dict[str, Any] | None = None) -> Deployment:
        """Deploy ``candidate``: archived as the next version, then swapped in atomically."""
        history = self.history()
        version = max((d.version for d in history), default=0) + 1
        archived = Path("history") / f"{version:04d}.npz"
        (self.dir / "history").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(candidate, self.dir / archived)
        self._swap_in(self.dir / archived)
        return self._append(Deployment(version, str(archived), time.time(), "promote",
                                       {"candidate": str(candidate), **(note or {})}))

    def rollback(self) -> Deployment:
        """Deploy the router that was deployed before the current one (the shipped router before the first)."""
        history = self.history()
        stack: list[Deployment] = []  # the deployments still in effect, oldest first
        for entry in history:
            if entry.action == "promote":
                stack.append(entry)
            elif stack:
                stack.pop()
        if not stack:
            raise ValueError(f"nothing to roll back in {self.dir}: the shipped router is deployed")
        stack.pop()
        previous = stack[-1] if stack else None
        if previous is None:
            self.deployed.unlink(missing_ok=True)  # `router: deployed` falls back to the shipped router
            return self._append(Deployment(0, None, time.time(), "rollback", {"restored": "shipped router"}))
        assert previous.file is not None
        self._swap_in(self.dir / previous.file)
        return self._append(Deployment(previous.version, previous.file, time.time(), "rollback",
                                       {"restored": previous.file}))

    def _swap_in(self, source: Path) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.dir, suffix=".npz.tmp")
        os.close(fd)
        try:
            shutil.copyfile(source, tmp)
            os.replace(tmp, self.deployed)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _append(self, deployment: Deployment) -> Deployment:
        with self.log.open("a") as fh:
            fh.write(json.dumps({"version": deployment.version, "file": deployment.file, "ts": deployment.ts,
                                 "action": deployment.action, "note": deployment.note}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return deployment
