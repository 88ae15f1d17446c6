"""Agreement between two samples of the cheap model: a second answer that says the same thing is
evidence the first is right; a different one is evidence it is not.

The second sample costs one more cheap call (in the ledger as an attempt with verdict "sample"). Two
answers agree when their final numbers match (math-like answers), or their normalised texts match
(short answers), or, for longer text, their embeddings' cosine reaches `min_similarity`.

The evidence updates the score the answer already has (the other verifiers' verdict, else the router's
prediction) by a likelihood ratio, so it carries over between cheap models of different strength:
posterior odds = prior odds x ratio. The default ratios are measured (`bench/cascade/AGREEMENT.md`):
SmolLM2-135M on 200 arithmetic questions, where a second sample at temperature 0.7 agreed with 50% of
the right answers and 15.6% of the wrong ones: 3.2 on agreement, 0.59 on a difference.
"""

from __future__ import annotations

import re

import numpy as np

from pointsman.cascade.base import AnswerContext, Verdict, Verifier
from pointsman.embed.base import Embedder
from pointsman.text import text_of

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

    def __init__(self, embedder: Embedder | None = None, agree_ratio: float = 3.2, differ_ratio: float = 0.59,
                 min_similarity: float = 0.9) -> None:
        self.embedder = embedder
        self.agree_ratio = agree_ratio
        self.differ_ratio = differ_ratio
        self.min_similarity = min_similarity

    def update(self, prior: float, agree: bool) -> float:
        """The answer's score after the evidence: prior odds times the likelihood ratio."""
        p = min(max(prior, 1e-4), 1 - 1e-4)
        odds = p / (1 - p) * (self.agree_ratio if agree else self.differ_ratio)
        return odds / (1 + odds)

    async def check(self, item: AnswerContext) -> Verdict | None:
        resample = item.resample
        if resample is None or not item.text:
            return None
        second = await resample()
        if not second:
            return None
        choices = second.get("choices") or [{}]
        message = choices[0].get("message") if isinstance(choices[0], dict) else None
        other = text_of(message.get("content"), " ") if isinstance(message, dict) else ""
        agree = answers_agree(item.text, other)
        detail = "final answers"
        if agree is None:
            if self.embedder is None:
                return None
            a, b = await self.embedder.embed(item.text), await self.embedder.embed(other)
            similarity = float(np.dot(a, b))
            agree, detail = similarity >= self.min_similarity, f"cosine {similarity:.3f}"
        prior = float(item.prior)
        score = self.update(prior, agree)
        return Verdict(self.name, score, detail=f"second sample {'agrees' if agree else 'differs'} ({detail}), "
                                                f"{prior:.3f} -> {score:.3f}")
