"""Fine-tune the top layers of the cache's MiniLM on QQP's training split, for duplicate detection.

The shipped MiniLM was trained for general sentence similarity; the cache needs one thing from it: that
paraphrases score above near-misses. This script starts from the installed ONNX file's own weights
(int8 values x per-column scales, dequantised into a small torch BERT that reproduces the ONNX outputs),
trains the top ``--layers`` transformer layers (the embeddings and lower layers stay frozen, so only
those layers need shipping), and writes their weights back in the ONNX file's own int8 format as an
``.npz`` of replacement initialisers: ``MiniLMEncoder(patch=...)`` applies it at load time.

Loss: in-batch softmax over the batch's duplicate pairs (multiple negatives ranking, scale 20) plus an
online contrastive loss on every labelled pair of the batch (margin 0.5 on 1 - cosine), as in
sentence-transformers' Quora recipe. Data: the same group split as eval.py (seed 0); only the training
split (40%) is used, 10% of its groups held out for choosing the epoch. The calibration and test splits
are never seen here: eval.py --encoder-patch reports on them.

torch is a bench tool here, not a dependency of the gateway: run it from a venv that has it, e.g.

    python3 -m venv /tmp/ftvenv && /tmp/ftvenv/bin/pip install torch==2.13.0 -e '.[test]' onnx
    /tmp/ftvenv/bin/python bench/cache/finetune.py --layers 3 --epochs 3 --out /tmp/minilm-qqp.npz
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _embed import load_pairs  # noqa: E402
from eval import group_split  # noqa: E402

from pointsman.embed.encoder import MiniLMEncoder  # noqa: E402

HEADS, DIM, EPS = 12, 384, 1e-12
PREFIX = "inner.encoder.layer."
ROLES = ("query", "key", "value", "attn_out", "intermediate", "output")  # the order of a layer's matrices


def onnx_weights(path: Path) -> tuple[dict[str, np.ndarray], list[list[str]]]:
    """Every initialiser as an array, and per layer the names of its six int8 matrices (q, k, v,
    attention output, intermediate, output: in the file they are named val_<n>, in graph order)."""
    model = onnx.load(str(path))
    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    mats = sorted((n[:-2] for n in init if n.startswith("val_") and n.endswith("_q")), key=lambda n: int(n[4:]))
    layers = [mats[i:i + 6] for i in range(0, len(mats), 6)]
    for names in layers:  # the shapes confirm the order
        shapes = [init[n + "_q"].shape for n in names]
        assert shapes == [(DIM, DIM)] * 4 + [(DIM, 4 * DIM), (4 * DIM, DIM)], shapes
    return init, layers


def deq(init: dict[str, np.ndarray], name: str) -> np.ndarray:
    return init[name + "_q"].astype(np.float32) * init[name + "_scale"].astype(np.float32)


class Layer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.query, self.key, self.value, self.attn_out = (nn.Linear(DIM, DIM) for _ in range(4))
        self.intermediate, self.output = nn.Linear(DIM, 4 * DIM), nn.Linear(4 * DIM, DIM)
        self.ln1, self.ln2 = nn.LayerNorm(DIM, eps=EPS), nn.LayerNorm(DIM, eps=EPS)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, L, _ = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, L, HEADS, DIM // HEADS).transpose(1, 2)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(DIM // HEADS) + bias, dim=-1)
        ctx = (att @ v).transpose(1, 2).reshape(b, L, DIM)
        x = self.ln1(x + self.attn_out(ctx))
        return self.ln2(x + self.output(nn.functional.gelu(self.intermediate(x))))


class MiniLM(nn.Module):
    """all-MiniLM-L6-v2 with mean pooling and L2 normalisation, loaded from the ONNX file's weights."""

    def __init__(self, init: dict[str, np.ndarray], layers: list[list[str]]) -> None:
        super().__init__()
        t = lambda a: torch.tensor(np.ascontiguousarray(a))  # noqa: E731
        self.word = nn.Parameter(t(deq(init, "inner.embeddings.word_embeddings.weight")), requires_grad=False)
        self.pos = nn.Parameter(t(deq(init, "inner.embeddings.position_embeddings.weight")), requires_grad=False)
        self.type0 = nn.Parameter(t(init["inner.embeddings.token_type_embeddings.weight"][0]), requires_grad=False)
        self.ln = nn.LayerNorm(DIM, eps=EPS)
        self.ln.weight.data, self.ln.bias.data = t(init["inner.embeddings.LayerNorm.weight"]), t(init["inner.embeddings.LayerNorm.bias"])
        self.layers = nn.ModuleList(Layer() for _ in layers)
        for i, (layer, names) in enumerate(zip(self.layers, layers)):
            p = f"{PREFIX}{i}."
            biases = (p + "attention.self.query.bias", p + "attention.self.key.bias", p + "attention.self.value.bias",
                      p + "attention.output.dense.bias", p + "intermediate.dense.bias", p + "output.dense.bias")
            for role, name, bias in zip(ROLES, names, biases):
                lin = getattr(layer, role)
                lin.weight.data = t(deq(init, name).T)
                lin.bias.data = t(init[bias])
            layer.ln1.weight.data, layer.ln1.bias.data = t(init[p + "attention.output.LayerNorm.weight"]), t(init[p + "attention.output.LayerNorm.bias"])
            layer.ln2.weight.data, layer.ln2.bias.data = t(init[p + "output.LayerNorm.weight"]), t(init[p + "output.LayerNorm.bias"])

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, frozen: int = 0) -> torch.Tensor:
        bias = (1.0 - mask[:, None, None, :].float()) * -1e4
        with torch.no_grad():
            x = self.ln(self.word[ids] + self.pos[: ids.shape[1]] + self.type0)
            for layer in self.layers[:frozen]:
                x = layer(x, bias)
        for layer in self.layers[frozen:]:
            x = layer(x, bias)
        m = mask[:, :, None].float()
        pooled = (x * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, dim=-1)


