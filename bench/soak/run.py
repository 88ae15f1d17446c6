"""Soak: a fixed request rate through `pointsman serve` for a long time, against the test upstream.

Three processes: the test upstream (`python -m tests.upstream`), the gateway (`pointsman serve`, the CLI)
and this script, an open-loop asyncio client (aiohttp) that starts request i at t0 + i/rate whether or not
earlier ones have finished, so a slow gateway shows up as latency, not as a lower rate (latency is counted
from the scheduled start). The mix: non-streaming and streaming, default-tier and rule-tier routing, a
model named directly, and policies whose first model always fails (503, connection reset, timeout), so
that retries, fallbacks and cooldowns run all the time; every request has a healthy model to end on, so
every answer should be a 200. Each minute: requests, statuses, latency and overhead percentiles, the
gateway's resident memory and CPU, the machine's load.

    .venv/bin/python bench/soak/run.py                          # 200 req/s for 10 min -> bench/soak/RESULTS.md
    .venv/bin/python bench/soak/run.py --rate 50 --duration 60 --out /tmp/soak.md
    .venv/bin/python bench/soak/run.py --cache --out bench/soak/RESULTS_CACHE.md

``--cache``: every request at temperature 0 with a distinct prompt (~200 characters, so the echoed answer is a
~450-byte chat.completion), so that every answer is stored (the cache is on by default), and policy ``auto``
routes with the semantic tier after its rules (as the README's pool does): the cache's memory under load. The
table adds the gateway's idle RSS (before the first request) and the cache's own counters at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import psutil

ROOT = Path(__file__).resolve().parents[2]
KEY_ENV = "PM_SOAK_UPSTREAM_KEY"

# (share, name, body overrides) - the request mix
MIX = [
    (0.45, "default", {"model": "auto"}),
    (0.15, "rules", {"model": "auto", "code": True}),
    (0.20, "stream", {"model": "auto", "stream": True, "stream_options": {"include_usage": True}}),
    (0.05, "stream-rules", {"model": "auto", "stream": True, "code": True}),
    (0.05, "direct", {"model": "big"}),
    (0.04, "fault-503", {"model": "router/flaky"}),
    (0.03, "fault-reset", {"model": "router/resetting"}),
    (0.03, "fault-timeout", {"model": "router/timing-out", "stream": True}),
]
UPSTREAM_KINDS = {"upstream_error", "rate_limited", "timeout", "connect_error", "connection_error", "bad_upstream_response",
                  "incomplete_stream", "upstream_auth_error", "upstream_model_not_found", "all_models_cooling_down"}


def config_text(upstream: str, ledger: Path, cache: bool = False) -> str:
    common = f'base_url: "{upstream}/v1", api_key_env: {KEY_ENV}'
    semantic = "\n    semantic: {}" if cache else ""
    admin = f"\n  admin_key_env: {KEY_ENV}" if cache else ""  # for /admin/cache/metrics; chat requests send it too
    return f"""
models:
  - {{name: small, provider: openai, model: echo, {common}, prices: {{input: 0.1, output: 0.3}}}}
  - {{name: big, provider: openai, model: echo, {common}, prices: {{input: 3, output: 15}}}}
  - {{name: flaky, provider: openai, model: "status:503", {common}, max_retries: 1}}
  - {{name: resetting, provider: openai, model: reset, {common}, max_retries: 0}}
  - {{name: timing-out, provider: openai, model: "slow:2000", {common}, timeout_s: 0.2, max_retries: 0}}
policies:
  auto:
    rules: [{{name: code, when: {{regex: "```|\\\\bdef\\\\b"}}, route: big}}]{semantic}
    default: small
    fallbacks: [big]
  flaky: {{default: flaky, fallbacks: [small]}}
  resetting: {{default: resetting, fallbacks: [small]}}
  timing-out: {{default: timing-out, fallbacks: [small]}}
server:
  ledger_url: "sqlite:///{ledger}"
  cooldown_failures: 5
  cooldown_s: 5
  retry_backoff_s: 0.05{admin}
