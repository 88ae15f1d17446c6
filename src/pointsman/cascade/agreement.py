"""Agreement between two samples of the cheap model: a second answer that says the same thing is
evidence the first is right; a different one is evidence it is not.

The second sample costs one more cheap call (in the ledger as an attempt with verdict "sample"). Two
answers agree when their final numbers match (math-like answers), or their normalised texts match
(short answers), or, for longer text, their embeddings' cosine reaches `min_similarity`. The two scores
are settings: `bench/cascade/AGREEMENT.md` measures them for SmolLM2 on arithmetic questions; measure
them for your own cheap model before relying on them.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from pointsman.cascade.base import AnswerContext, Verdict, Verifier
from pointsman.routing.base import _text_of

__all__ = ["AgreementVerifier", "answers_agree", "final_number"]

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_WORD = re.compile(r"\w+")
SHORT_WORDS = 12


def final_number(text: str) -> float | None:
    """The last number written in the answer (where a worked answer puts its result)."""
    found = _NUMBER.findall(text)
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None


def _normalised(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def answers_agree(first: str, second: str) -> bool | None:
    """True / False when the texts alone decide; None when it takes their embeddings (long free text)."""
    a, b = final_number(first), final_number(second)
    if a is not None and b is not None:
        return abs(a - b) <= 1e-6 * max(1.0, abs(a))
    if _normalised(first) == _normalised(second):
        return True
    if len(first.split()) <= SHORT_WORDS and len(second.split()) <= SHORT_WORDS:
        return False
    return None


class AgreementVerifier(Verifier):
    name = "agreement"

    def __init__(self, embedder: Any = None, agree_score: float = 0.7, disagree_score: float = 0.2,
                 min_similarity: float = 0.9) -> None:
        self.embedder = embedder
        self.agree_score = agree_score
        self.disagree_score = disagree_score
        self.min_similarity = min_similarity

    async def check(self, item: AnswerContext) -> Verdict | None:
        resample: Callable[[], Awaitable[dict[str, Any] | None]] | None = getattr(item, "resample", None)
        if resample is None or not item.text:
            return None
        second = await resample()
        if not second:
            return None
        choices = second.get("choices") or [{}]
        message = choices[0].get("message") if isinstance(choices[0], dict) else None
        other = _text_of(message.get("content")) if isinstance(message, dict) else ""
        agree = answers_agree(item.text, other)
        detail = "final answers"
        if agree is None:
            if self.embedder is None:
                return None
            a, b = await self.embedder.embed(item.text), await self.embedder.embed(other)
            similarity = float(np.dot(a, b))
            agree, detail = similarity >= self.min_similarity, f"cosine {similarity:.3f}"
        score = self.agree_score if agree else self.disagree_score
        return Verdict(self.name, score, detail=f"second sample {'agrees' if agree else 'differs'} ({detail})")
