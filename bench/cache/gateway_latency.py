"""The cache end to end through `pointsman serve`: hit latency, and what the miss path adds.

Starts the test upstream and two gateways on loopback (the same pool; one with the in-process cache, one
without), then measures sequentially (c=1) with one keep-alive HTTP client:
  exact hit     the same request again (temperature 0)
  semantic hit  paraphrases of cached questions, each text new (a prefix and a suffix vary), so each needs a
                fresh query embedding (the encoder keeps an LRU of texts: a repeated text would skip it);
                latency over the requests that were semantic hits
  miss          new cacheable questions in the populated namespace: cache-on minus cache-off is what a miss
                costs (lookup, the query embedding for the semantic layer, the store after the answer)
  miss, new namespace  the same, each request under its own x-pointsman-team (an empty namespace: no
                embedding before the upstream call; it is computed for the store after the answer is sent)
  miss, real questions  distinct Quora questions (../shared/data/qqp, when present) in the populated namespace:
                the miss cost at real questions' lengths (the "miss" texts above carry a 19-digit number, 21 tokens)
  not cacheable requests without temperature 0 (sampled): the pre-check only
With `--compare-src DIR` a third gateway, cache on, runs the code in DIR/src (a worktree of another commit: what a
change buys, measured in the same rounds), and the cache-on rows are repeated for it, marked "(compare)".
The measurements are interleaved: `--rounds` rounds, each running n/rounds requests of every measurement in
turn, so that load from other work on the machine spreads over all of them; p50 is over all requests, and
"round p50s" shows the spread between rounds. The table is printed (and written to --out if given);
bench/cache/GATEWAY.md holds the reported runs with their analysis (compose it from several runs).

    .venv/bin/python bench/cache/gateway_latency.py [--n 300] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _embed import DATA, load_pairs  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
QUESTIONS = ["How do I reverse a list in Python?", "What is the capital of Australia?", "How do I boil an egg?",
             "What causes the seasons on Earth?", "How do I centre a div in CSS?", "Why is the sky blue?",
             "What is a closure in JavaScript?", "How long should I steep green tea?"]
PARAPHRASES = ["How can I reverse a list in Python?", "How can I boil an egg?", "How can I centre a div in CSS?",
               "What's a closure in JavaScript?", "How long should green tea steep?"]
PREFIXES = ["", "Hi, ", "Hello, ", "Quick question: ", "Hey, ", "Question: ", "So, ", "Hi there, "]
SUFFIXES = ["", " Thanks.", " Thanks!", " Thank you.", " Cheers.", " Thanks in advance.", " Thank you!", " Many thanks."]


def paraphrase_variants() -> list[str]:
    """320 distinct texts, each a paraphrase of a cached question."""
    out = []
    for prefix in PREFIXES:
        for suffix in SUFFIXES:
            for text in PARAPHRASES:
                out.append(prefix + (text[0].lower() + text[1:] if prefix else text) + suffix)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(url: str) -> None:
    for _ in range(600):
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def percentiles(samples: list[float]) -> str:
    if not samples:
        return "- | - | 0"
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return f"{statistics.median(ordered):.2f} | {p99:.2f} | {len(ordered)}"


def real_questions(n: int, seed: int = 0) -> list[str]:
    """n distinct Quora questions (text_b of the QQP pairs), or [] without the shared data."""
    if not DATA.is_file():
        return []
    texts = sorted(set(load_pairs()[1]))
    random.Random(seed).shuffle(texts)
    return texts[:n]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=300, help="requests per measurement")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--out", default=None, help="also write the table to this file")
    parser.add_argument("--label", default="", help="a note for the output (e.g. which code ran)")
    parser.add_argument("--semantic-routing", action="store_true",
                        help="a two-model pool asked for model=auto with the semantic tier, so both gateways embed "
                             "the prompt for routing and the cache shares that embedding")
    parser.add_argument("--cache-encoder", default="minilm-dup", choices=("minilm-dup", "minilm"),
                        help="the cache's encoder (cache.encoder)")
    parser.add_argument("--compare-src", default=None,
                        help="also run a cache-on gateway from this directory's src (e.g. a worktree of the commit "
                             "before a change), interleaved with the others")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pointsman-cachebench-"))
    up_port, on_port, off_port, cmp_port = free_port(), free_port(), free_port(), free_port()
    env = {**os.environ, "BENCH_KEY": "sk-bench"}
    processes = [subprocess.Popen([sys.executable, "-m", "tests.upstream", "--port", str(up_port)], cwd=ROOT, env=env)]
    gateways = [(on_port, "true", env), (off_port, "false", env)]
    if args.compare_src:
        src = str(Path(args.compare_src).resolve() / "src")
        gateways.append((cmp_port, "true", {**env, "PYTHONPATH": os.pathsep.join([src, env.get("PYTHONPATH", "")])}))
    try:
        for port, cache, gateway_env in gateways:
            config = work / f"pool-{port}.yaml"
            second = (f"""  - {{name: m2, provider: openai, base_url: "http://127.0.0.1:{up_port}/v1", model: echo, api_key_env: BENCH_KEY,
      prices: {{input: 10, output: 30}}}}
