"""The verifier contract: given the prompt and one model's answer, how likely is the answer good?

A cascade asks a cheap model first and hands its answer to the policy's verifiers. Each verifier
returns a `Verdict` (a calibrated probability that the answer is acceptable, in [0, 1]) or None when
it has nothing to say (no log-probabilities returned, no JSON asked for, ...). Deterministic checks
that find a definite defect (invalid JSON when JSON was required, a truncated answer) set `defect`,
which escalates whatever the knob says.

Adding a verifier is adding one file with one class that implements `check`; trainable verifiers
also follow the predictors' fit / predict / save / load habit.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pointsman.core import RouteContext, lazy
from pointsman.text import text_of

__all__ = ["AnswerContext", "Verdict", "Verifier", "combine"]


@dataclass(slots=True)
class Verdict:
    verifier: str  # which verifier spoke
    score: float  # P(the answer is acceptable), 0..1
    defect: str | None = None  # a definite problem ("invalid_json", "truncated", ...): always escalate
    detail: str = ""


class AnswerContext:
    """One answer as verifiers see it; derived views are computed once, on first use."""

    __slots__ = ("route", "answer", "model", "__dict__")
    # set by the cascade only when the agreement verifier may run: a paid second sample, and the score so far
    resample: Callable[[], Awaitable[dict[str, Any] | None]] | None = None
    prior: float = 0.5

    def __init__(self, route: RouteContext, answer: dict[str, Any], model: str) -> None:
        self.route = route  # the request (body, messages, the shared prompt embedding)
        self.answer = answer  # the OpenAI chat.completion object the model returned
        self.model = model  # the pool model that answered

    @lazy
    def choice(self) -> dict[str, Any]:
        choices = self.answer.get("choices") or [{}]
        return choices[0] if isinstance(choices[0], dict) else {}

    @lazy
    def message(self) -> dict[str, Any]:
        message = self.choice.get("message")
        return message if isinstance(message, dict) else {}

    @lazy
    def text(self) -> str:
        return text_of(self.message.get("content"), " ")

    @lazy
    def finish_reason(self) -> str | None:
        return self.choice.get("finish_reason")

    @lazy
    def tool_calls(self) -> list[dict[str, Any]]:
        calls = self.message.get("tool_calls")
        return [c for c in calls if isinstance(c, dict)] if isinstance(calls, list) else []

    @lazy
    def token_logprobs(self) -> list[dict[str, Any]]:
        """The per-token entries of `choices[0].logprobs.content` (empty when the provider sent none)."""
        logprobs = self.choice.get("logprobs")
        content = logprobs.get("content") if isinstance(logprobs, dict) else None
        return [t for t in content if isinstance(t, dict)] if isinstance(content, list) else []


class Verifier(ABC):
    name: str = "verifier"

    @abstractmethod
    async def check(self, item: AnswerContext) -> Verdict | None:
        """A verdict on the answer, or None when this verifier has nothing to say about it."""


def combine(verdicts: list[Verdict]) -> Verdict | None:
    """One verdict from several: any defect wins; otherwise the lowest score (each verifier can veto).

    The minimum is conservative: an answer is accepted only when no verifier doubts it more than the
    threshold allows.
    """
    if not verdicts:
        return None
    defects = [v for v in verdicts if v.defect]
    if defects:
        first = defects[0]
        return Verdict(first.verifier, 0.0, first.defect, first.detail)
    return min(verdicts, key=lambda v: v.score)
