#!/usr/bin/env python3
"""The APIs agents speak against Chat Completions, through the same gateway in the same run (issue 22).

One Pointsman gateway (the rules policy of run.py) in front of the test upstream; wrk at concurrency 1 on
  chat       POST /v1/chat/completions
  messages   POST /v1/messages      (Anthropic's Messages API, translated at the edge)
  responses  POST /v1/responses     with store: false
  responses+store                   with store: true (a row committed to the ledger's SQLite before the answer)
in interleaved rounds (order rotated each round), then the added latency of each against chat: median p50 across
rounds, and the p50 difference per round. Target: messages and responses within 0.2 ms p50 of chat.
Writes PROTOCOLS.md beside this file. Needs wrk (bash bench/gateway/setup.sh).

Run: .venv/bin/python bench/gateway/protocols.py [--rounds 5] [--seconds 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import API_KEY, HOST, PROMPT, ROOT, Proc, body_for, free_port, wait_ready, working_tree_code, wrk  # noqa: E402

BODIES = {
    "chat": ("/v1/chat/completions", body_for("auto", False)),
    "messages": ("/v1/messages", {"model": "auto", "max_tokens": 32, "messages": [{"role": "user", "content": PROMPT}]}),
    "responses": ("/v1/responses", {"model": "auto", "max_output_tokens": 32, "input": PROMPT, "store": False}),
    "responses+store": ("/v1/responses", {"model": "auto", "max_output_tokens": 32, "input": PROMPT}),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--out", default=str(HERE / "PROTOCOLS.md"))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pointsman-protocols-"))
    logdir = tmp / "logs"
    logdir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(BENCH_KEY=API_KEY, NO_PROXY="*", PYTHONUNBUFFERED="1")
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        env.pop(key, None)
    procs: list[Proc] = []
    try:
        up_port = free_port()
        upstream = Proc("upstream", [str(ROOT / ".venv" / "bin" / "python"), "-m", "tests.upstream", "--host", HOST,
                                     "--port", str(up_port)], env, ROOT, logdir, None)
        procs.append(upstream)
        wait_ready(upstream, up_port, "/v1/chat/completions", body_for("echo", False), {}, 30)
        base = f"http://{HOST}:{up_port}/v1"
        config = tmp / "pointsman.yaml"
        config.write_text(
            "models:\n"
            f'  - {{name: echo-cheap, provider: openai, base_url: "{base}", model: echo, api_key_env: BENCH_KEY, '
            "prices: {input: 0.1, output: 0.2}}\n"
            f'  - {{name: echo-strong, provider: openai, base_url: "{base}", model: echo, api_key_env: BENCH_KEY, '
            "prices: {input: 5, output: 15}}\n"
            "policies:\n"
            '  auto: {rules: [{when: {keywords: ["prove"]}, route: echo-strong}], default: echo-cheap}\n'
            f'server: {{ledger_url: "sqlite:///{tmp / "ledger.db"}"}}\n')
        port = free_port()
        gateway = Proc("pointsman", [str(ROOT / ".venv" / "bin" / "pointsman"), "serve", "--config", str(config),
                                     "--host", HOST, "--port", str(port)], env, ROOT, logdir, None)
        procs.append(gateway)
        headers = {"authorization": f"Bearer {API_KEY}"}
        wait_ready(gateway, port, "/v1/chat/completions", body_for("auto", False), headers, 120)
        files = {}
        for name, (_, body) in BODIES.items():
            files[name] = tmp / f"{name}.json"
            files[name].write_text(json.dumps(body))
        names = list(BODIES)
        rounds: list[dict[str, dict]] = []
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            results = {}
            for name in order:
                path = BODIES[name][0]
                wrk(port, path, files[name], headers, 1, 1, None)  # warm-up
                results[name] = wrk(port, path, files[name], headers, 1, args.seconds, None)
                if results[name]["errors"]:
                    raise RuntimeError(f"{name}: {results[name]['errors']} errors")
            rounds.append(results)
            print(f"round {r + 1}: " + ", ".join(f"{n} p50 {results[n]['p50']:.0f} us" for n in names), flush=True)
        write(Path(args.out), rounds, names, args)
    finally:
        for proc in reversed(procs):
            proc.stop()
    return 0


def write(path: Path, rounds: list[dict[str, dict]], names: list[str], args: argparse.Namespace) -> None:
    med = {n: statistics.median(r[n]["p50"] for r in rounds) for n in names}
    p99 = {n: statistics.median(r[n]["p99"] for r in rounds) for n in names}
    rps = {n: statistics.median(r[n]["rps"] for r in rounds) for n in names}
    lines = [
        "# The APIs agents speak against Chat Completions (bench/gateway/protocols.py)", "",
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; code: {working_tree_code()}",
        f"- command: `.venv/bin/python bench/gateway/protocols.py --rounds {args.rounds} --seconds {args.seconds:g}`",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end; not pinned, other work on the machine",
        "- one gateway (rules policy, SQLite ledger, cache off by default for these sampled requests), the test upstream "
        "(echo); wrk -c1 per API, interleaved rounds, order rotated", "",
        "| API | p50 (ms, median of rounds) | p99 (ms) | RPS at c=1 | p50 minus chat (ms, median of per-round differences) |",
        "|---|---|---|---|---|",
    ]
    for n in names:
        diff = statistics.median(r[n]["p50"] - r["chat"]["p50"] for r in rounds) / 1000
        lines.append(f"| {n} | {med[n] / 1000:.3f} | {p99[n] / 1000:.3f} | {rps[n]:.0f} | "
                     f"{'-' if n == 'chat' else f'{diff:+.3f}'} |")
    target = {n: statistics.median(r[n]["p50"] - r["chat"]["p50"] for r in rounds) / 1000
              for n in ("messages", "responses")}
    met = all(v <= 0.2 for v in target.values())
    lines += ["", f"Target (issue 22): /v1/messages and /v1/responses within 0.2 ms p50 of chat: "
                  f"{'met' if met else 'NOT met'} (messages {target['messages']:+.3f} ms, responses "
                  f"{target['responses']:+.3f} ms).", "",
              "`responses+store` commits the stored response to the ledger's database before answering (a follow-up "
              "on another replica must find it): that write is its difference from `responses`.", ""]
    path.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
