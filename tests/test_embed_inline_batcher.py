"""The batcher runs a lone short text on the event loop (no thread hop) only when nothing else would wait
for it: the gateway says no other request is in flight, no text waits for the worker, and no other text went
inline in this turn of the loop (a gather of texts still shares one batch). Real model, a handful of texts."""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any

import numpy as np
import pytest

from tests.test_router_offline import needs_encoder

SHORT = "What is the capital of France?"


class CountingExecutor(concurrent.futures.ThreadPoolExecutor):
    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.calls = 0

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        self.calls += 1
        return super().submit(fn, *args, **kwargs)


@pytest.fixture(scope="module")
def plain():
    from pointsman.embed.encoder import MiniLMEncoder
    return MiniLMEncoder(cache_size=0).load()


def batcher(idle: list[bool], **kwargs: Any):
    from pointsman.embed.batcher import EmbedBatcher
    from pointsman.embed.encoder import MiniLMEncoder

    executor = CountingExecutor()
    return EmbedBatcher(MiniLMEncoder(cache_size=0), executor=executor, inline_when=lambda: idle[0], **kwargs), executor


@needs_encoder
async def test_a_lone_short_text_is_encoded_on_the_loop_with_the_same_result(plain):
    idle = [True]
    b, executor = batcher(idle)
    try:
        await b.warmup()  # loads in the worker thread: never on the loop
        warm = executor.calls
        emb, feats = await b.embed_with_features(SHORT)
        assert b.inlined == 1 and executor.calls == warm and b.batches == 0
        ref_emb, ref_feats = plain.encode_with_features([SHORT])
        assert np.array_equal(emb, ref_emb[0]) and np.array_equal(feats, ref_feats[0])
        await asyncio.sleep(0)  # one text inline per turn of the loop
        short_window = await b.embed(SHORT, 4)
        assert np.array_equal(short_window, plain.encode([SHORT], max_tokens=4)[0]) and b.inlined == 2
    finally:
        await b.close()


@needs_encoder
async def test_the_worker_thread_when_another_request_is_in_flight_or_the_text_is_long():
    idle = [False]
    b, executor = batcher(idle, inline_max_chars=40)
    try:
        await b.warmup()
        await b.embed(SHORT)
        assert b.inlined == 0 and b.batches == 1
        idle[0] = True
        await b.embed("a question well over forty characters long, so it goes to the worker")
        assert b.inlined == 0 and b.batches == 2
    finally:
        await b.close()


@needs_encoder
async def test_not_before_the_model_is_loaded_and_a_gather_still_batches():
    idle = [True]
    b, executor = batcher(idle)
    try:
        await b.embed(SHORT)  # not loaded yet: loading would block the loop for seconds
        assert b.inlined == 0 and b.batches == 1
        texts = [f"{SHORT} ({i})" for i in range(6)]
        got = await asyncio.gather(*(b.embed(t) for t in texts))
        assert b.inlined == 1 and b.items == 1 + 5 and b.batches <= 3  # one inline, the others to the worker
        assert len(got) == 6
    finally:
        await b.close()


async def test_without_inline_when_every_text_goes_to_the_worker():
    from pointsman.embed.batcher import EmbedBatcher

    class Encoder:
        loaded = True
        max_seq_length = 256
        dim = 2

        def __init__(self) -> None:
            self.threads: list[bool] = []

        def encode_with_features(self, texts: list[str], max_tokens: Any = None) -> tuple[np.ndarray, np.ndarray]:
            import threading
            self.threads.append(threading.current_thread() is threading.main_thread())
            return np.ones((len(texts), 2), np.float32), np.zeros((len(texts), 1), np.float32)

    enc = Encoder()
    b = EmbedBatcher(enc)  # type: ignore[arg-type]
    try:
        await b.embed("hi")
        assert enc.threads == [False] and b.inlined == 0
    finally:
        await b.close()


@needs_encoder
def test_the_gateway_embeds_a_lone_requests_question_on_the_loop(make_gateway, upstream):
    from tests.conftest import model
    from tests.test_cache_gateway import ask

    server = make_gateway({"models": [model("m", upstream, "inline-embed")], "server": {"cache": {"enabled": True}}})
    ask(server, "How do I reverse a list in Python?")
    headers, _ = ask(server, "How can I reverse a list in Python?")
    assert headers["x-pointsman-cache"] == "hit-semantic"
    gateway = server.gateway
    assert gateway.cache_embedder.inlined >= 1 and gateway.in_flight == 0
