"""MiniLM with replacement weights (a fine-tuned patch): applied to the shipped file, cut to fewer layers,
rejected when it does not fit, and named in the model id so that no two encoders share a vector space."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from pointsman.cache import SemanticCache
from pointsman.embed.encoder import MiniLMEncoder, find_model_files, patched_model
from pointsman.embed.registry import DUP_PATCH, encoder_kind, make_encoder

TEXTS = ["How do I turn off dark mode in Chrome?", "What is the capital of Australia?"]


def initialiser(name: str) -> np.ndarray:
    model = onnx.load(str(find_model_files()[0]))
    return next(numpy_helper.to_array(i) for i in model.graph.initializer if i.name == name)


def test_a_patch_replaces_weights_and_changes_the_embeddings(tmp_path, monkeypatch):
    monkeypatch.setenv("POINTSMAN_CACHE_DIR", str(tmp_path / "cache"))
    bias = "inner.encoder.layer.5.output.dense.bias"
    patch = tmp_path / "shifted.npz"
    noise = np.random.default_rng(0).normal(0, 0.5, initialiser(bias).shape).astype(np.float32)
    np.savez(patch, **{bias: initialiser(bias) + noise})  # not a uniform shift: the LayerNorm after it removes one
    plain = MiniLMEncoder(cache_size=0, dynamic_int8=False).encode(TEXTS)
    shifted = MiniLMEncoder(cache_size=0, dynamic_int8=False, patch=patch)
    got = shifted.encode(TEXTS)
    assert "+shifted@" in shifted.model_id
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    assert (plain * got).sum(1).max() < 0.999  # a real change, not the same vectors


def test_depth_cuts_the_model_after_that_layer(tmp_path, monkeypatch):
    monkeypatch.setenv("POINTSMAN_CACHE_DIR", str(tmp_path / "cache"))
    np.savez(tmp_path / "six.npz", __depth__=np.array(6))
    np.savez(tmp_path / "three.npz", __depth__=np.array(3))
    plain = MiniLMEncoder(cache_size=0, dynamic_int8=False).encode(TEXTS)
    six = MiniLMEncoder(cache_size=0, dynamic_int8=False, patch=tmp_path / "six.npz").encode(TEXTS)
    three_path = patched_model(find_model_files()[0], tmp_path / "three.npz")
    three = MiniLMEncoder(cache_size=0, dynamic_int8=False, patch=tmp_path / "three.npz").encode(TEXTS)
    assert np.allclose(plain, six, atol=1e-6)  # all six layers: the same model
    assert (plain * three).sum(1).max() < 0.99
    layers = {i.name.split(".")[3] for i in onnx.load(str(three_path)).graph.initializer
              if i.name.startswith("inner.encoder.layer.")}
    assert layers == {"0", "1", "2"}  # the cut graph holds no weights of the layers it dropped


def test_a_patch_that_does_not_fit_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("POINTSMAN_CACHE_DIR", str(tmp_path / "cache"))
    np.savez(tmp_path / "wrong_shape.npz", **{"inner.encoder.layer.0.output.dense.bias": np.zeros(3, np.float32)})
    np.savez(tmp_path / "unknown.npz", **{"no.such.weight": np.zeros(3, np.float32)})
    for name in ("wrong_shape", "unknown"):
        with pytest.raises(ValueError):
            patched_model(find_model_files()[0], tmp_path / f"{name}.npz")


def test_the_shipped_duplicate_encoder_is_its_own_kind_and_vector_space():
    enc = make_encoder("minilm-dup")
    assert enc.patch == DUP_PATCH and DUP_PATCH.is_file()
    assert encoder_kind(enc.model_id) == "minilm-dup" and encoder_kind(make_encoder("minilm").model_id) == "minilm"
    body = {"model": "m", "temperature": 0, "messages": [{"role": "user", "content": "hi"}]}
    ns_dup = SemanticCache(vector_space=enc.model_id).keys(body, "t").namespace
    ns_plain = SemanticCache(vector_space=make_encoder("minilm").model_id).keys(body, "t").namespace
    assert ns_dup != ns_plain  # entries embedded by one encoder are never compared with the other's
