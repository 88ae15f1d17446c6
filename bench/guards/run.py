"""Guards bench (issue 20): the injection detector's quality, held-out and out of distribution, against the rule
layer alone; and the latency each guard adds through the gateway, beside a run with guards off. Writes
RESULTS.md and results.json beside this file.

Data: ../shared/data/injection only (S-Labs splits; yanismiraoui's multilingual positives), plus real user
prompts of other sources as benign out-of-distribution text (arena-bench questions, AlpacaEval instructions,
GSM8K questions) and this bench's own over-defence set (triggers.py). Thresholds are read from the S-Labs
validation split at the config's false-positive rates; the test split is read only here.

    .venv/bin/python bench/guards/run.py [--n 400] [--rounds 4] [--skip-latency]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from bench.guards.data import ROOT as DATA, alpacaeval, multilingual, s_labs  # noqa: E402
from bench.guards.train import embed, shipped, train, with_benign  # noqa: E402
from bench.guards.triggers import prompts as trigger_prompts  # noqa: E402
from pointsman.guards.detector import InjectionHead  # noqa: E402
from pointsman.guards.rules import match_rule  # noqa: E402

FPRS = (0.01, 0.035)  # 0.01: the config's default (guards.injection.fpr); 0.035: the issue's second point
SHARED = DATA.parent
PADS = ["thanks", "please and thank you", "have a nice day my friend", "by the way the weather is lovely today",
        "Thank you so much for your help, I really appreciate it.", "ok", "cheers mate",
        "I hope you are doing well this morning.", "no rush", "kind regards from Lisbon"]


def scores(head: InjectionHead, texts: Sequence[str]) -> np.ndarray:
    return np.array([head.score(t, e).score for t, e in zip(texts, embed(texts))])


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order)); ranks[order] = np.arange(1, len(order) + 1)
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def metrics(flagged: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    tp = int(np.sum(flagged & (labels == 1))); fp = int(np.sum(flagged & (labels == 0)))
    pos = int(np.sum(labels == 1)); neg = int(np.sum(labels == 0))
    return {"precision": tp / max(tp + fp, 1), "recall": tp / max(pos, 1), "fpr": fp / max(neg, 1), "tp": tp, "fp": fp}


def _turn(turn: Any) -> str:
    return turn["content"] if isinstance(turn, dict) else str(turn)


def benign_ood() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    out["alpacaeval instructions, odd half (even half trained on)"] = alpacaeval()[1::2]
    questions = SHARED / "arena-bench" / "question.jsonl"
    if questions.exists():
        with open(questions, encoding="utf-8") as f:
            out["arena-bench prompts"] = [_turn(json.loads(line)["turns"][0]) for line in f]
    with open(SHARED / "routellm" / "gsm8k_responses.csv", newline="", encoding="utf-8") as f:
        out["gsm8k questions"] = [row["prompt"] for row in csv.DictReader(f)]
    return out


def quality() -> dict[str, Any]:
    test_texts, test_labels = s_labs("test")
    head = shipped()
    report: dict[str, Any] = {"head": head.info, "thresholds": {str(f): head.threshold_at(f) for f in FPRS}}
    s = scores(head, test_texts)
    rules = np.array([match_rule(t) is not None for t in test_texts])
    report["auc"] = auc(s[test_labels == 1], s[test_labels == 0])
    report["test"] = {str(f): metrics(s >= head.threshold_at(f), test_labels) for f in FPRS}
    report["test_rules"] = metrics(rules, test_labels)
    # out of distribution, attacks: a head trained on S-Labs alone, tested on the multilingual source
    train_texts, train_labels = s_labs("train")
    only = train(*with_benign(train_texts, train_labels), "s-labs train split + the benign extras (no multilingual)")
    ml = multilingual()
    ml_scores = scores(only, ml)
    ml_test = scores(only, test_texts)
    report["ood_multilingual"] = {str(f): {"recall": float(np.mean(ml_scores >= only.threshold_at(f))),
                                           "s_labs_test_fpr": float(np.mean(ml_test[test_labels == 0] >= only.threshold_at(f)))}
                                  for f in FPRS}
    report["ood_multilingual_rules"] = float(np.mean([match_rule(t) is not None for t in ml]))
    # out of distribution, benign: real user prompts of other sources (shipped head)
    report["ood_benign"] = {}
    for name, texts in benign_ood().items():
        b = scores(head, texts)
        report["ood_benign"][name] = {"n": len(texts), **{str(f): float(np.mean(b >= head.threshold_at(f))) for f in FPRS},
                                      "rules": float(np.mean([match_rule(t) is not None for t in texts]))}
    # over-defence: benign prompts with trigger words
    triggers = trigger_prompts()
    t = scores(head, triggers)
    report["overdefence"] = {"n": len(triggers), **{str(f): float(np.mean(t < head.threshold_at(f))) for f in FPRS},
                             "rules": float(np.mean([match_rule(x) is None for x in triggers]))}
    # evasion: attacks detected at 1% FPR, with 1-5 harmless words or a polite sentence appended
    bar = head.threshold_at(0.01)
    detected = [x for x, y, sc in zip(test_texts, test_labels, s) if y == 1 and sc >= bar]
    rng = random.Random(20)
    padded = [f"{x} {rng.choice(PADS)}" for x in detected]
    p = scores(head, padded)
    report["evasion"] = {"n": len(detected), "flipped": float(np.mean(p < bar))}
    return report


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait(url: str, timeout_s: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


SETUPS = {"off": "", "injection": "injection: {action: flag}", "pii": "pii: {action: flag}",
          "both": "injection: {action: flag}, pii: {action: flag}"}
WORDS = ("the report covers revenue, hiring plans, office moves and a new supplier contract for the northern region; "
         "please check the numbers, the tone and whether the summary at the end matches the tables above. ").split()


def prompt_of(i: int, chars: int = 1000) -> str:
    rng = random.Random(i)
    words: list[str] = []
    while len(" ".join(words)) < chars:
        words.append(rng.choice(WORDS))
    return f"Request {i}: " + " ".join(words)[:chars - 20]


def latency(n: int, rounds: int) -> dict[str, Any]:
    import httpx

    env = {**os.environ, "BENCH_UPSTREAM_KEY": "unused"}
    up_port = free_port()
    processes = [subprocess.Popen([sys.executable, "-m", "tests.upstream", "--port", str(up_port)], cwd=ROOT, env=env)]
    ports: dict[str, int] = {}
    results: dict[str, list[float]] = {name: [] for name in SETUPS}
    try:
        with tempfile.TemporaryDirectory() as work:
            for name, guards in SETUPS.items():
                port = ports[name] = free_port()
                models = (f'[{{name: cheap, provider: openai, base_url: "http://127.0.0.1:{up_port}/v1", model: echo, '
                          f'api_key_env: BENCH_UPSTREAM_KEY, prices: {{input: 0.2, output: 0.2}}}}, '
                          f'{{name: strong, provider: openai, base_url: "http://127.0.0.1:{up_port}/v1", model: echo, '
                          f'api_key_env: BENCH_UPSTREAM_KEY, prices: {{input: 10, output: 30}}}}]')
                config = Path(work) / f"{name}.yaml"
                config.write_text(f"models: {models}\npolicies: {{auto: {{semantic: {{router: default}}}}}}\n"
                                  f"guards: {{{guards}}}\n"
                                  f"server: {{ledger_url: \"sqlite:///{work}/{name}.db\", cache: {{enabled: false}}}}\n")
                processes.append(subprocess.Popen([sys.executable, "-m", "pointsman.cli", "serve", "--config", str(config),
                                                   "--port", str(port)], cwd=work, env=env))
            for port in ports.values():
                wait(f"http://127.0.0.1:{port}/health")
            with httpx.Client(timeout=30) as client:
                def overhead(name: str, i: int) -> float:
                    response = client.post(f"http://127.0.0.1:{ports[name]}/v1/chat/completions", json={
                        "model": "auto", "messages": [{"role": "user", "content": prompt_of(i)}]})
                    response.raise_for_status()
                    return float(response.headers["x-pointsman-overhead-ms"])

                for name in SETUPS:
                    for i in range(30):
                        overhead(name, 100_000 + i)
                per_round = n // rounds
                for r in range(rounds):
                    for name in SETUPS:  # interleaved: the machine is shared; every setup sees the same prompts
                        results[name].extend(overhead(name, r * per_round + i) for i in range(per_round))
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(10)
    out: dict[str, Any] = {}
    base = statistics.median(results["off"])
    for name, samples in results.items():
        q = statistics.quantiles(samples, n=100)
        out[name] = {"p50": statistics.median(samples), "p90": q[89], "p99": q[98], "added_p50": statistics.median(samples) - base}
    return out


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def write(report: dict[str, Any], args: argparse.Namespace) -> str:
    q = report["quality"]
    lines = ["# Guards: injection detector quality and the latency of each guard", "",
             f"Run: `.venv/bin/python bench/guards/run.py --n {args.n} --rounds {args.rounds}` on "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {platform.machine()}, {os.cpu_count()} cores, "
             f"Python {platform.python_version()}, numpy {np.__version__}; load average at the end "
             f"{os.getloadavg()[0]:.2f}.", "",
             "The shipped detector (`src/pointsman/guards/models/injection.npz`, `bench/guards/train.py`): a logistic head on",
             "the prompt's static embedding (the one tier-2 routing computes) and its hashed n-grams (words, word pairs,",
             "character 4-grams), trained on the S-Labs train split, yanismiraoui's multilingual strings as extra",
             "positives and benign prompts of other sources as extra negatives (2,000 MMLU questions, AlpacaEval's even-",
             "numbered instructions: S-Labs' benign rows alone are short questions, and a head trained on them flagged",
             "22.5% of AlpacaEval's and 35% of arena-bench's prompts at val FPR 0.01 in this bench's first run); the",
             "rule layer (`guards/rules.py`) scores 1.0 on a match. Thresholds: read from the S-Labs",
             "**validation** split's benign scores at the config's false-positive rate (`guards.injection.fpr`, default",
             f"0.01 -> score {q['thresholds']['0.01']:.3f}; 0.035 -> {q['thresholds']['0.035']:.3f}). Test split: read here only.", "",
             "## Held-out: S-Labs test split (1,050 attacks, 1,051 benign)", "",
             f"AUC {q['auc']:.4f}.", "",
             "| detector | operating point | precision | recall | FPR |", "|---|---|---|---|---|"]
    for f in FPRS:
        m = q["test"][str(f)]
        lines.append(f"| rules + head | val FPR {f:g} | {pct(m['precision'])} | {pct(m['recall'])} | {pct(m['fpr'])} |")
    r = q["test_rules"]
    lines += [f"| rules alone (baseline) | - | {pct(r['precision'])} | {pct(r['recall'])} | {pct(r['fpr'])} |", "",
              "## Out of distribution", "",
              "Attacks from another source: a head trained without them (S-Labs train + the benign extras), thresholds from its",
              f"validation split, tested on yanismiraoui's {len(multilingual())} multilingual injection strings (de, fr, es, pt, ...):", "",
              "| detector | operating point | recall on multilingual | FPR on S-Labs test |", "|---|---|---|---|"]
    for f in FPRS:
        m = q["ood_multilingual"][str(f)]
        lines.append(f"| rules + head (no multilingual) | val FPR {f:g} | {pct(m['recall'])} | {pct(m['s_labs_test_fpr'])} |")
    lines += [f"| rules alone | - | {pct(q['ood_multilingual_rules'])} | {pct(q['test_rules']['fpr'])} |", "",
              "Benign prompts from other sources (real user traffic, no attacks), shipped head: share flagged.", "",
              "| source | prompts | flagged at val FPR 0.01 | at 0.035 | rules alone |", "|---|---|---|---|---|"]
    for name, m in q["ood_benign"].items():
        lines.append(f"| {name} | {m['n']} | {pct(m['0.01'])} | {pct(m['0.035'])} | {pct(m['rules'])} |")
    o, e = q["overdefence"], q["evasion"]
    lines += ["", "## Over-defence and evasion", "",
              f"Over-defence: {o['n']} benign prompts written for this bench with trigger words (`triggers.py`: \"ignore the",
              "previous paragraph\", \"act as\", \"system\", \"override\", \"password\", \"jailbreak an iPhone\"...), never trained on.", "",
              "| detector | passed at val FPR 0.01 | at 0.035 | target |", "|---|---|---|---|",
              f"| rules + head | {pct(o['0.01'])} | {pct(o['0.035'])} | >= 95% |",
              f"| rules alone | {pct(o['rules'])} | {pct(o['rules'])} | |", "",
              f"Evasion: the {e['n']} test attacks detected at val FPR 0.01, each with 1-5 harmless words or a polite",
              f"sentence appended: **{pct(e['flipped'])} flip to benign** (target <= 5%).", ""]
    if "latency" in report:
        lat = report["latency"]
        lines += ["## Added latency through the gateway", "",
                  "`x-pointsman-overhead-ms` (the gateway's own time, upstream excluded) of sequential requests with a",
                  "1,000-character prompt (each one new: no encoder cache hit), a two-model pool routed by the semantic",
                  "tier (the static embedding is computed in every setup and shared by the injection guard), guards in",
                  f"`flag` mode, {args.n} requests per setup in {args.rounds} interleaved rounds.", "",
                  "| setup | p50 ms | p90 ms | p99 ms | added p50 ms | target |", "|---|---|---|---|---|---|"]
        targets = {"off": "", "injection": "<= 1 ms", "pii": "<= 2 ms", "both": ""}
        for name, m in lat.items():
            lines.append(f"| {name} | {m['p50']:.2f} | {m['p90']:.2f} | {m['p99']:.2f} | {m['added_p50']:+.2f} | {targets[name]} |")
        lines.append("")
    lines += ["## Targets (issue 20)", ""]
    rec = q["test"]["0.01"]
    lines.append(f"- S-Labs test recall >= 95% at FPR <= 1%: recall {pct(rec['recall'])} at FPR {pct(rec['fpr'])}: "
                 + ("met." if rec["recall"] >= 0.95 and rec["fpr"] <= 0.01 else "**not met**."))
    lines.append(f"- Over-defence >= 95% passed: {pct(o['0.01'])}: " + ("met." if o["0.01"] >= 0.95 else "**not met**."))
    lines.append(f"- Evasion <= 5% flipped: {pct(e['flipped'])}: " + ("met." if e["flipped"] <= 0.05 else "**not met**."))
    if "latency" in report:
        lat = report["latency"]
        lines.append(f"- Injection stage <= 1 ms added p50: {lat['injection']['added_p50']:+.2f} ms: "
                     + ("met." if lat["injection"]["added_p50"] <= 1 else "**not met**."))
        lines.append(f"- PII stage <= 2 ms added p50 on 1,000 characters: {lat['pii']['added_p50']:+.2f} ms: "
                     + ("met." if lat["pii"]["added_p50"] <= 2 else "**not met**."))
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--skip-latency", action="store_true")
    args = parser.parse_args()
    report: dict[str, Any] = {"quality": quality()}
    if not args.skip_latency:
        report["latency"] = latency(args.n, args.rounds)
    here = Path(__file__).parent
    (here / "results.json").write_text(json.dumps(report, indent=1, sort_keys=True))
    text = write(report, args)
    (here / "RESULTS.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