"""


@dataclass
class Minute:
    started: float
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    overheads: list[float] = field(default_factory=list)
    statuses: collections.Counter = field(default_factory=collections.Counter)
    kinds: collections.Counter = field(default_factory=collections.Counter)
    errors: collections.Counter = field(default_factory=collections.Counter)
    late_starts: int = 0
    rss_mb: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    load: float = 0.0


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


WORDS = ("river harbour station valley market garden bridge tower forest island meadow canyon lighthouse orchard "
         "quarry glacier desert lagoon plateau vineyard").split()


def body_for(kind_body: dict, i: int, cache: bool = False) -> dict:
    text = f"request {i}: please summarise the weather report for region {i % 97} in two sentences."
    if cache:  # distinct and ~200 characters: the echoed answer is a ~450-byte chat.completion
        rng = random.Random(i)
        text = (f"Request {i}: summarise in two sentences what the weather report says about the "
                + " ".join(rng.choice(WORDS) for _ in range(12)) + f" near region {i % 97} tomorrow morning.")
    if kind_body.get("code"):
        text = f"def f{i}(x):\n    return x * {i}\n\nWhat does this function do?"
    body = {k: v for k, v in kind_body.items() if k != "code"}
    body["messages"] = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": text}]
    body["max_tokens"] = 64
    if cache:
        body["temperature"] = 0
    return body


async def one(session: aiohttp.ClientSession, url: str, i: int, name: str, body: dict, scheduled: float,
              minutes: list[Minute], t0: float) -> None:
    status, error, overhead, ttft = 0, None, None, None
    try:
        async with session.post(url, json=body) as response:
            status = response.status
            overhead = response.headers.get("x-pointsman-overhead-ms")
            if body.get("stream") and status == 200:
                async for line in response.content:
                    if ttft is None and line.startswith(b"data: {"):
                        ttft = time.perf_counter() - scheduled
                    if line.startswith(b'data: {"error"'):
                        status, error = 599, json.loads(line[6:])["error"].get("code")  # an error event mid-stream
            else:
                payload = await response.read()
                if status != 200:
                    try:
                        error = json.loads(payload)["error"].get("code")
                    except (ValueError, KeyError, TypeError, AttributeError):
                        error = "not-openai-shaped"
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        status, error = -1, type(exc).__name__
    done = time.perf_counter()
    minute = minutes[min(len(minutes) - 1, int((scheduled - t0) // 60))]
    minute.latencies.append((done - scheduled) * 1000)
    if ttft is not None:
        minute.ttfts.append(ttft * 1000)
    if overhead is not None:
        minute.overheads.append(float(overhead))
    minute.statuses[status] += 1
    minute.kinds[name] += 1
    if error:
        minute.errors[f"{status} {error}"] += 1


async def drive(url: str, rate: float, duration: float, gateway: psutil.Process, others: dict[str, psutil.Process],
                seed: int, cache: bool = False) -> list[Minute]:
    rng = random.Random(seed)
    names = [m[1] for m in MIX]
    weights = [m[0] for m in MIX]
    bodies = {m[1]: m[2] for m in MIX}
    t0 = time.perf_counter()
    minutes = [Minute(started=t0 + 60 * k) for k in range(int((duration + 59) // 60))]
    connector = aiohttp.TCPConnector(limit=512, force_close=False)
    headers = {"authorization": f"Bearer {os.environ.get(KEY_ENV, 'sk-soak')}"} if cache else None
    timeout = aiohttp.ClientTimeout(total=30)
    tasks: set[asyncio.Task] = set()
    stop_sampling = asyncio.Event()
    procs = {"gateway": gateway, **others}
    for proc in procs.values():
        proc.cpu_percent(None)

    async def sample() -> None:
        last_minute = -1
        while not stop_sampling.is_set():
            now = time.perf_counter()
            k = min(len(minutes) - 1, int((now - t0) // 60))
            minutes[k].rss_mb.append(gateway.memory_info().rss / 2**20)
            if k != last_minute and last_minute >= 0:
                minutes[last_minute].cpu = {n: p.cpu_percent(None) for n, p in procs.items()}
                minutes[last_minute].load = os.getloadavg()[0]
            last_minute = k
            try:
                await asyncio.wait_for(stop_sampling.wait(), 5)
            except asyncio.TimeoutError:
                pass
        minutes[last_minute].cpu = {n: p.cpu_percent(None) for n, p in procs.items()}
        minutes[last_minute].load = os.getloadavg()[0]

    sampler = asyncio.create_task(sample())
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as session:
        total = int(rate * duration)
        for i in range(total):
            scheduled = t0 + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.05:
                minutes[min(len(minutes) - 1, int((scheduled - t0) // 60))].late_starts += 1
            name = rng.choices(names, weights)[0]
            task = asyncio.create_task(one(session, url, i, name, body_for(bodies[name], i, cache), scheduled, minutes,
                                           t0))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
    stop_sampling.set()
    await sampler
    return minutes


def cache_metrics(url: str, key: str) -> dict | None:
    import urllib.request

    try:
        request = urllib.request.Request(url, headers={"authorization": f"Bearer {key}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


def wait_up(url: str, process: subprocess.Popen) -> None:
    import urllib.request

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            if process.poll() is not None:
                raise SystemExit(f"{process.args} exited with {process.returncode}")
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def report(minutes: list[Minute], args: argparse.Namespace, ledger_rows: int, ledger_statuses: dict, took: float,
           idle_mb: float = float("nan"), cache_stats: dict | None = None) -> str:
    total = sum(sum(m.statuses.values()) for m in minutes)
    statuses = sum((m.statuses for m in minutes), collections.Counter())
    errors = sum((m.errors for m in minutes), collections.Counter())
    gateway_5xx = sum(n for key, n in errors.items() if key.split()[0].isdigit() and int(key.split()[0]) >= 500
                      and key.split(" ", 1)[1] not in UPSTREAM_KINDS)
    upstream_5xx = sum(n for key, n in errors.items() if key.split()[0].isdigit() and int(key.split()[0]) >= 500
                       and key.split(" ", 1)[1] in UPSTREAM_KINDS)
    warm = minutes[0].rss_mb[-1] if minutes[0].rss_mb else float("nan")
    last = minutes[-1].rss_mb[-1] if minutes[-1].rss_mb else float("nan")
    peak = max(max(m.rss_mb) for m in minutes if m.rss_mb)
    growth = (last - warm) / warm * 100
    all_lat = [x for m in minutes for x in m.latencies]
    lines = [
        "# Soak: a fixed rate through the gateway",
        "",
        f"Run finished {time.strftime('%Y-%m-%d %H:%M')} UTC, `{' '.join(['python', 'bench/soak/run.py', *sys.argv[1:]])}`: "
        f"**{args.rate:g} req/s for {args.duration:g} s** (open loop, {total} requests in {took:.0f} s), "
        "`pointsman serve` (1 worker, uvloop + httptools, SQLite ledger flushed every 0.5 s) against the test "
        "upstream (`python -m tests.upstream`), each in its own process, with this client (aiohttp) a third.",
        "",
        "Mix: " + ", ".join(f"{name} {share:.0%}" for share, name, _ in MIX) + ". `fault-*` requests go to a "
        "policy whose first model always fails (503 with one retry, connection reset, 2 s stall against a 0.2 s "
        "timeout, streamed) and falls back to a healthy one; its breaker opens after 5 failures for 5 s, so the "
        "faulty model is tried again every few seconds all along.",
        "",
        "## Verdict",
        "",
        "| | |",
        "|---|---|",
        f"| requests / answered 200 | {total} / {statuses.get(200, 0)} |",
        f"| **gateway-made 5xx** | **{gateway_5xx}** |",
        f"| upstream failures passed on as 5xx (every request had a healthy fallback, so expected 0) | {upstream_5xx} |",
        f"| other non-200 | {total - statuses.get(200, 0) - gateway_5xx - upstream_5xx} |",
        f"| ledger rows after a clean shutdown | {ledger_rows} (statuses {dict(sorted(ledger_statuses.items()))}) |",
        f"| gateway RSS after warm-up (end of minute 1) → end | {warm:.1f} MB → {last:.1f} MB (**{growth:+.1f}%**), peak {peak:.1f} MB |",
        f"| gateway RSS idle (up, before the first request) → peak | {idle_mb:.1f} MB → {peak:.1f} MB "
        f"(**{peak - idle_mb:+.1f} MB**) |",
        f"| latency over the whole run p50 / p90 / p99 / max | {pct(all_lat, .5):.1f} / {pct(all_lat, .9):.1f} / "
        f"{pct(all_lat, .99):.1f} / {max(all_lat):.0f} ms |",
        "",
        "Errors by status and code: " + (", ".join(f"`{k}` ×{n}" for k, n in errors.most_common()) or "none") + ".",
        "",
        *([f"Cache at the end (`/admin/cache/metrics`): {cache_stats.get('entries')} entries, "
           f"{(cache_stats.get('bytes') or 0) / 2**20:.1f} MB by the store's estimate, "
           f"{cache_stats.get('evictions')} evicted, {cache_stats.get('stored')} stored, "
           f"{cache_stats.get('hits')} hits, {cache_stats.get('misses')} misses.", ""] if cache_stats else []),
        "## Per minute",
        "",
        "Latency from the scheduled start to the last byte (streams: to `[DONE]`); TTFT for streams; overhead is "
        "the gateway's own `x-pointsman-overhead-ms` (upstream time excluded). CPU: % of one core, per process "
        "(client = this script). Load: the machine's 1-minute load average (2 cores, shared with other work).",
        "",
        "| min | req | 200 | non-200 | late starts | p50 ms | p90 ms | p99 ms | max ms | TTFT p50/p99 ms | overhead p50/p99 ms "
        "| RSS MB (end) | CPU gw / upstream / client | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for k, m in enumerate(minutes, 1):
        n = sum(m.statuses.values())
        cpu = " / ".join(f"{m.cpu.get(p, float('nan')):.0f}" for p in ("gateway", "upstream", "client"))
        lines.append(f"| {k} | {n} | {m.statuses.get(200, 0)} | {n - m.statuses.get(200, 0)} | {m.late_starts} "
                     f"| {pct(m.latencies, .5):.1f} | {pct(m.latencies, .9):.1f} | {pct(m.latencies, .99):.1f} "
                     f"| {max(m.latencies, default=float('nan')):.0f} | {pct(m.ttfts, .5):.1f} / {pct(m.ttfts, .99):.1f} "
                     f"| {pct(m.overheads, .5):.2f} / {pct(m.overheads, .99):.2f} "
                     f"| {m.rss_mb[-1] if m.rss_mb else float('nan'):.1f} | {cpu} | {m.load:.2f} |")
    lines += ["", "Note: the `fault-timeout` requests wait out the 0.2 s timeout before falling back, and `fault-503` "
              "waits one backoff; they set the p99 rather than the gateway's own overhead."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--duration", type=float, default=600, help="seconds")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--out", default=str(Path(__file__).with_name("RESULTS.md")))
    parser.add_argument("--cache", action="store_true", help="distinct prompts at temperature 0, semantic routing "
                        "(see the module's docstring)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pointsman-soak-"))
    ledger = work / "ledger.db"
    up_port, gw_port = free_port(), free_port()
    (work / "pointsman.yaml").write_text(config_text(f"http://127.0.0.1:{up_port}", ledger, args.cache))
    # this tree's code (src/) and its test upstream (tests/)
    env = {**os.environ, KEY_ENV: "sk-soak", "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    upstream = subprocess.Popen([sys.executable, "-m", "tests.upstream", "--port", str(up_port)], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    gateway = subprocess.Popen([sys.executable, "-m", "pointsman.cli", "serve", "--config", str(work / "pointsman.yaml"),
                                "--port", str(gw_port)], cwd=work, env=env, stdout=subprocess.DEVNULL,
                               stderr=open(work / "gateway.log", "w"))
    try:
        wait_up(f"http://127.0.0.1:{up_port}/_control/stats", upstream)
        wait_up(f"http://127.0.0.1:{gw_port}/health", gateway)
        time.sleep(2.0)
        idle_mb = psutil.Process(gateway.pid).memory_info().rss / 2**20
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        started = time.perf_counter()
        minutes = asyncio.run(drive(f"http://127.0.0.1:{gw_port}/v1/chat/completions", args.rate, args.duration,
                                    psutil.Process(gateway.pid),
                                    {"upstream": psutil.Process(upstream.pid), "client": psutil.Process()}, args.seed,
                                    args.cache))
        took = time.perf_counter() - started
        cache_stats = cache_metrics(f"http://127.0.0.1:{gw_port}/admin/cache/metrics", env[KEY_ENV])
    finally:
        for process in (gateway, upstream):
            process.send_signal(signal.SIGINT)
        for process in (gateway, upstream):
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
    db = sqlite3.connect(ledger)
    rows = db.execute("SELECT count(*) FROM requests").fetchone()[0]
    ledger_statuses = dict(db.execute("SELECT status, count(*) FROM requests GROUP BY status").fetchall())
    db.close()
    text = report(minutes, args, rows, ledger_statuses, took, idle_mb, cache_stats)
    Path(args.out).write_text(text)
    print(text)
    print(f"work dir: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
