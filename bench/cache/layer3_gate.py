"""Could MiniLM's first three layers decide a miss before the top three run? A negative result.

The cache encoder (minilm-dup) shares MiniLM's first three layers and fine-tunes the top three. The idea:
run the first three (about half the encoder's time), search an index of the entries' layer-3 vectors, and
skip the rest (and the look-up) when no entry is close enough that the full encoder could accept it. This
measures, on QQP's held-out test split with every distinct test `text_a` in one namespace (a dense
namespace, like one application's traffic) and 4,000 test `text_b` queries, how many look-ups each layer-3
floor would skip and how many hits the full look-up (top-3 candidates, the checks, the acceptance model at
delta 2%) would have served that the gate loses; plus single-text encode times, full against cut.

    .venv/bin/python bench/cache/layer3_gate.py      # ~1 min; results: bench/cache/GATEWAY.md
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _embed import embed_texts, load_pairs  # noqa: E402
from eval import group_split  # noqa: E402

from pointsman.cache import default_acceptance_model  # noqa: E402
from pointsman.cache.checks import compare, facts, pair_features  # noqa: E402
from pointsman.embed import MiniLMEncoder  # noqa: E402
from pointsman.embed.registry import DUP_PATCH  # noqa: E402


def main() -> int:
    depth_patch = Path(tempfile.mkdtemp(prefix="pointsman-gate-")) / "depth3.npz"
    np.savez(depth_patch, __depth__=np.array(3))  # cut after layer 3: the stock layers minilm-dup keeps
    a, b, _ = load_pairs()
    test = np.nonzero(group_split(a, b) == 2)[0]
    first: dict[str, int] = {}
    for i in test:
        first.setdefault(a[i], i)
    entries = np.array(list(first.values()))
    queries = np.random.default_rng(0).choice(test, 4000, replace=False)
    ent_texts, q_texts = [a[i] for i in entries], [b[i] for i in queries]
    full = MiniLMEncoder(intra_op_threads=2, patch=DUP_PATCH)
    cut = MiniLMEncoder(intra_op_threads=2, patch=depth_patch)
    F_e, F_q = embed_texts(ent_texts, full, progress=False), embed_texts(q_texts, full, progress=False)
    C_e, C_q = embed_texts(ent_texts, cut, progress=False), embed_texts(q_texts, cut, progress=False)
    model = default_acceptance_model(0.02, "logistic", "minilm-dup")
    floor = model.similarity_floor()
    full_sim = F_q @ F_e.T
    C_sim = C_q @ C_e.T
    top = C_sim.max(1)

    served = np.zeros(len(queries), bool)  # what the full look-up serves
    for qi in range(len(queries)):
        qf = facts(q_texts[qi])
        for j in np.argsort(-full_sim[qi])[:3]:
            sim = float(full_sim[qi, j])
            if sim < floor:
                break
            cf = facts(ent_texts[j])
            result = compare(qf, cf)
            if result.passed and model.accept(pair_features(sim, qf, cf, result), F_q[qi], F_e[j])[0]:
                served[qi] = True
                break
    print(f"{len(entries)} entries, {len(queries)} queries; similarity floor {floor:.3f}; "
          f"served hits {served.sum()} ({served.mean():.1%})")
    print("layer-3 top-1 cosine p10/p25/p50/p75/p90", np.quantile(top, [.1, .25, .5, .75, .9]).round(3))
    print("| layer-3 floor | look-ups skipped | served hits lost |\n|---|---|---|")
    for f in sorted(set(np.round(list(np.quantile(top, [0.01, .05, .1, .2, .3, .4, .5])) + [top[served].min()], 3))):
        skip = top < f
        print(f"| {f:.3f} | {skip.mean():.1%} | {int((skip & served).sum())} / {int(served.sum())} |")
    # smaller namespaces: the floor that lost nothing above, on random subsets of the entries
    zero_loss = float(np.round(top[served].min(), 3))
    for size in (1000, 100):
        keep = np.random.default_rng(1).choice(len(entries), size, replace=False)
        print(f"{size} entries: layer-3 floor {zero_loss:.3f} skips {(C_sim[:, keep].max(1) < zero_loss).mean():.1%} "
              "of look-ups")

    for name, patch in (("full (minilm-dup)", DUP_PATCH), ("first 3 layers", depth_patch)):
        enc = MiniLMEncoder(intra_op_threads=1, patch=patch, cache_size=0).load()
        times = []
        for text in q_texts[:400]:
            started = time.perf_counter()
            enc.encode([text])
            times.append((time.perf_counter() - started) * 1000)
        print(f"{name}: single-text encode p50 {np.median(times):.2f} ms (400 QQP questions, one thread)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