policies: {{auto: {{semantic: {{}}}}}}
""" if args.semantic_routing else "")
            config.write_text(f"""models:
  - {{name: m, provider: openai, base_url: "http://127.0.0.1:{up_port}/v1", model: echo, api_key_env: BENCH_KEY,
      prices: {{input: 0.2, output: 0.2}}}}
{second}server: {{ledger_url: "sqlite:///{work}/ledger-{port}.db", cache: {{enabled: {cache}, encoder: {args.cache_encoder}}}}}
""")
            processes.append(subprocess.Popen([sys.executable, "-m", "pointsman.cli", "serve", "--config", str(config),
                                               "--port", str(port)], cwd=work, env=gateway_env))
        for port in (up_port, *(g[0] for g in gateways)):
            wait(f"http://127.0.0.1:{port}/health" if port != up_port else f"http://127.0.0.1:{port}/_control/stats")
        client = httpx.Client(timeout=30)

        def timed(port: int, text: str, temperature: float | None = 0, team: str | None = None) -> tuple[float, str]:
            body = {"model": "auto" if args.semantic_routing else "m", "messages": [{"role": "user", "content": text}]}
            if temperature is not None:
                body["temperature"] = temperature
            headers = {"x-pointsman-team": team} if team else None
            started = time.perf_counter()
            response = client.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, headers=headers)
            elapsed = (time.perf_counter() - started) * 1000
            response.raise_for_status()
            return elapsed, response.headers.get("x-pointsman-cache", "miss")

        for q in QUESTIONS:  # fill the cache
            timed(on_port, q)
            if args.compare_src:
                timed(cmp_port, q)
        variants = paraphrase_variants()
        real = real_questions(args.n)
        unique = (f"Unique question number {i} about {k} {time.time_ns()}?" for i, k in enumerate(iter(int, 1)))
        # name, port, texts (None: new each time), temperature, a new team per request, only count this kind
        plan = [("exact hit", on_port, QUESTIONS, 0, False, "hit-exact"),
                ("semantic hit", on_port, variants, 0, False, "hit-semantic"),
                ("miss, cache on", on_port, None, 0, False, None),
                ("miss, cache on, new namespace", on_port, None, 0, True, None),
                ("miss, cache off", off_port, None, 0, False, None),
                *([("miss, real questions, cache on", on_port, real, 0, False, None),
                   ("miss, real questions, cache off", off_port, real, 0, False, None)] if real else []),
                ("not cacheable (sampled), cache on", on_port, QUESTIONS, None, False, None),
                ("not cacheable (sampled), cache off", off_port, QUESTIONS, None, False, None)]
        if args.compare_src:  # the other code's cache-on rows, each placed right after this code's
            for k in range(len(plan) - 1, -1, -1):
                name, port, *rest = plan[k]
                if port == on_port:
                    plan.insert(k + 1, (f"{name} (compare)", cmp_port, *rest))
        samples: dict[str, list[float]] = {p[0]: [] for p in plan}
        round_p50: dict[str, list[float]] = {p[0]: [] for p in plan}
        kinds: dict[str, dict[str, int]] = {p[0]: {} for p in plan}
        counters = dict.fromkeys(samples, 0)
        per_round = max(1, args.n // args.rounds)
        for _round in range(args.rounds):
            for name, port, texts, temperature, new_team, only in plan:
                got = []
                for _ in range(per_round):
                    i = counters[name]
                    counters[name] += 1
                    text = texts[i % len(texts)] if texts else next(unique)
                    elapsed, kind = timed(port, text, temperature, f"bench-{time.time_ns()}" if new_team else None)
                    kinds[name][kind] = kinds[name].get(kind, 0) + 1
                    if only is None or kind == only:
                        got.append(elapsed)
                samples[name] += got
                if got:
                    round_p50[name].append(statistics.median(got))
        load = os.getloadavg()
        lines = ["# Cache latency through the gateway", "",
                 f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; command: `.venv/bin/python "
                 f"bench/cache/gateway_latency.py --n {args.n} --rounds {args.rounds}"
                 + (" --semantic-routing" if args.semantic_routing else "")
                 + (f" --compare-src {args.compare_src}" if args.compare_src else "") + "`"
                 + (f"; {args.label}" if args.label else ""),
                 f"- Machine: 2 cores shared with other work; load average after the run {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
                 "- Sequential requests (c=1), one keep-alive client, the test upstream answering at once; in-process store,",
                 "  semantic layer on (the cache encoder's query embedding, minilm-dup by default), default delta 2%;",
                 "  measurements interleaved in rounds.", "",
                 "| measurement | p50 (ms) | p99 (ms) | requests | round p50s (ms) | cache header seen |",
                 "|---|---|---|---|---|---|"]
        for name, *_ in plan:
            spread = ", ".join(f"{x:.2f}" for x in round_p50[name])
            seen = ", ".join(f"{k} {v}" for k, v in sorted(kinds[name].items()))
            lines.append(f"| {name} | {percentiles(samples[name])} | {spread} | {seen} |")
        if args.out:
            Path(args.out).write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        return 0
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(30)


if __name__ == "__main__":
    raise SystemExit(main())