def batch_ids(ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    L = max(len(x) for x in ids)
    a = np.zeros((len(ids), L), dtype=np.int64)
    m = np.zeros((len(ids), L), dtype=np.int64)
    for k, x in enumerate(ids):
        a[k, : len(x)] = x
        m[k, : len(x)] = 1
    return torch.from_numpy(a), torch.from_numpy(m)


def embed(model: MiniLM, ids: list[list[int]], batch: int = 256) -> np.ndarray:
    order = np.argsort([len(x) for x in ids])
    out = np.zeros((len(ids), DIM), dtype=np.float32)
    model.eval()
    with torch.no_grad():
        for s in range(0, len(ids), batch):
            sel = order[s:s + batch]
            out[sel] = model(*batch_ids([ids[i] for i in sel])).numpy()
    return out


def oracle_hits(cos: np.ndarray, y: np.ndarray, delta: float = 0.02) -> float:
    """The share of pairs a cosine threshold could serve with wrong reuse <= delta (chosen on these pairs)."""
    o = np.argsort(-cos)
    wrong = np.cumsum(1 - y[o]) / len(y)
    ok = np.nonzero(wrong <= delta)[0]
    return float((ok.max() + 1) / len(y)) if ok.size else 0.0


def auc(score: np.ndarray, y: np.ndarray) -> float:
    r = np.argsort(np.argsort(score)) + 1
    pos = y == 1
    return float((r[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * (~pos).sum()))


def export(model: MiniLM, init: dict[str, np.ndarray], layers: list[list[str]], first: int) -> dict[str, np.ndarray]:
    """The trained layers as replacement initialisers, quantised as the file stores them: int8 with one
    symmetric scale per output column."""
    out: dict[str, np.ndarray] = {}
    for i in range(first, len(layers)):
        layer, names, p = model.layers[i], layers[i], f"{PREFIX}{i}."
        biases = (p + "attention.self.query.bias", p + "attention.self.key.bias", p + "attention.self.value.bias",
                  p + "attention.output.dense.bias", p + "intermediate.dense.bias", p + "output.dense.bias")
        for role, name, bias in zip(ROLES, names, biases):
            lin = getattr(layer, role)
            w = lin.weight.detach().numpy().T  # (in, out), as in the file
            scale = np.maximum(np.abs(w).max(axis=0, keepdims=True), 1e-12) / 127.0
            out[name + "_q"] = np.clip(np.rint(w / scale), -127, 127).astype(init[name + "_q"].dtype)
            out[name + "_scale"] = scale.astype(init[name + "_scale"].dtype)
            out[bias] = lin.bias.detach().numpy().astype(np.float32)
        for ln, key in ((layer.ln1, "attention.output.LayerNorm"), (layer.ln2, "output.LayerNorm")):
            out[p + key + ".weight"] = ln.weight.detach().numpy().astype(np.float32)
            out[p + key + ".bias"] = ln.bias.detach().numpy().astype(np.float32)
    return out


def load_model(depth: int = 0) -> tuple[MiniLMEncoder, MiniLM, dict[str, np.ndarray], list[list[str]]]:
    """The installed MiniLM as a torch model (its first ``depth`` layers; 0: all six), with the ONNX file's
    initialisers and per-layer matrix names that ``export`` writes back into, and the (float) encoder."""
    enc = MiniLMEncoder(dynamic_int8=False)
    init, layers = onnx_weights(enc.model_path())
    if depth:
        layers = layers[:depth]
    return enc, MiniLM(init, layers), init, layers


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=3, help="top transformer layers to train")
    ap.add_argument("--depth", type=int, default=0,
                    help="keep only the first N transformer layers (a faster encoder; 0: all six)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64, help="labelled pairs per step")
    ap.add_argument("--lr", type=float, default=3e-5)
    ap.add_argument("--margin", type=float, default=0.5)
    ap.add_argument("--scale", type=float, default=20.0)
    ap.add_argument("--max-tokens", type=int, default=64, help="truncate texts for training (QQP: 1.6%% longer)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True, help="the .npz of replacement initialisers")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)

    enc, model, init, layers = load_model(args.depth)
    frozen = len(layers) - args.layers

    # parity with the ONNX file (float products) before any training
    enc.load()
    probe = ["How do I turn off dark mode in Chrome?", "What is the capital of Australia?", "hi"]
    ids, _ = enc.tokenize(probe)
    ref = enc.encode_ids(ids)
    got = embed(model, ids)
    print("parity with ONNX: min cosine", float((ref * got).sum(1).min()), "(meaningful with all six layers)", flush=True)

    a, b, y = load_pairs()
    split = group_split(a, b)
    tr = np.nonzero(split == 0)[0]
    # hold out 10% of the training split's groups (by text_a's hash, stable) for choosing the epoch
    rng = np.random.default_rng(1)
    groups = {t: rng.random() for t in sorted(set(a[i] for i in tr))}
    val = np.array([i for i in tr if groups[a[i]] < 0.1])
    fit = np.array([i for i in tr if groups[a[i]] >= 0.1])
    texts = sorted(set(a[i] for i in tr) | set(b[i] for i in tr))
    index = {t: k for k, t in enumerate(texts)}
    tok, _ = enc.tokenize(texts, args.max_tokens)
    ia = {i: index[a[i]] for i in tr}
    ib = {i: index[b[i]] for i in tr}
    print(f"train pairs {len(fit)}, validation pairs {len(val)}, texts {len(texts)}; training layers "
          f"{frozen}..{len(layers) - 1}", flush=True)

    def evaluate() -> dict:
        need = sorted({ia[i] for i in val} | {ib[i] for i in val})
        E = dict(zip(need, embed(model, [tok[k] for k in need])))
        cos = np.array([float(E[ia[i]] @ E[ib[i]]) for i in val])
        yy = y[val].astype(int)
        return {"auc": auc(cos, yy), "oracle@2%": oracle_hits(cos, yy, 0.02), "oracle@1%": oracle_hits(cos, yy, 0.01)}

    best = evaluate()
    print("before training:", best, flush=True)
    best_state = {k: v.clone() for k, v in model.state_dict().items()}
    params = [p for layer in model.layers[frozen:] for p in layer.parameters()]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    steps_per_epoch = len(fit) // args.batch
    total = max(1, steps_per_epoch * args.epochs)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / (0.1 * total)) * max(0.0, (total - s) / total))
    step = 0
    for epoch in range(args.epochs):
        model.train()
        order = np.random.default_rng(100 + epoch).permutation(fit)
        t0 = time.time()
        running = 0.0
        for s in range(steps_per_epoch):
            sel = order[s * args.batch:(s + 1) * args.batch]
            ka = [ia[i] for i in sel]
            kb = [ib[i] for i in sel]
            u = model(*batch_ids([tok[k] for k in ka]), frozen=frozen)
            v = model(*batch_ids([tok[k] for k in kb]), frozen=frozen)
            yy = torch.tensor(y[sel].astype(np.float32))
            cos = (u * v).sum(1)
            # online contrastive: hard positives (farther than the nearest negative) and hard negatives
            d = 1 - cos
            pos, neg = yy == 1, yy == 0
            loss = torch.zeros(())
            if pos.any() and neg.any():
                hp = d[pos][d[pos] > d[neg].min()]
                hn = d[neg][d[neg] < d[pos].max()]
                loss = loss + hp.pow(2).sum() + torch.relu(args.margin - hn).pow(2).sum()
            if pos.sum() > 1:  # multiple negatives ranking among the batch's duplicates
                up, vp = u[pos], v[pos]
                logits = args.scale * up @ vp.T
                target = torch.arange(len(up))
                loss = loss + nn.functional.cross_entropy(logits, target) + nn.functional.cross_entropy(logits.T, target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            running += loss.item()
            if (s + 1) % 50 == 0:
                print(f"epoch {epoch} step {s + 1}/{steps_per_epoch} loss {running / 50:.3f} "
                      f"({(time.time() - t0) / (s + 1):.2f} s/step)", flush=True)
                running = 0.0
        got = evaluate()
        print(f"epoch {epoch}: {got} ({time.time() - t0:.0f} s)", flush=True)
        if got["auc"] > best["auc"]:  # steadier than the oracle hit rate on 1.6k pairs
            best, best_state = got, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    print("kept:", best, flush=True)
    patch = export(model, init, layers, frozen)
    if args.depth:
        patch["__depth__"] = np.array(args.depth)
    np.savez_compressed(args.out, **patch)
    print(f"wrote {args.out}: {len(patch)} initialisers, {Path(args.out).stat().st_size / 1e6:.1f} MB", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
