"""Tier 3: an LLM as router, for the prompts tier 2 is unsure of.

A small configured pool model grades how hard the request is (1-5); the grade is mapped onto the
pool through each model's quality prior: the cheapest model able enough for that grade answers. The
call goes through the dispatcher like any other (retries, breaker, attempts), is costed, and its
attempts join the request's ledger row; it is bounded by a timeout; on timeout, failure or an
unreadable grade, tier 2's choice stands (and the log says why).
"""

from __future__ import annotations

import asyncio
import logging
import re

from pointsman.config.schema import JudgeTierConfig
from pointsman.errors import GatewayError
from pointsman.gateway.dispatch import Dispatcher
from pointsman.gateway.pool import Pool
from pointsman.ledger import Attempt
from pointsman.routing.base import RouteContext, RouteDecision
from pointsman.config.priors import quality_prior

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
# grade -> the quality prior a model needs (config/priors.py scale)
GRADE_TO_PRIOR = {1: 0.2, 2: 0.4, 3: 0.55, 4: 0.7, 5: 0.85}
_DIGIT = re.compile(r"[1-5]")
log = logging.getLogger("pointsman.routing")


class JudgeTier:
    """Grades a request nothing has decided, or overrules a decision whose confidence is below
    ``min_confidence`` (tier 2's, when it is unsure); a decision without a confidence (a rule's) stands."""

    name = "llm"
    revises = True

    def __init__(self, config: JudgeTierConfig, pool: Pool, dispatcher: Dispatcher, min_confidence: float = 0.0) -> None:
        if config.model not in pool:
            raise ValueError(f"judge model {config.model!r} is not a pool model")
        self.config = config
        self.pool = pool
        self.dispatcher = dispatcher
        self.min_confidence = min_confidence

    async def grade(self, ctx: RouteContext) -> int | None:
        body = {"model": self.config.model, "max_tokens": 3, "temperature": 0,
                "messages": [{"role": "user", "content": GRADER_PROMPT.format(request=ctx.routing_text[:2000])}]}
        tried: list[Attempt] = []
        try:
            result = await asyncio.wait_for(self.dispatcher.run([self.config.model], body, False, attempts=tried),
                                            self.config.timeout_s)
        except (GatewayError, asyncio.TimeoutError) as exc:
            log.warning("judge %s gave no grade: %s", self.config.model,
                        getattr(exc, "message", None) or f"no answer within {self.config.timeout_s:g} s")
            ctx.calls.extend(tried)
            return None
        answer = result.answer or {}
        usage = answer.get("usage")
        if not isinstance(usage, dict):
            usage = {}
        prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        last = tried[-1]
        last.cost_usd, last.prompt_tokens, last.completion_tokens = round(result.entry.cost(prompt, completion), 10), prompt, completion
        last.verdict = "judge"
        ctx.calls.extend(tried)
        content = (answer.get("choices") or [{}])[0].get("message", {}).get("content") or ""
        match = _DIGIT.search(content)
        if match is None:
            log.warning("judge %s answered without a grade: %r", self.config.model, content[:40])
        return int(match.group()) if match else None

    async def decide(self, ctx: RouteContext, eligible: list[str], tentative: RouteDecision | None = None
                     ) -> RouteDecision | None:
        if tentative is not None and (tentative.confidence is None or tentative.confidence >= self.min_confidence):
            return tentative
        fallback = tentative
        if not ctx.permits(self.config.model):  # the judge reads the prompt: only within the request's constraints
            return fallback
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
