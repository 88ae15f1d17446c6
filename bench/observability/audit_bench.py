"""`pointsman audit` on a 10,000-prompt log built from ../shared/data (issue 21: within 60 s, with a progress bar).

The log: OpenAI chat requests, one per line, each with a cohort (its source) and the model that answered it
today (gpt-4o for every row: the "everything on the frontier model" baseline), drawn from MMLU, GSM8K (RouteLLM),
arena-bench and AlpacaEval in turn, repeating when a source runs out. The pool: the README's two-model example,
priced from the genai-prices snapshot (gpt-4o-mini, gpt-4o).

    .venv/bin/python bench/observability/audit_bench.py [--prompts 10000] [--out bench/observability/audit-report]
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1].parent / "shared" / "data"
POOL = """models:
  - {name: gpt-4o-mini, provider: openai, api_key_env: OPENAI_API_KEY, tags: {tier: small}}
  - {name: gpt-4o, provider: openai, api_key_env: OPENAI_API_KEY, tags: {tier: frontier}}
policies:
  auto: {semantic: {router: default}}
"""


def sources() -> dict[str, list[str]]:
    from pointsman.evaluation.datasets import load_alpacaeval, load_arena_bench, load_routellm_gsm8k, load_routellm_mmlu

    found = {}
    for name, load in (("mmlu", lambda: load_routellm_mmlu(DATA / "routellm")),
                       ("gsm8k", lambda: load_routellm_gsm8k(DATA / "routellm")),
                       ("arena-bench", lambda: load_arena_bench(DATA / "arena-bench")),
                       ("alpacaeval", lambda: load_alpacaeval(DATA / "alpacaeval"))):
        found[name] = list(load().prompts)
    return found


def build(path: Path, n: int) -> dict[str, int]:
    pools = sources()
    cycles = {name: itertools.cycle(prompts) for name, prompts in pools.items()}
    order = itertools.cycle(list(pools))
    counts = dict.fromkeys(pools, 0)
    with path.open("w") as out:
        for _ in range(n):
            name = next(order)
            counts[name] += 1
            out.write(json.dumps({"model": "gpt-4o", "cohort": name,
                                  "messages": [{"role": "user", "content": next(cycles[name])}]}) + "\n")
    return counts


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=10_000)
    parser.add_argument("--out", default=str(HERE / "audit-report"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log, pool = out / "prompts.jsonl", out / "pool.yaml"
    counts = build(log, args.prompts)
    pool.write_text(POOL)
    print(f"log: {args.prompts} prompts {counts}", file=sys.stderr)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pointsman.cli", "audit", str(log), "--config", str(pool),
                           "--out", str(out)], check=False)
    seconds = time.perf_counter() - started
    print(f"pointsman audit: exit {done.returncode}, {seconds:.1f} s wall (process start, router load, "
          f"{args.prompts} prompts, report)")
    log.unlink()  # 10,000 prompts of benchmark text: rebuilt on each run, not committed
    return done.returncode


if __name__ == "__main__":
    raise SystemExit(main())
