"""Could a cross-encoder reach the issue's 25% hits at <= 2% wrong reuse on QQP? A feasibility measurement.

The cache's acceptance decision sees two embeddings made apart (a bi-encoder) plus text features. A
cross-encoder reads the cached question and the new one together, so every token of one attends to every
token of the other: the usual way to tell "turn on" from "turn off" or "Python 2" from "Python 3". This
trains one from the installed MiniLM's own weights (all six layers, the token-type embeddings for the two
segments, a linear head on the mean-pooled output; binary cross-entropy, both orders of each pair) on QQP's
training split, picks the epoch on 10% of the training groups, then reports on the held-out splits of
eval.py's group split: a threshold calibrated on the calibration split by eval.py's rule (the lowest whose
one-sided 95% Clopper-Pearson upper bound on wrong reuse is <= delta), then hit and wrong-reuse rates on the
test split, pair by pair (cache text_a, ask text_b: served when the pair is accepted), with the rule checks
enforced. The cache's own bi-encoder (minilm-dup cosine) is scored the same way beside it.

torch is a bench tool here, as for finetune.py:

    python3 -m venv /tmp/ftvenv && /tmp/ftvenv/bin/pip install torch==2.13.0 onnx && /tmp/ftvenv/bin/pip install -e .
    /tmp/ftvenv/bin/python bench/cache/cross_encoder.py --epochs 2      # ~20-30 min on 2 cores; CROSS_ENCODER.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _embed import embed_texts, load_pairs  # noqa: E402
from eval import calibrated_threshold, group_split, rates  # noqa: E402
from finetune import DIM, MiniLM, auc, onnx_weights, oracle_hits  # noqa: E402

from pointsman.cache.checks import compare, facts  # noqa: E402
from pointsman.embed.encoder import MiniLMEncoder  # noqa: E402
from pointsman.embed.registry import DUP_PATCH  # noqa: E402


class CrossMiniLM(MiniLM):
    """MiniLM over "[CLS] a [SEP] b [SEP]" (segment ids 0 / 1), mean-pooled, then a linear head: a logit."""

    def __init__(self, init: dict[str, np.ndarray], layers: list[list[str]]) -> None:
        super().__init__(init, layers)
        self.types = nn.Parameter(torch.tensor(init["inner.embeddings.token_type_embeddings.weight"].copy()))
        self.head = nn.Linear(DIM, 1)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        bias = (1.0 - mask[:, None, None, :].float()) * -1e4
        x = self.ln(self.word[ids] + self.pos[: ids.shape[1]] + self.types[types])
        for layer in self.layers:
            x = layer(x, bias)
        m = mask[:, :, None].float()
        pooled = (x * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return self.head(pooled).squeeze(-1)


def pair_batch(tok: list[list[int]], pairs: list[tuple[int, int]]) -> tuple[torch.Tensor, ...]:
    """Token ids, mask and segment ids of "[CLS] a [SEP] b [SEP]" for (a, b) text indices."""
    seqs = [(tok[i], tok[j][1:]) for i, j in pairs]
    L = max(len(x) + len(y) for x, y in seqs)
    ids = np.zeros((len(seqs), L), dtype=np.int64)
    mask = np.zeros_like(ids)
    types = np.zeros_like(ids)
    for k, (x, y) in enumerate(seqs):
        n = len(x) + len(y)
        ids[k, :n] = x + y
        mask[k, :n] = 1
        types[k, len(x):n] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(types)


def score(model: CrossMiniLM, tok: list[list[int]], pairs: list[tuple[int, int]], batch: int = 128) -> np.ndarray:
    """P(duplicate), averaged over both orders of each pair."""
    model.eval()
    both = pairs + [(j, i) for i, j in pairs]
    logits = np.zeros(len(both), dtype=np.float64)
    order = np.argsort([len(tok[i]) + len(tok[j]) for i, j in both])
    with torch.no_grad():
        for s in range(0, len(both), batch):
            sel = order[s:s + batch]
            logits[sel] = model(*pair_batch(tok, [both[k] for k in sel])).numpy()
    return 1.0 / (1.0 + np.exp(-(logits[: len(pairs)] + logits[len(pairs):]) / 2))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32, help="pairs per step (each pair once, in a random order)")
    ap.add_argument("--lr", type=float, default=4e-5)
    ap.add_argument("--max-tokens", type=int, default=48, help="per question (QQP: ~1% longer)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0, help="train on this many pairs only (a smoke run)")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)

    enc = MiniLMEncoder(dynamic_int8=False)
    init, layers = onnx_weights(enc.model_path())
    model = CrossMiniLM(init, layers)
    a, b, y = load_pairs()
    split = group_split(a, b)
    texts = sorted(set(a) | set(b))
    index = {t: k for k, t in enumerate(texts)}
    tok, _ = enc.tokenize(texts, args.max_tokens)
    pair = [(index[a[i]], index[b[i]]) for i in range(len(y))]

    tr = np.nonzero(split == 0)[0]
    rng = np.random.default_rng(1)  # 10% of the training groups (by text_a) choose the epoch, as in finetune.py
    groups = {t: rng.random() for t in sorted(set(a[i] for i in tr))}
    val = np.array([i for i in tr if groups[a[i]] < 0.1])
    fit = np.array([i for i in tr if groups[a[i]] >= 0.1])
    if args.limit:
        fit = fit[: args.limit]
    print(f"train pairs {len(fit)}, validation pairs {len(val)}", flush=True)

    def evaluate() -> dict:
        p = score(model, tok, [pair[i] for i in val])
        yy = y[val].astype(int)
        return {"auc": auc(p, yy), "oracle@2%": oracle_hits(p, yy, 0.02), "oracle@1%": oracle_hits(p, yy, 0.01)}

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    steps = len(fit) // args.batch
    total = max(1, steps * args.epochs)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / (0.1 * total)) * max(0.0, (total - s) / total))
    lossf = nn.BCEWithLogitsLoss()
    best, best_state = {"auc": -1.0}, None
    for epoch in range(args.epochs):
        model.train()
        order = np.random.default_rng(100 + epoch).permutation(fit)
        flip = np.random.default_rng(200 + epoch).random(len(order)) < 0.5
        t0, running = time.time(), 0.0
        for s in range(steps):
            sel = range(s * args.batch, (s + 1) * args.batch)
            batch = [pair[order[k]][::-1] if flip[k] else pair[order[k]] for k in sel]
            target = torch.tensor(y[order[list(sel)]].astype(np.float32))
            loss = lossf(model(*pair_batch(tok, batch)), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            running += loss.item()
            if (s + 1) % 100 == 0:
                print(f"epoch {epoch} step {s + 1}/{steps} loss {running / 100:.3f} ({(time.time() - t0) / (s + 1):.2f} s/step)",
                      flush=True)
                running = 0.0
        got = evaluate()
        print(f"epoch {epoch}: validation {got} ({time.time() - t0:.0f} s)", flush=True)
        if got["auc"] > best["auc"]:
            best, best_state = got, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    print("kept:", best, flush=True)

    # held-out report: calibrate on split 1, serve split 2, pair by pair, rule checks enforced
    cal, test = np.nonzero(split == 1)[0], np.nonzero(split == 2)[0]
    passes = np.array([compare(facts(b[i]), facts(a[i])).passed for i in range(len(y))])
    dup = MiniLMEncoder(intra_op_threads=args.threads, patch=DUP_PATCH)
    Ea, Eb = embed_texts(a, dup, progress=False), embed_texts(b, dup, progress=False)
    cosine = (Ea * Eb).sum(1).astype(np.float64)
    cross = np.zeros(len(y))
    for part in (cal, test):
        cross[part] = score(model, tok, [pair[i] for i in part])
    yi = y.astype(int)
    print("\n| scorer (rule checks enforced) | delta | test hit rate | test wrong reuse | precision | test AUC | "
          "test oracle <= delta |\n|---|---|---|---|---|---|---|")
    for name, s in (("minilm-dup cosine (the cache's bi-encoder)", cosine), ("cross-encoder", cross)):
        for delta in (0.01, 0.02):
            threshold, _ = calibrated_threshold(s[cal], yi[cal], passes[cal], delta)
            r = rates(passes[test] & (s[test] >= threshold), yi[test])
            eligible = np.where(passes[test], s[test], -np.inf)
            print(f"| {name} | {delta:.0%} | {r['hit_rate']:.1%} | {r['wrong_rate']:.2%} | {r['precision']:.1%} | "
                  f"{auc(s[test], yi[test]):.3f} | {oracle_hits(eligible, yi[test], delta):.1%} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
