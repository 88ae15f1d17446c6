"""Refit the injection second stage's head on its frozen encoder, with benign prompts that carry numbers added.

The second stage (guards/second_stage.py) is the fine-tuned MiniLM (embed/models/minilm-injection.npz) and a
logistic head on its pooled embedding, trained together by finetune.py. Neither injection corpus holds everyday
text with phone numbers, order numbers or dates, and the head read such prompts as attacks (number_prompts.py). This keeps
the encoder (no torch needed) and refits only the head, on finetune.py's training data (S-Labs train,
yanismiraoui's multilingual positives, the benign extras of data.py) plus the train half of number_prompts.py, embedded
by the served int8 graph. The L2 strength and the number prompts' weight are chosen on validation data: the S-Labs
validation split and a fifth of the train half's templates held out of the fit; then calibrate.py's thresholds and
gate are read on the S-Labs validation split as before.

It writes REFIT.md beside this file: the shipped head against the refit one on everything run.py measures that
does not need a gateway (S-Labs test split, real prompts held out, the over-defence set, evasion by padding) and
on number_prompts.py's test half, which no head was fitted on. ``--save`` also replaces the shipped artefact.

    .venv/bin/python bench/guards/refit_head.py [--save]      # needs scikit-learn (a bench tool)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from bench.guards.calibrate import calibrate, second_embeddings  # noqa: E402
from bench.guards.data import benign_extra, multilingual, s_labs  # noqa: E402
from bench.guards.number_prompts import prompts as number_prompts  # noqa: E402
from bench.guards.run import FPRS, evaluate, flags, guard_of, guard_scores, pct  # noqa: E402
from pointsman.guards.second_stage import DEFAULT_SECOND_STAGE, SecondStage  # noqa: E402

TRAINED_ON = ("the shipped encoder (finetune.py, frozen); the head refit on: s-labs train split + yanismiraoui "
              "multilingual (positives) + 2,000 MMLU questions, AlpacaEval's even-numbered instructions and four fifths "
              "of bench/guards/number_prompts.py's train-half templates (negatives); chosen on the s-labs validation "
              "split and the other fifth")


def fit() -> tuple[np.ndarray, float, dict]:
    """The head, chosen on validation data only: the S-Labs validation split (recall at 1% FPR of the two stages'
    mean log-odds, the guard's decision) and every fifth template of number_prompts.py's train half (the share of
    them flagged at that threshold), fitted on the rest."""
    from sklearn.linear_model import LogisticRegression

    from bench.guards.train import embed
    from pointsman.guards.detector import InjectionHead

    texts, labels = s_labs("train")
    ml, extra = multilingual(), benign_extra()
    fit_numbers, val_numbers = number_prompts("train", validation=False), number_prompts("train", validation=True)
    all_texts = [*texts, *ml, *extra, *fit_numbers]
    y = np.concatenate([labels, np.ones(len(ml)), np.zeros(len(extra) + len(fit_numbers))]).astype(int)
    is_number = np.r_[np.zeros(len(texts) + len(ml) + len(extra), bool), np.ones(len(fit_numbers), bool)]
    started = time.time()
    X, _ = second_embeddings(all_texts)
    val_texts, val_labels = s_labs("validation")
    V, _ = second_embeddings([*val_texts, *val_numbers])
    first = InjectionHead.load()
    z = np.array([first.logit(t, e) for t, e in zip([*val_texts, *val_numbers], embed([*val_texts, *val_numbers]))])
    print(f"embedded {len(all_texts) + len(V)} texts in {time.time() - started:.0f}s", flush=True)
    n = len(val_texts)

    def judge(w: np.ndarray, b: float) -> tuple[float, float]:
        decision = (V @ w + b + z) / 2  # the mean of both stages' log-odds, as SecondStage.score
        benign = np.sort(decision[:n][val_labels == 0])
        bar = benign[min(len(benign) - 1, int(np.ceil(0.99 * len(benign))) - 1)]
        return float(np.mean(decision[:n][val_labels == 1] > bar)), float(np.mean(decision[n:] > bar))

    shipped = SecondStage.load()
    grid = {"shipped head": judge(shipped.w_, shipped.b_)}
    fitted = {}
    for c in (1.0, 10.0):
        for weight in (1.0, 5.0, 20.0, 50.0):
            model = LogisticRegression(C=c, max_iter=3000).fit(X, y, sample_weight=np.where(is_number, weight, 1.0))
            w, b = model.coef_[0].astype(np.float32), float(model.intercept_[0])
            key = f"C={c:g}, numbers x{weight:g}"
            grid[key], fitted[key] = judge(w, b), (w, b)
            print(f"{key}: validation recall at 1% FPR {grid[key][0]:.4f}, number prompts flagged {grid[key][1]:.3f}",
                  flush=True)
    # the fewest number prompts flagged among the heads that keep the shipped head's recall within half a point
    floor = grid["shipped head"][0] - 0.005
    key = min((k for k in fitted if grid[k][0] >= floor), key=lambda k: (grid[k][1], -grid[k][0]), default=None)
    if key is None:
        raise SystemExit(f"no refit head keeps validation recall within 0.5 points: {grid}")
    return *fitted[key], {"chosen": key, "grid": grid, "validation_numbers": len(val_numbers)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--save", action="store_true", help="replace the shipped second stage with the refit one")
    args = parser.parse_args()
    w, b, chosen = fit()
    stage = calibrate(w, b, TRAINED_ON)
    out = DEFAULT_SECOND_STAGE if args.save else Path(tempfile.mkdtemp()) / "refit.npz"
    before = SecondStage.load()  # read before a --save replaces it
    shipped_copy = Path(tempfile.mkdtemp()) / "shipped.npz"
    before.save(shipped_copy)
    stage.save(out)
    test_texts, test_labels = s_labs("test")
    numbers = number_prompts("test")
    rows = {}
    for name, path in (("shipped head", shipped_copy), ("refit head", out)):
        guard = guard_of(str(path))
        report = evaluate(guard, name, test_texts, test_labels)
        found = guard_scores(guard, numbers)
        report["numbers"] = {f: float(np.mean(flags(found, guard.thresholds(float(f))[0]))) for f in report["thresholds"]}
        rows[name] = report
        print(name, {f: (round(v["recall"], 4), round(v["fpr"], 4)) for f, v in report["test"].items()},
              "numbers flagged", report["numbers"], flush=True)
    lines = ["# The second stage's head refit with benign prompts that carry numbers", "",
             f"Written by `.venv/bin/python bench/guards/refit_head.py{' --save' if args.save else ''}` on "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Chosen on validation data only (the S-Labs "
             f"validation split; {chosen['validation_numbers']} number prompts of every fifth train-half template, not "
             f"fitted on): {chosen['chosen']}, the fewest number prompts flagged among the heads within half a point "
             "of the shipped head's validation recall at 1% FPR. Thresholds read on the S-Labs validation split, as "
             "the guard reads them; every row below the choice is held out.", "",
             "| head | validation recall at 1% FPR | validation number prompts flagged |", "|---|---|---|",
             *(f"| {k} | {pct(r)} | {pct(f)} |" for k, (r, f) in chosen["grid"].items()), ""]
    for f in (str(x) for x in FPRS):
        lines += [f"## Operating point: `fpr: {f}`", "",
                  "| head | S-Labs test recall | S-Labs test FPR | number_prompts.py test half flagged | over-defence passed | "
                  + " | ".join(f"{k} flagged" for k in rows["shipped head"]["ood_benign"]) + " | evasion flipped |",
                  "|---" * (6 + len(rows["shipped head"]["ood_benign"])) + "|"]
        for name, r in rows.items():
            ood = " | ".join(pct(v[f]) for v in r["ood_benign"].values())
            evasion = pct(r["evasion"]["flipped"]) if f == "0.01" else "-"
            lines.append(f"| {name} | {pct(r['test'][f]['recall'])} | {pct(r['test'][f]['fpr'])} | "
                         f"{pct(r['numbers'][f])} ({len(numbers)}) | {pct(r['overdefence'][f])} | {ood} | {evasion} |")
        lines.append("")
    Path(__file__).with_name("REFIT.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
