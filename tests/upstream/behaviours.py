"""The upstream's behaviours, named by a short string: `kind[:arg[:arg]]`.

echo               answer "echo: <last user text>" at once (tool call when tools are given and the
                   text mentions the weather)
slow:MS            wait MS milliseconds, then echo
status:CODE[:RA]   answer HTTP CODE with an OpenAI error body (and `retry-after: RA` if given)
quote:CODE         answer HTTP CODE with an error message quoting the last user text
reset              close the connection without answering
malformed          200 with a body that is not JSON
huge:MB            200 with a body of MB megabytes
deep:N             200 with a valid answer carrying a field nested N levels deep
stall:MS           (stream) send the first chunk, then nothing for MS milliseconds, then finish
cutoff             (stream) send two chunks, then close without [DONE]

Answers with a given quality, for cascades (each also streams):
refuse             "I'm sorry, but I can't help with that."
truncated          echo, but finish_reason "length"
json / badjson     a JSON object / JSON cut off mid-object
arith:good|bad     "2 + 2 = 4 ..." / "2 + 2 = 5 ..."
conf:P             echo with token log-probabilities, every token at probability P
say:TEXT           answer TEXT (a judge's verdict, say)
weak:WORD          echo, but "I do not know." to a prompt containing WORD (a model weak on one kind of prompt)
judge              grade the two answers of a shadow judge's prompt: A=<2|9> B=<2|9> (2 for "I do not know.")
user               answer the request's `user` field (a test's ground truth, which the cache does not key on)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Behaviour:
    kind: str
    args: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Behaviour:
        kind, *args = text.split(":")
        return cls(kind, tuple(args))

    def arg(self, index: int, default: float) -> float:
        return float(self.args[index]) if len(self.args) > index and self.args[index] else default


def last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def count_words(text: str) -> int:
    return max(1, len(text.split()))


def prompt_words(messages: list[dict[str, Any]]) -> int:
    total = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            total += count_words(content)
        elif isinstance(content, list):
            total += sum(count_words(p.get("text", "")) for p in content if isinstance(p, dict))
    return max(1, total)


def wants_tool_call(body: dict[str, Any]) -> bool:
    return bool(body.get("tools")) and "weather" in last_user_text(body.get("messages") or []).lower()


CANNED = {"refuse": "I'm sorry, but I can't help with that.", "json": '{"answer": 4, "unit": "apples"}',
          "badjson": '{"answer": 4, "unit": "app', "arith:good": "2 + 2 = 4, so the answer is 4.",
          "arith:bad": "2 + 2 = 5, so the answer is 5.", "grade:1": "1", "grade:4": "4"}


def _logprobs(text: str, p: float) -> dict[str, Any]:
    lp = math.log(max(p, 1e-9))
    runner_up = math.log(max(1e-9, min(1 - p, p)))
    return {"content": [{"token": w, "logprob": lp, "bytes": None,
                         "top_logprobs": [{"token": w, "logprob": lp, "bytes": None},
                                          {"token": "~", "logprob": runner_up, "bytes": None}]} for w in text.split(" ")]}


WEAK_ANSWER = "I do not know."


def _judge(request: str) -> str:
    """A judge that reads the two answers it is shown: 2 for an answer that gives up, 9 for any other."""
    _, _, answers = request.partition("Answer A:\n")
    first, _, second = answers.partition("\n\nAnswer B:\n")
    return " ".join(f"{side}={2 if WEAK_ANSWER in answer else 9}" for side, answer in (("A", first), ("B", second)))


def _text_for(behaviour: Behaviour | None, user_text: str) -> str:
    if behaviour is not None and behaviour.kind == "say":
        return ":".join(behaviour.args)
    if behaviour is not None and behaviour.kind == "weak" and behaviour.args and behaviour.args[0] in user_text:
        return WEAK_ANSWER
    if behaviour is not None and behaviour.kind == "judge":
        return _judge(user_text)
    return "echo: " + user_text


def chat_completion(body: dict[str, Any], behaviour: Behaviour | None = None) -> dict[str, Any]:
    messages = body.get("messages") or []
    created = int(time.time())
    name = behaviour.kind + (":" + ":".join(behaviour.args) if behaviour.args else "") if behaviour else ""
    logprobs = None
    if name in CANNED:
        text = CANNED[name]
        message = {"role": "assistant", "content": text}
        finish, completion_tokens = "stop", count_words(text)
    elif wants_tool_call(body):
        tool = body["tools"][0]["function"]["name"]
        message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_test_1", "type": "function", "function": {"name": tool, "arguments": '{"city": "Paris"}'}}]}
        finish, completion_tokens = "tool_calls", 5
    else:
        text = _text_for(behaviour, last_user_text(messages))
        if behaviour is not None and behaviour.kind == "user" and body.get("user"):
            text = str(body["user"])
        message = {"role": "assistant", "content": text}
        finish, completion_tokens = "stop", count_words(text)
        if behaviour is not None and behaviour.kind == "truncated":
            finish = "length"
        if behaviour is not None and behaviour.kind == "conf" and body.get("logprobs"):
            logprobs = _logprobs(text, behaviour.arg(0, 0.9))
    prompt_tokens = prompt_words(messages)
    return {
        "id": f"chatcmpl-test-{created}", "object": "chat.completion", "created": created,
        "model": body.get("model", "echo"),
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": logprobs}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def chat_chunks(body: dict[str, Any], behaviour: Behaviour | None = None) -> list[dict[str, Any]]:
    """The same answer as `chat_completion`, as stream chunks (role, pieces, finish, usage if asked)."""
    answer = chat_completion(body, behaviour)
    base = {"id": answer["id"], "object": "chat.completion.chunk", "created": answer["created"], "model": answer["model"]}
    message = answer["choices"][0]["message"]

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}

    chunks = [chunk({"role": "assistant", "content": ""})]
    if message.get("tool_calls"):
        call = message["tool_calls"][0]
        chunks.append(chunk({"tool_calls": [{"index": 0, "id": call["id"], "type": "function",
                                             "function": {"name": call["function"]["name"], "arguments": ""}}]}))
        arguments = call["function"]["arguments"]
        for piece in (arguments[:8], arguments[8:]):
            chunks.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
    else:
        words = message["content"].split(" ")
        for i, word in enumerate(words):
            chunks.append(chunk({"content": word if i == 0 else " " + word}))
    chunks.append(chunk({}, answer["choices"][0]["finish_reason"]))
    if (body.get("stream_options") or {}).get("include_usage"):
        chunks.append({**base, "choices": [], "usage": answer["usage"]})
    return chunks


def error_body(status: int) -> dict[str, Any]:
    return {"error": {"message": f"test upstream says {status}", "type": "test_error", "param": None, "code": str(status)}}
