#!/usr/bin/env python3
"""Does `pointsman drift` say "retrain" when traffic is new, and stay quiet when it is not?

For each routing source of ../shared/data (RouteLLM MMLU, GSM8K, arena-bench, AlpacaEval): the training
summary a router carries (learning/drift.py: reference_of) is made from four fifths of every OTHER source;
then two traffic samples are checked with the default thresholds:
  in distribution: prompts of the other sources' held-out fifth (a router should not ask to be retrained)
  new source:      prompts of the left-out source (it should)
and, to see where the alarm starts, mixtures of the two (new share 10%..90%). Several random draws; medians.

Run: .venv/bin/python bench/learning/drift.py [--data ../shared/data] [--sample 500] [--draws 5]   (~1 min)
Writes DRIFT.md beside this file.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(HERE.parents[1].parent / "shared" / "data"))
    parser.add_argument("--sample", type=int, default=500, help="prompts per traffic sample")
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--out", default=str(HERE / "DRIFT.md"))
    args = parser.parse_args()
    from pointsman.config.schema import LearningConfig
    from pointsman.evaluation.cross_source import load_sources
    from pointsman.learning.drift import drift_report, reference_of

    limits = LearningConfig()
    started = time.time()
    sources = load_sources([args.data], progress=False)
    names = [s.table.name for s in sources]
    rows, mix_rows = [], []
    mixes = (0.1, 0.3, 0.5, 0.7, 0.9)
    for i, new in enumerate(sources):
        rng = np.random.default_rng(i)
        others = [s for j, s in enumerate(sources) if j != i]
        train_X, train_F, held_X, held_F = [], [], [], []
        for s in others:
            order = rng.permutation(len(s.embeddings))
            cut = int(0.8 * len(order))
            train_X.append(s.embeddings[order[:cut]])
            train_F.append(s.features[order[:cut]])
            held_X.append(s.embeddings[order[cut:]])
            held_F.append(s.features[order[cut:]])
        reference = reference_of(np.concatenate(train_X), np.concatenate(train_F))
        HX, HF = np.concatenate(held_X), np.concatenate(held_F)
        results: dict[str, list] = {"in distribution": [], "new source": []}
        by_mix: dict[float, list] = {m: [] for m in mixes}
        for draw in range(args.draws):
            r = np.random.default_rng(1000 * i + draw)
            h = r.choice(len(HX), min(args.sample, len(HX)), replace=False)
            n = r.choice(len(new.embeddings), min(args.sample, len(new.embeddings)), replace=False)

            def check(X: np.ndarray, F: np.ndarray):
                return drift_report(reference, X, F, unseen_share_limit=limits.drift_unseen_share,
                                    task_shift_limit=limits.drift_task_shift)

            results["in distribution"].append(check(HX[h], HF[h]))
            results["new source"].append(check(new.embeddings[n], new.features[n]))
            for m in mixes:
                k = int(round(m * args.sample))
                X = np.concatenate([new.embeddings[n[:k]], HX[h[:args.sample - k]]])
                F = np.concatenate([new.features[n[:k]], HF[h[:args.sample - k]]])
                by_mix[m].append(check(X, F).retrain)
        for kind, reports in results.items():
            rows.append((names[i], kind, float(np.median([x.unseen_share for x in reports])),
                         float(np.median([x.task_shift for x in reports])), float(np.mean([x.retrain for x in reports]))))
        mix_rows.append((names[i], [float(np.mean(by_mix[m])) for m in mixes]))
        print(f"{names[i]} done", file=sys.stderr)

    lines = ["# Drift detection on the shared data", "",
             f"Written by `bench/learning/drift.py --sample {args.sample} --draws {args.draws}` on "
             f"{time.strftime('%Y-%m-%d')} ({time.time() - started:.0f} s). Per left-out source: the training summary "
             "is made from four fifths of every other source (static embeddings, as the shipped router reads); "
             "traffic samples of "
             f"{args.sample} prompts; default thresholds (unseen share > {limits.drift_unseen_share}, task shift > "
             f"{limits.drift_task_shift}). Medians over {args.draws} draws; 'retrain' is the share of draws that said so.",
             "", "| left-out source | traffic | unseen share | task shift | retrain |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {kind} | {u:.3f} | {t:.3f} | {r:.0%} |" for name, kind, u, t, r in rows]
    lines += ["", "Share of draws saying 'retrain' when the traffic mixes the new source (share below) with "
              "in-distribution prompts:", "",
              "| left-out source | " + " | ".join(f"{m:.0%} new" for m in mixes) + " |",
              "|---|" + "---|" * len(mixes)]
    lines += [f"| {name} | " + " | ".join(f"{v:.0%}" for v in values) + " |" for name, values in mix_rows]
    false_alarms = [r for _, kind, _, _, r in rows if kind == "in distribution"]
    detections = [r for _, kind, _, _, r in rows if kind == "new source"]
    lines += ["", f"False alarms on in-distribution traffic: {np.mean(false_alarms):.0%} of draws; a wholly new source "
              f"detected in {np.mean(detections):.0%} of draws.", ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
