"""Tier 3: an LLM as router, for the prompts tier 2 is unsure of.

A small configured pool model grades how hard the request is (1-5); the grade is mapped onto the
pool through each model's quality prior: the cheapest model able enough for that grade answers. The
call is bounded by a timeout; on timeout or an unreadable grade, tier 2's choice stands.
"""

from __future__ import annotations

import asyncio
import re

from pointsman.config.schema import JudgeTierConfig
from pointsman.gateway.pool import Pool
from pointsman.providers import ProviderError
from pointsman.routing.base import RouteContext, RouteDecision
from pointsman.routing.priors import quality_prior

GRADER_PROMPT = (
    "You decide how capable an AI assistant must be to answer a user's request well.\n"
    "Grade the request below from 1 to 5:\n"
    "1 = trivial (greetings, simple facts, rephrasing)\n"
    "2 = easy (short explanations, simple lists, basic code)\n"
    "3 = moderate (multi-step reasoning, non-trivial code, careful writing)\n"
    "4 = hard (advanced math, complex code or design, expert knowledge)\n"
    "5 = very hard (research-level reasoning, long rigorous proofs)\n"
    "Answer with the single digit only.\n\nRequest:\n{request}\n\nGrade:"
)
# grade -> the quality prior a model needs (routing/priors.py scale)
GRADE_TO_PRIOR = {1: 0.2, 2: 0.4, 3: 0.55, 4: 0.7, 5: 0.85}
_DIGIT = re.compile(r"[1-5]")


class JudgeTier:
    name = "llm"

    def __init__(self, config: JudgeTierConfig, pool: Pool) -> None:
        if config.model not in pool:
            raise ValueError(f"judge model {config.model!r} is not a pool model")
        self.config = config
        self.pool = pool

    async def grade(self, ctx: RouteContext) -> int | None:
        entry = self.pool[self.config.model]
        body = {"messages": [{"role": "user", "content": GRADER_PROMPT.format(request=ctx.routing_text[:2000])}],
                "max_tokens": 3, "temperature": 0}
        try:
            answer = await asyncio.wait_for(entry.provider.complete(body), self.config.timeout_s)
        except (ProviderError, asyncio.TimeoutError):
            return None
        content = (answer.get("choices") or [{}])[0].get("message", {}).get("content") or ""
        match = _DIGIT.search(content)
        return int(match.group()) if match else None

    async def decide(self, ctx: RouteContext, eligible: list[str], fallback: RouteDecision | None = None) -> RouteDecision | None:
        grade = await self.grade(ctx)
        if grade is None:
            if fallback is not None:
                fallback.reason += f"; judge {self.config.model} gave no grade, tier-2 choice kept"
            return fallback
        needed = GRADE_TO_PRIOR[grade]
        able = [m for m in eligible if quality_prior(self.pool[m].config) >= needed]  # eligible is cheapest first
        model = able[0] if able else max(eligible, key=lambda m: quality_prior(self.pool[m].config))
        return RouteDecision(model=model, tier=self.name, scores=fallback.scores if fallback else None,
                             reason=f"judge {self.config.model} graded {grade}/5, needs prior >= {needed}")
