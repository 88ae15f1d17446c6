"""Embeddings of the QQP texts, cached outside the repo (~/.cache/pointsman/cache-eval/)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "qqp" / "pairs.jsonl"


def cache_dir() -> Path:
    base = os.environ.get("POINTSMAN_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "pointsman")
    d = Path(base) / "cache-eval"
    d.mkdir(parents=True, exist_ok=True)
    return d


def load_pairs(path: Path = DATA) -> tuple[list[str], list[str], np.ndarray]:
    a, b, y = [], [], []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                r = json.loads(line)
                a.append(r["text_a"]); b.append(r["text_b"]); y.append(int(r["label"]))
    return a, b, np.asarray(y, dtype=np.int8)


def embed_texts(texts: list[str], encoder=None, progress: bool = True) -> np.ndarray:
    """(n, 384) float32; cached by a hash of the encoder id and every text."""
    from pointsman.embed import MiniLMEncoder

    encoder = encoder or MiniLMEncoder(intra_op_threads=2)
    h = hashlib.sha256(f"{encoder.model_id}|{encoder.max_seq_length}".encode())
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass")); h.update(b"\x00")
    path = cache_dir() / f"{h.hexdigest()}.npy"
    if path.is_file():
        return np.load(path)
    uniq = sorted(set(texts))
    emb_u = encoder.encode(uniq, progress=progress)
    pos = {t: i for i, t in enumerate(uniq)}
    emb = emb_u[[pos[t] for t in texts]]
    np.save(path, emb)
    return emb


if __name__ == "__main__":
    a, b, y = load_pairs()
    E = embed_texts(a + b)
    print(E.shape, y.mean())
