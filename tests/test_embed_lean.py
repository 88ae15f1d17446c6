"""The lean int8 MiniLM graph (fused int8 products, direct key transposes, no NaN guards) and the one-text
shortcuts around it (tokeniser, pooling) give the embeddings the plain graph gave, bit for bit: the cache's
acceptance model and every stored vector were made with those."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

from pointsman.embed.encoder import MiniLMEncoder, _convert_dynamic_int8, dynamic_int8_model, find_model_files

TEXTS = ["How do I turn off dark mode in Chrome?", "What is the capital of Australia?",
         "Why do some people believe that the moon landing in 1969 was staged, and what evidence refutes it?", "hi"]


@pytest.fixture(scope="module")
def plain_int8(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("models") / "plain.onnx"
    _convert_dynamic_int8(find_model_files()[0], out, lean=False)
    return out


def test_the_converted_graph_is_lean():
    ops = [(n.op_type, n) for n in onnx.load(str(dynamic_int8_model(find_model_files()[0]))).graph.node]
    count = Counter(op for op, _ in ops)
    assert count["MatMulIntegerToFloat"] == 36 and count["MatMulInteger"] == 0  # 6 layers x 6 products, fused
    assert count["IsNaN"] == 0
    direct = [n for op, n in ops if op == "Transpose" and [list(a.ints) for a in n.attribute] == [[0, 2, 3, 1]]]
    assert len(direct) == 6  # one key transpose per layer, no reshape chain


def test_lean_embeddings_are_bit_identical_to_the_plain_int8_graph(plain_int8):
    lean = MiniLMEncoder(cache_size=0, max_padding=100.0)  # max_padding: the texts share padded batches too
    plain = MiniLMEncoder(model_path=plain_int8, dynamic_int8=False, cache_size=0, max_padding=100.0)
    for texts in ([TEXTS[0]], [TEXTS[3]], TEXTS):
        assert np.array_equal(lean.encode(texts), plain.encode(texts))


def test_one_text_shortcuts_match_the_batch_path():
    enc = MiniLMEncoder(cache_size=0).load()
    tokenizer = enc.loaded_tokenizer()
    for text in TEXTS:
        ids, full = enc.tokenize([text])
        assert ids[0] == tokenizer.encode_batch([text], add_special_tokens=True)[0].ids and full[0] == len(ids[0])
        hidden = enc.run_ids(np.asarray(ids, dtype=np.int64))
        m = np.ones((1, len(ids[0]), 1), dtype=np.float32)  # the masked mean pooling of a padded batch
        pooled = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
        pooled = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        assert np.array_equal(enc._run(ids), pooled.astype(np.float32))
