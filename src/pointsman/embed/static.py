"""Static (non-contextual) prompt embeddings distilled from MiniLM: what tier 2 routes with.

The recipe is model2vec's (Tulkens & van Dongen, 2024): run every vocabulary token through the
transformer once (``[CLS] token [SEP]``), keep its output vector, reduce the table to ``dims``
principal components, and down-weight frequent tokens (SIF weights from a Zipf estimate of each
token's frequency by its vocabulary rank). A prompt's embedding is then the mean of its tokens'
rows, L2-normalised: a table look-up, about 0.1 ms for a 512-token prompt on this CPU, where MiniLM
itself costs ~7 ms for 16 tokens and ~20 ms for 64 (bench/router/RESULTS.md).

The router only needs what a prompt is about (subject, task type, length); the held-out routing
quality of these vectors is within about a point of MiniLM's (bench/router/RESULTS.md, "Static
embeddings"). The semantic cache, which must tell paraphrases from near-misses, keeps MiniLM.

No weights are shipped or downloaded: the table is distilled from the installed MiniLM ONNX file at
first use (~10-25 s on 2 cores) and kept in ``<cache>/models/``, keyed by the model file's hash and
the recipe, so every machine with the same package derives the same table. The principal axes are
sign-fixed (largest coordinate positive), so a LAPACK build cannot flip a trained router's inputs.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from pointsman.embed.encoder import MiniLMEncoder, _digest_file as _file_digest
from pointsman.embed.features import FEATURE_NAMES, prompt_features
from pointsman.paths import default_cache_dir, exclusive

__all__ = ["StaticEncoder", "distill_table", "STATIC_MODEL_ID", "STATIC_DIMS", "STATIC_MAX_TOKENS"]

STATIC_DIMS = 256
STATIC_SIF = 1e-4
STATIC_MAX_TOKENS = 512  # a look-up per token is cheap: read (almost) the whole prompt
STATIC_MODEL_ID = f"sentence-transformers/all-MiniLM-L6-v2@static-pca{STATIC_DIMS}-sif{STATIC_SIF:g}"
_BATCH = 512  # vocabulary tokens per ONNX run while distilling
log = logging.getLogger("pointsman.embed")


def _fix_signs(axes: np.ndarray) -> np.ndarray:
    """Each row flipped so that its largest-magnitude coordinate is positive (SVD's sign is arbitrary)."""
    return axes * np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)])[:, None]


def distill_table(source: MiniLMEncoder, dims: int = STATIC_DIMS, sif: float = STATIC_SIF) -> np.ndarray:
    """(vocabulary, dims) float32 table: each token's MiniLM output, PCA-reduced and SIF-weighted."""
    source.load()
    vocab = source.loaded_tokenizer().get_vocab_size()
    raw = np.zeros((vocab, source.dim), dtype=np.float64)
    for start in range(0, vocab, _BATCH):
        ids = np.arange(start, min(vocab, start + _BATCH), dtype=np.int64)
        x = np.stack([np.full_like(ids, source._cls_id), ids, np.full_like(ids, source._sep_id)], axis=1)
        raw[ids] = source.run_ids(x)[:, 1]  # the token's own output vector
    centred = raw - raw.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    axes = _fix_signs(vt[:dims])
    table = centred @ axes.T
    # Zipf estimate of each token's frequency from its rank; SIF weight a / (a + p)
    inverse_rank = 1.0 / np.arange(2, vocab + 2)
    p = inverse_rank / inverse_rank.sum()
    table *= (sif / (sif + p))[:, None]
    return table.astype(np.float32)


class StaticEncoder:
    """The encoder contract of :class:`MiniLMEncoder` (``tokenize``, ``encode_ids``,
    ``encode_with_features``), backed by a distilled token table. Thread-safe; loads once.

    ``inline = True`` tells the gateway to call it on the event loop: a look-up is cheaper than the
    hop to a worker thread.
    """

    inline = True
    dim = STATIC_DIMS
    model_id = STATIC_MODEL_ID

    def __init__(self, source: MiniLMEncoder | None = None, max_seq_length: int = STATIC_MAX_TOKENS,
                 cache_dir: str | os.PathLike | None = None) -> None:
        self._own_source = source is None  # a private transformer is dropped once the table is made
        # distilling runs ~30k three-token inputs once: use every core (a one-off, before serving)
        self.source = source or MiniLMEncoder(intra_op_threads=os.cpu_count() or 1, dynamic_int8=False, cache_size=0)
        self.max_seq_length = int(max_seq_length)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._table: np.ndarray | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._table is not None

    def table_path(self) -> Path:
        digest = _file_digest(self.source.model_path())
        return (self.cache_dir or default_cache_dir() / "models") / f"minilm-{digest}-static-pca{STATIC_DIMS}-sif{STATIC_SIF:g}.npy"

    def load(self) -> "StaticEncoder":
        if self._table is not None:
            return self
        with self._lock:
            if self._table is not None:
                return self
            self.source.load_tokenizer()
            path = self.table_path()
            table = self._read(path)
            if table is None:
                with exclusive(path):  # several workers starting at once: one distils, the others read it
                    table = self._read(path)
                    if table is None:
                        log.info("distilling the static routing table from MiniLM into %s (once per machine)", path)
                        table = distill_table(self.source)
                        tmp = path.with_name(f"{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp.npy")
                        np.save(tmp, table)
                        os.replace(tmp, path)
                        if self._own_source:
                            self.source.unload()  # the transformer was only needed to distil
            self._table = table
        return self

    @staticmethod
    def _read(path: Path) -> np.ndarray | None:
        try:
            return np.load(path, allow_pickle=False)
        except (FileNotFoundError, ValueError, OSError):  # absent or damaged: (re)distil
            return None

    def tokenize(self, texts: Sequence[str], max_tokens: int | Sequence[int] | None = None
                 ) -> tuple[list[list[int]], np.ndarray]:
        return self.source.tokenize(texts, self.max_seq_length if max_tokens is None else max_tokens)

    def encode_ids(self, ids: list[list[int]], progress: bool = False) -> np.ndarray:
        table = self.load()._table
        assert table is not None  # load sets it
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        for k, x in enumerate(ids):
            inner = x[1:-1] or x  # without [CLS] and [SEP]
            v = table[inner].mean(axis=0)
            out[k] = v / max(float(np.linalg.norm(v)), 1e-12)
        return out

    def encode_with_features(self, texts: Sequence[str], progress: bool = False,
                             max_tokens: int | Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), np.float32), np.zeros((0, len(FEATURE_NAMES)), np.float32)
        windows = self.source._windows(len(texts), self.max_seq_length if max_tokens is None else max_tokens)
        ids, full = self.tokenize(texts, windows)
        feats = np.zeros((len(texts), len(FEATURE_NAMES)), dtype=np.float32)
        for w in set(windows):
            rows = [k for k, v in enumerate(windows) if v == w]
            feats[rows] = prompt_features([texts[k] for k in rows], full[rows], w)
        return self.encode_ids(ids), feats

    def encode(self, texts: Sequence[str], progress: bool = False, max_tokens: int | Sequence[int] | None = None
               ) -> np.ndarray:
        return self.encode_with_features(texts, progress=progress, max_tokens=max_tokens)[0]

