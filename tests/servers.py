"""Real servers on loopback for the tests: the test upstream and the gateway, each in its own thread
with its own event loop, exactly as they run in production (uvicorn + the gateway's ASGI app)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from aiohttp import web

from pointsman.app.protocol import GuardedHttpToolsProtocol
from pointsman.app.server import Gateway
from pointsman.config.loader import parse_config
from tests.upstream.server import make_app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class UpstreamServer:
    """The test upstream (OpenAI + Anthropic protocols, scripted faults) on a free loopback port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        runner = web.AppRunner(make_app(), access_log=None, shutdown_timeout=0.1)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._runner = runner
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())
        pending = asyncio.all_tasks(self._loop)  # handlers still stalling on purpose
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.close()

    def start(self) -> UpstreamServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def script(self, model: str, behaviours: list[str]) -> None:
        httpx.post(f"{self.url}/_control/script", json={"model": model, "behaviours": behaviours}).raise_for_status()

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/_control/stats").json()

    def reset(self) -> None:
        httpx.post(f"{self.url}/_control/reset").raise_for_status()


class GatewayServer:
    """`pointsman serve` in a thread: uvicorn with the same options the CLI uses."""

    def __init__(self, config: dict[str, Any], ledger_path: Path) -> None:
        # The cache is off unless a test turns it on: it loads the embedding model, which most tests don't need.
        config = {**config, "server": {"ledger_url": f"sqlite:///{ledger_path}", "ledger_flush_interval_s": 0.05,
                                       "retry_backoff_s": 0.01, "cache": {"enabled": False}, **config.get("server", {})}}
        self.ledger_path = ledger_path
        self.gateway = Gateway(parse_config(config, "test config"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.base_url = f"{self.url}/v1"
        self._server = uvicorn.Server(uvicorn.Config(
            self.gateway, host="127.0.0.1", port=self.port, loop="uvloop", lifespan="on", access_log=False,
            http=GuardedHttpToolsProtocol, log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> GatewayServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("gateway did not start")
            time.sleep(0.01)
        return self

    def flush_ledger(self, timeout_s: float = 10) -> None:
        """Write every finished request's row now. A request's row is recorded after its answer is sent (the
        client can hold the answer first), so wait until no request is in flight, then flush."""
        deadline = time.monotonic() + timeout_s
        while self.gateway.in_flight and time.monotonic() < deadline:
            time.sleep(0.005)
        self.gateway.ledger.flush()

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(30)


def serve_cli(args: list[str], cwd: Any, env: dict[str, str], *, output: Any = subprocess.PIPE,
              timeout_s: float = 60) -> tuple[subprocess.Popen, str]:
    """`pointsman serve ARGS` as a user runs it, in a real subprocess; returns once /health answers."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "pointsman.cli", "serve", *args, "--port", str(port)], cwd=cwd, env=env,
                               stdout=output, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            logs = process.stdout.read() if process.stdout else ""
            raise RuntimeError(f"pointsman serve did not start: {logs}")
        time.sleep(0.05)
