"""Fine-tune MiniLM as the injection detector's second stage (src/pointsman/embed/models/minilm-injection.npz).

The first stage (a logistic head on the static embedding and hashed n-grams, train.py) is cheap but linear; the
attacks it misses are paraphrases of intent ("tell me what makes up your setup") that no bag of words or mean of
static vectors separates from hard negatives. This trains the shipped MiniLM's top ``--layers`` transformer
layers and a logistic head on its pooled, normalised embedding, with binary cross-entropy, starting from the
installed ONNX file's weights (the cache's fine-tuning code: bench/cache/finetune.py), optionally keeping only the
first ``--depth`` layers (a faster encoder). The result is two files: ``--out``, the replacement initialisers in
the ONNX file's own int8 format (``MiniLMEncoder(patch=...)``), and ``--weights-out``, the head's weights, from
which calibrate.py makes the guard's artefact.

Data: the S-Labs train split, yanismiraoui's multilingual strings (positives) and the benign extras of data.py,
the same as the first stage; 10% of it (seeded) held out for choosing the epoch. The S-Labs validation split is
the calibration split (thresholds, read by the guard), the test split is only read by run.py.

torch is a bench tool here, not a dependency of the gateway: run it from a venv that has it, e.g.

    python3 -m venv /tmp/ftvenv && /tmp/ftvenv/bin/pip install torch -e '.[test]' onnx
    /tmp/ftvenv/bin/python bench/guards/finetune.py --layers 6 --epochs 3 \
        --out src/pointsman/embed/models/minilm-injection.npz --weights-out /tmp/injection-head-weights.npz
    .venv/bin/python bench/guards/calibrate.py --weights /tmp/injection-head-weights.npz
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench" / "cache"))
from bench.guards.data import benign_extra, multilingual, s_labs  # noqa: E402
from bench.guards.number_prompts import prompts as number_prompts  # noqa: E402
from finetune import auc, batch_ids, embed, export, load_model  # noqa: E402


def recall_at(score: np.ndarray, y: np.ndarray, fpr: float = 0.01) -> float:
    neg = np.sort(score[y == 0])
    bar = neg[min(len(neg) - 1, int(np.ceil((1 - fpr) * len(neg))) - 1)]
    return float(np.mean(score[y == 1] > bar))


TRAINED_ON = ("90% of: s-labs train split + yanismiraoui multilingual (positives) + 2,000 MMLU questions and "
              "AlpacaEval's even-numbered instructions (negatives); the other 10% chose the epoch")


def trained_on(args: argparse.Namespace) -> str:
    text = TRAINED_ON.replace(" + yanismiraoui multilingual (positives)", "") if args.no_multilingual else TRAINED_ON
    if args.numbers_repeat:
        text = text.replace("(negatives)", f"and four fifths of number_prompts.py's train-half templates, x"
                                           f"{args.numbers_repeat} (negatives)")
    return text


def length_batches(index: np.ndarray, lengths: list[int], size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled batches of texts of similar length (a batch is padded to its longest text: random batches of
    short attacks and long benign prompts would all cost the longest), in shuffled order."""
    order = rng.permutation(index)
    pool = size * 50
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start:start + pool], key=lambda i: lengths[i])
        batches += [np.array(chunk[k:k + size]) for k in range(0, len(chunk) - size + 1, size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=6, help="top transformer layers to train")
    ap.add_argument("--depth", type=int, default=0, help="keep only the first N transformer layers (0: all six)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-5, help="the transformer layers' (the head's is 20x)")
    ap.add_argument("--max-tokens", type=int, default=128, help="truncate texts for training")
    ap.add_argument("--no-multilingual", action="store_true",
                    help="leave yanismiraoui's strings out (run.py's out-of-distribution row tests on them)")
    ap.add_argument("--numbers-repeat", type=int, default=0,
                    help="add number_prompts.py's train half (four fifths of its templates; the other fifth is for "
                         "choosing) as negatives, each this many times (0: not at all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True, help="the encoder patch (shipped: src/pointsman/embed/models/"
                                                 "minilm-injection.npz)")
    ap.add_argument("--weights-out", required=True, help="the head's weights, read by calibrate.py")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)

    enc, model, init, layers = load_model(args.depth)
    frozen = len(layers) - args.layers
    head = nn.Linear(model.layers[0].query.in_features, 1)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    enc.load()

    texts, labels = s_labs("train")
    extra_pos, extra_neg = ([] if args.no_multilingual else multilingual()), benign_extra()
    extra_neg += number_prompts("train", validation=False) * args.numbers_repeat
    texts = texts + extra_pos + extra_neg
    y = np.concatenate([labels, np.ones(len(extra_pos)), np.zeros(len(extra_neg))]).astype(np.float32)
    tok, _ = enc.tokenize(texts, args.max_tokens)
    rng = np.random.default_rng(1)
    held = rng.random(len(texts)) < 0.1
    fit, val = np.nonzero(~held)[0], np.nonzero(held)[0]
    print(f"train {len(fit)} texts ({int(y[fit].sum())} attacks), held out {len(val)}; training layers "
          f"{frozen}..{len(layers) - 1} of {len(layers)}", flush=True)

    def scores(idx: np.ndarray) -> np.ndarray:
        emb = embed(model, [tok[i] for i in idx])
        with torch.no_grad():
            return head(torch.from_numpy(emb)).squeeze(1).numpy()

    def evaluate() -> dict:
        s = scores(val)
        return {"auc": round(auc(s, y[val]), 5), "recall@1%": round(recall_at(s, y[val]), 4)}

    params = [p for layer in model.layers[frozen:] for p in layer.parameters()]
    opt = torch.optim.AdamW([{"params": params, "lr": args.lr}, {"params": head.parameters(), "lr": args.lr * 20}],
                            weight_decay=0.01)
    steps_per_epoch = len(fit) // args.batch
    total = max(1, steps_per_epoch * args.epochs)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / (0.1 * total)) * max(0.0, (total - s) / total))
    best: dict | None = None
    best_state = None
    for epoch in range(args.epochs):
        model.train()
        batches = length_batches(fit, [len(t) for t in tok], args.batch, np.random.default_rng(100 + epoch))
        t0, running = time.time(), 0.0
        for s, sel in enumerate(batches):
            logits = head(model(*batch_ids([tok[i] for i in sel]), frozen=frozen)).squeeze(1)
            loss = nn.functional.binary_cross_entropy_with_logits(logits, torch.from_numpy(y[sel]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            running += loss.item()
            if (s + 1) % 100 == 0:
                print(f"epoch {epoch} step {s + 1}/{steps_per_epoch} loss {running / 100:.4f} "
                      f"({(time.time() - t0) / (s + 1):.2f} s/step)", flush=True)
                running = 0.0
        got = evaluate()
        print(f"epoch {epoch}: {got} ({time.time() - t0:.0f} s)", flush=True)
        if best is None or got["auc"] > best["auc"]:
            best = got
            best_state = ({k: v.clone() for k, v in model.state_dict().items()},
                          {k: v.clone() for k, v in head.state_dict().items()})
    assert best_state is not None
    model.load_state_dict(best_state[0])
    head.load_state_dict(best_state[1])
    print("kept:", best, flush=True)
    patch = export(model, init, layers, frozen)
    if args.depth:
        patch["__depth__"] = np.array(args.depth)
    np.savez_compressed(args.out, **patch)
    np.savez(args.weights_out, w=head.weight.detach().numpy()[0].astype(np.float32),
             b=head.bias.detach().numpy().astype(np.float32),
             trained_on=np.array(trained_on(args)))
    print(f"wrote {args.out}: {len(patch)} initialisers, {Path(args.out).stat().st_size / 1e6:.1f} MB; the head's "
          f"weights: {args.weights_out} (calibrate.py makes the guard's artefact of them)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
