#!/usr/bin/env python3
"""What POST /v1/feedback costs a client: its latency against the gateway's cheapest path, in one run.

Starts the project's test upstream and `pointsman serve` (SQLite ledger, learning.store_prompts on) on
loopback, sends chat requests to get request ids, then in interleaved rounds measures sequential round trips
(one keep-alive connection, http.client) of:
  GET /health                      the floor: parse, route the path, answer a small JSON
  POST /v1/feedback (new)          look up the request's owner, commit one row (WAL), answer
  POST /v1/feedback (again)        the same request and key again: the idempotent update
"Added" = feedback minus /health in the same round; medians across rounds go to FEEDBACK.md.

Run: .venv/bin/python bench/learning/feedback_latency.py   (from the repository's root; ~1 min)
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_http(port: int, path: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status < 500:
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing answered on {port}{path}")


def timed(conn: http.client.HTTPConnection, method: str, path: str, body: dict | None = None) -> tuple[float, int]:
    payload = json.dumps(body).encode() if body is not None else None
    headers = {"content-type": "application/json"} if payload else {}
    start = time.perf_counter()
    conn.request(method, path, body=payload, headers=headers)
    response = conn.getresponse()
    response.read()
    return (time.perf_counter() - start) * 1000, response.status


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=300, help="feedback calls per kind and round")
    ap.add_argument("--out", default=str(HERE / "FEEDBACK.md"))
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="pointsman-feedback-bench-"))
    up_port, gw_port = free_port(), free_port()
    env = {**os.environ, "BENCH_UPSTREAM_KEY": "unused"}
    config = tmp / "config.yaml"
    config.write_text(f"""
models:
  - {{name: small, provider: openai, base_url: "http://{HOST}:{up_port}/v1", model: echo, api_key_env: BENCH_UPSTREAM_KEY}}
policies: {{auto: {{default: small}}}}
server: {{ledger_url: "sqlite:///{tmp / 'ledger.db'}", cache: {{enabled: false}}}}
learning: {{store_prompts: true}}
""")
    procs = [subprocess.Popen([sys.executable, "-m", "tests.upstream", "--port", str(up_port)], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
             subprocess.Popen([sys.executable, "-m", "pointsman.cli", "serve", "--config", str(config), "--port",
                               str(gw_port)], cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        wait_http(gw_port, "/health")
        conn = http.client.HTTPConnection(HOST, gw_port, timeout=10)
        ids = []
        for i in range(args.rounds * args.requests):
            conn.request("POST", "/v1/chat/completions", body=json.dumps(
                {"model": "auto", "messages": [{"role": "user", "content": f"hello {i}"}]}),
                headers={"content-type": "application/json"})
            response = conn.getresponse()
            response.read()
            ids.append(response.getheader("x-pointsman-request-id"))
        time.sleep(1.0)  # every request is in the ledger: the look-up measured is the usual one
        for _ in range(200):  # warm-up
            timed(conn, "GET", "/health")
        rounds = []
        for r in range(args.rounds):
            batch = ids[r * args.requests:(r + 1) * args.requests]
            kinds: dict[str, list[float]] = {"health": [], "feedback (new)": [], "feedback (again)": []}
            for request_id in batch:  # interleaved, so that load on the machine falls on all three alike
                kinds["health"].append(timed(conn, "GET", "/health")[0])
                ms, status = timed(conn, "POST", "/v1/feedback", {"request_id": request_id, "score": 1})
                assert status == 200, status
                kinds["feedback (new)"].append(ms)
                ms, status = timed(conn, "POST", "/v1/feedback", {"request_id": request_id, "verdict": "reject"})
                assert status == 200, status
                kinds["feedback (again)"].append(ms)
            rounds.append({k: (statistics.median(v), statistics.quantiles(v, n=100)[98]) for k, v in kinds.items()})
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)

    def med(kind: str, i: int) -> float:
        return statistics.median(rd[kind][i] for rd in rounds)

    added = {k: statistics.median(rd[k][0] - rd["health"][0] for rd in rounds) for k in ("feedback (new)", "feedback (again)")}
    lines = [
        "# Feedback API latency (POST /v1/feedback)", "",
        f"- Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- Command: `.venv/bin/python bench/learning/feedback_latency.py --rounds {args.rounds} --requests {args.requests}`",
        f"- Machine: {os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}; load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end (a shared machine: read medians and differences)",
        "- Method: one keep-alive connection, sequential requests; each round interleaves /health, a new feedback row "
        "and the same row again for every request id; SQLite ledger in WAL mode, each feedback committed before "
        "its 200", "",
        "| call | p50 (ms) | p99 (ms) | added p50 vs /health (ms) |", "|---|---|---|---|",
    ]
    for kind in ("health", "feedback (new)", "feedback (again)"):
        lines.append(f"| {kind} | {med(kind, 0):.3f} | {med(kind, 1):.3f} | "
                     f"{'—' if kind == 'health' else f'{added[kind]:.3f}'} |")
    target = max(added.values())
    lines += ["", f"Target (issue 16): p50 added ≤ 2 ms: **{'met' if target <= 2 else 'missed'}** "
                  f"({target:.3f} ms at the worse of the two). Durability (0 acknowledged rows lost under kill -9) is "
                  "a test: tests/test_learning_feedback.py::test_acknowledged_feedback_survives_kill_9.", ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
