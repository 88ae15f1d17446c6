"""Tier-2 latency of this checkout against an earlier commit, run alternately in one session.

Each round runs `latency.py` of a git worktree of the earlier commit, then of this checkout (each with its own
source tree and shipped router, the same interpreter and static table), and the table gives each length's
p50 / p99 per round. Writes LATENCY_AB.md beside this file.

    git worktree add /tmp/prev <commit>
    .venv/bin/python bench/router/latency_ab.py --previous /tmp/prev [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROW = re.compile(r"^\| (\d+) \| ([\d.]+) / ([\d.]+) \|")


def run(tree: Path, lengths: list[int], runs: int) -> dict[int, tuple[float, float]]:
    done = subprocess.run([sys.executable, str(tree / "bench" / "router" / "latency.py"), "--rounds", "1", "--runs",
                           str(runs), "--requests", "64", "--lengths", *map(str, lengths)],
                          capture_output=True, text=True, check=True)
    return {int(m[1]): (float(m[2]), float(m[3])) for line in done.stdout.splitlines() if (m := ROW.match(line))}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--previous", required=True, help="a worktree of the earlier commit")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=62)
    parser.add_argument("--lengths", type=int, nargs="+", default=[16, 128, 512])
    args = parser.parse_args()
    previous, current = Path(args.previous), HERE.parents[1]
    commit = subprocess.run(["git", "-C", str(previous), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    rows = []
    for r in range(args.rounds):
        before = run(previous, args.lengths, args.runs)
        after = run(current, args.lengths, args.runs)
        rows += [f"| {r + 1} | {n} | {before[n][0]:.1f} / {before[n][1]:.1f} | {after[n][0]:.1f} / {after[n][1]:.1f} |"
                 for n in args.lengths]
        print(rows[-len(args.lengths):], file=sys.stderr)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    text = "\n".join([
        "# Tier-2 latency: this checkout against an earlier commit", "",
        f"Written by `bench/router/latency_ab.py` ({time.strftime('%Y-%m-%d')}; load average at the end {load}). "
        f"`SemanticTier.decide` end to end, {args.runs - 2} prompts per length and round, p50 / p99 in ms; the two "
        f"trees alternate round by round. Earlier: `{commit}`.", "",
        f"| round | prompt tokens | {commit} | this checkout |", "|---|---|---|---|", *rows, ""])
    (HERE / "LATENCY_AB.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
