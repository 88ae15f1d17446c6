"""The static token table tier 2 routes with: distilled from the installed MiniLM, deterministic, cheap."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.test_router_offline import needs_encoder

pytestmark = needs_encoder


@pytest.fixture(scope="module")
def static():
    from pointsman.embed.static import StaticEncoder

    return StaticEncoder().load()


def test_the_table_is_made_once_and_read_back_identically(static, tmp_path):
    from pointsman.embed.static import STATIC_DIMS, StaticEncoder

    table = static._table
    assert table.shape[1] == STATIC_DIMS and table.dtype == np.float32 and np.isfinite(table).all()
    again = StaticEncoder(source=static.source).load()  # same machine, same file: the cached table
    assert np.array_equal(again._table, table)


def test_embeddings_are_normalised_and_about_what_the_prompt_is_about(static):
    texts = ["Solve for x: 3x + 5 = 20", "What is the value of y if 2y - 4 = 10?",
             "Write a poem about the autumn forest", "Compose a short verse about falling leaves in fall"]
    emb, feats = static.encode_with_features(texts)
    assert emb.shape == (4, static.dim) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    sims = emb @ emb.T
    assert sims[0, 1] > sims[0, 2] and sims[2, 3] > sims[1, 3]  # algebra with algebra, poems with poems
    assert feats.shape[0] == 4


def test_the_whole_prompt_counts_up_to_the_window(static):
    head = "Translate this sentence into French please. "
    long_a = head + "word " * 100 + "astronomy galaxies telescopes"
    long_b = head + "word " * 100 + "cooking recipes pasta"
    a, b = static.encode([long_a, long_b])
    assert not np.allclose(a, b)  # the ends differ: a 512-token window reads both
    ca, cb = static.encode([long_a, long_b], max_tokens=16)
    assert np.allclose(ca, cb)  # a 16-token window reads only the shared head


def test_sign_convention_fixes_each_principal_axis():
    """A LAPACK build may return any sign per singular vector; the table must not depend on it."""
    from pointsman.embed.static import _fix_signs

    rng = np.random.default_rng(0)
    axes = rng.standard_normal((5, 8))
    flipped = axes * np.array([1, -1, -1, 1, -1])[:, None]
    assert np.array_equal(_fix_signs(axes.copy()), _fix_signs(flipped))


def test_embedders_keep_one_embedder_per_encoder_and_requests_key_by_encoder(static):
    from pointsman.embed.inline import InlineEmbedder
    from pointsman.embed.registry import Embedders, encoder_kind
    from pointsman.embed.static import STATIC_MODEL_ID
    from pointsman.routing.base import RouteContext

    assert encoder_kind(STATIC_MODEL_ID) == "static"
    assert encoder_kind("sentence-transformers/all-MiniLM-L6-v2@onnx-int8") == encoder_kind(None) == "minilm"

    class Other:
        model_id = "other"

        async def embed_with_features(self, text, max_tokens=None):
            return np.zeros(3, np.float32), np.zeros(2, np.float32)

    embedders = Embedders({"static": InlineEmbedder(static), "minilm": Other()})
    assert embedders.get("static") is embedders.get("static")
    assert embedders.for_artefact({"encoder": STATIC_MODEL_ID}) is embedders.get("static")

    async def both():
        ctx = RouteContext({"messages": [{"role": "user", "content": "hello there"}]})
        a = await ctx.embedding(embedders.get("static"), max_tokens=512)
        b = await ctx.embedding(embedders.get("minilm"), max_tokens=512)
        return a[0], b[0]

    a, b = asyncio.run(both())
    assert a.shape == (static.dim,) and b.shape == (3,)  # same text and window, different encoders: no mix-up


def test_long_prompts_are_embedded_off_the_event_loop(static):
    """A short prompt is embedded on the loop; a long one in a worker thread, with the same result."""
    import threading

    from pointsman.embed.inline import INLINE_MAX_CHARS, InlineEmbedder

    threads = []

    class Spy:
        model_id = static.model_id

        def encode_with_features(self, texts, max_tokens=None):
            threads.append(threading.current_thread())
            return static.encode_with_features(texts, max_tokens=max_tokens)

    embedder = InlineEmbedder(Spy())
    long_text = "word " * (INLINE_MAX_CHARS // 4)

    async def run():
        short = await embedder.embed("a short question?")
        long = await embedder.embed(long_text)
        return short, long

    short, long = asyncio.run(run())
    assert threads[0] is threading.main_thread() and threads[1] is not threading.main_thread()
    assert np.allclose(long, static.encode([long_text])[0])


def test_both_encoders_and_both_embedders_keep_the_contract(static):
    from pointsman.embed.base import Embedder, Encoder
    from pointsman.embed.batcher import EmbedBatcher
    from pointsman.embed.encoder import MiniLMEncoder
    from pointsman.embed.inline import InlineEmbedder

    assert isinstance(static, Encoder) and isinstance(MiniLMEncoder(), Encoder)
    assert isinstance(InlineEmbedder(static), Embedder) and isinstance(EmbedBatcher(MiniLMEncoder()), Embedder)


def test_workers_starting_at_once_distil_the_table_once(static, tmp_path, monkeypatch):
    """Two encoders loading at the same time on a machine without the table: one distils, the other waits."""
    import threading

    from pointsman.embed import static as static_module

    calls = []

    def slow_distil(source, *args, **kwargs):
        calls.append(1)
        threading.Event().wait(0.3)  # long enough for the second loader to arrive while the first works
        return static._table

    monkeypatch.setattr(static_module, "distill_table", slow_distil)
    encoders = [static_module.StaticEncoder(source=static.source, cache_dir=tmp_path) for _ in range(2)]
    threads = [threading.Thread(target=e.load) for e in encoders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert all(np.array_equal(e._table, static._table) for e in encoders)
