"""One policy's cascade: plan it from the routing decision, then call, verify and escalate.

Planning (`Cascade.plan`) runs after the policy's tiers: it reuses tier 2's predicted quality per
model (or the models' quality priors when the policy has no semantic tier) and the same knob, and asks
`decide.plan` whether a cascade beats answering directly. Running (`Cascade.run`) calls the ladder's
models one at a time through the dispatcher (so retries, fallbacks and cooldowns still apply), hands
each answer but the last to the verifiers, and stops at the first accepted answer, the last rung, or a
budget. Every call is an `Attempt` with its cost, score and verdict, for the ledger.

A streamed request in cascade mode waits for the cheap answer and its check ("hold"): the accepted
answer is then sent as an SSE stream at once, or the strong model's answer is streamed live. So the
first token comes later on accepted answers; `stream: skip` trades the cascade for immediate streaming.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pointsman.cascade.agreement import AgreementVerifier
from pointsman.cascade.base import AnswerContext, Verdict, Verifier, combine
from pointsman.cascade.decide import DEFAULT_KAPPA, plan as plan_cascade, should_escalate
from pointsman.cascade.logprobs import LogprobVerifier
from pointsman.cascade.validators import VALIDATORS, verifier_class
from pointsman.config.schema import DEFAULT_LAMBDA, CascadeConfig
from pointsman.embed.base import Embedder
from pointsman.embed.registry import Embedders
from pointsman.errors import GatewayError
from pointsman.gateway.dispatch import Dispatcher, DispatchResult
from pointsman.gateway.pool import Pool
from pointsman.ledger import Attempt
from pointsman.core import RouteContext, RouteDecision
from pointsman.config.priors import blended_price, quality_prior

__all__ = ["Cascade", "CascadePlan", "CascadeOutcome", "needs_embedder"]

log = logging.getLogger("pointsman.cascade")
EXPLICIT_TIERS = frozenset({"direct", "rules", "sticky"})  # a choice someone made on purpose: no cascade


async def _checked(verifier: Verifier, item: AnswerContext) -> Verdict | None:
    """A verifier's verdict; one that fails says nothing (logged), so a broken check never fails an answer."""
    try:
        return await verifier.check(item)
    except Exception:  # noqa: BLE001 - the answer is in hand; the other verifiers and the prior still decide
        log.exception("cascade verifier %s failed on an answer of %s", verifier.name, item.model)
        return None


def needs_embedder(config: CascadeConfig) -> bool:
    return "learned" in config.verifiers


@dataclass(slots=True)
class CascadePlan:
    ladder: list[str]  # the models to call in order, cheapest first
    quality: list[float]  # predicted quality of each (tier 2's prediction, or the model's prior)
    cost: list[float]  # relative cost of each (price / the dearest eligible model's)
    lam: float
    threshold: float | None
    fallbacks: list[str]  # for the last rung
    reason: str
    runner: "Cascade"

    def describe(self) -> str:
        rule = f"threshold {self.threshold:g}" if self.threshold is not None else f"lambda {self.lam:g}"
        return f"cascade {' -> '.join(self.ladder)} ({rule})"


@dataclass(slots=True)
class CascadeOutcome:
    attempts: list[Attempt]
    steps: list[str] = field(default_factory=list)  # "model:score:verdict" per verified answer
    result: DispatchResult | None = None  # the answer to send (None: stream `stream_plan` live)
    stream_plan: list[str] | None = None
    cost_usd: float = 0.0  # every call's cost, the rejected ones included
    upstream_ms: float = 0.0  # time spent waiting on upstreams (the verifiers' time is the gateway's)
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def header(self) -> str:
        return ", ".join(self.steps)


class Cascade:
    def __init__(self, config: CascadeConfig, pool: Pool, embedders: Embedders | None = None,
                 semantic_lambda: float | None = None, agreement_embedder: Embedder | None = None) -> None:
        """``embedders`` gives the learned verifier the encoder its artefact
        names; ``agreement_embedder`` (optional) compares two free-text samples by embedding."""
        self.config = config
        self.pool = pool
        self.default_lambda = config.lambda_ if config.lambda_ is not None else (
            semantic_lambda if semantic_lambda is not None else DEFAULT_LAMBDA)
        for name in config.models or []:
            if name not in pool:
                raise ValueError(f"cascade.models names {name!r}, which is not a pool model")
        special = {"logprobs", "agreement", "learned"}  # built with what they need, below
        unknown = [name for name in config.verifiers if name not in special and verifier_class(name) is None]
        if unknown:
            raise ValueError(f"cascade.verifiers: unknown {unknown}; known: {sorted({*VALIDATORS, *special})}, or "
                             "package.module:Class")
        self.validators: list[Verifier] = [verifier_class(name)() for name in config.verifiers  # type: ignore[misc]
                                           if name not in special]
        if "logprobs" in config.verifiers:
            self.validators.append(LogprobVerifier())
        self.learned: Verifier | None = None
        self.kappa = DEFAULT_KAPPA
        if "learned" in config.verifiers:
            from pointsman.cascade.learned import load_verifier

            if embedders is None:
                raise ValueError("the learned cascade verifier needs the embedding model")
            priors = {name: quality_prior(entry.config) for name, entry in pool.entries.items()}
            learned = load_verifier(config.verifier, None, priors)
            learned.embedder = embedders.for_artefact({"encoder": learned.encoder})
            self.learned = learned
            self.kappa = float(getattr(learned, "kappa", DEFAULT_KAPPA) or DEFAULT_KAPPA)
        self.wants_logprobs = "logprobs" in config.verifiers
        self.agreement = AgreementVerifier(agreement_embedder, config.agree_ratio, config.differ_ratio) \
            if "agreement" in config.verifiers else None

    # -- planning ----------------------------------------------------------------------------------------
    def plan(self, ctx: RouteContext, decision: RouteDecision, eligible: list[str]) -> CascadePlan | None:
        mode = ctx.cascade_mode or self.config.mode
        if mode == "off" or decision.tier in EXPLICIT_TIERS or len(eligible) < 2:
            return None
        if ctx.body.get("stream") and self.config.stream == "skip":
            decision.reason += "; cascade skipped: the stream starts at once (cascade.stream: skip)"
            return None
        lam = ctx.overrides.get("lambda", self.default_lambda)
        threshold = ctx.overrides.get("cascade_threshold", self.config.threshold)
        scores = decision.scores or {}
        configs = [self.pool[m].config for m in eligible]
        quality = np.array([scores.get(c.name, quality_prior(c)) for c in configs], dtype=np.float64)
        prices = np.array([blended_price(c) for c in configs], dtype=np.float64)
        cost = prices / prices.max() if prices.max() > 0 else prices
        if self.config.models is not None:
            ladder = [m for m in self.config.models if m in eligible][: self.config.max_steps]
            if len(ladder) < 2:
                return None
            cheap, strong = eligible.index(ladder[0]), eligible.index(ladder[1])
            choice = plan_cascade(quality, cost, lam, self.kappa, cheap=cheap, strong=strong)
        else:
            choice = plan_cascade(quality, cost, lam, self.kappa)
            if choice.strong == choice.cheap:
                return None
            ladder = [eligible[choice.cheap], eligible[choice.strong]]
        # the alternative is the routed model (tier 2's choice by the same knob, or the policy's default)
        routed = eligible.index(decision.model) if decision.model in eligible else choice.direct
        direct_value = float(quality[routed] - lam * cost[routed])
        if mode == "route" and not choice.cascade_value > direct_value + 1e-9:
            decision.reason += f"; cascade not worth it (direct {direct_value:.3f} >= cascade {choice.cascade_value:.3f})"
            return None
        index = [eligible.index(m) for m in ladder]
        why = ("cascade always" if mode == "always" else
               f"cascade {choice.cascade_value:.3f} > direct {direct_value:.3f}")
        return CascadePlan(ladder=ladder, quality=[float(quality[i]) for i in index], cost=[float(cost[i]) for i in index],
                           lam=float(lam), threshold=threshold,
                           fallbacks=[m for m in decision.fallbacks + [decision.model] if m not in ladder and m in eligible],
                           reason=why, runner=self)

    # -- verifying ----------------------------------------------------------------------------------------
    async def verify(self, ctx: RouteContext, answer: dict[str, Any], model: str, prior: float, bar: float = 1.0,
                     resample: Callable[[], Awaitable[dict[str, Any] | None]] | None = None) -> Verdict:
        """The answer's combined verdict. Deterministic checks run first; a defect skips the learned model,
        and a score already below `bar` (the escalation point) skips the paid second sample. With no
        verifier speaking, the router's predicted quality for the model stands."""
        item = AnswerContext(ctx, answer, model)
        verdicts = [v for v in [await _checked(check, item) for check in self.validators] if v is not None]
        if any(v.defect for v in verdicts):
            return combine(verdicts)  # type: ignore[return-value]
        if self.learned is not None:
            learned = await _checked(self.learned, item)
            if learned is not None:
                verdicts.append(learned)
        verdict = combine(verdicts) or Verdict("prior", prior, detail="no verifier spoke: the router's prediction")
        if self.agreement is not None and resample is not None and self.agreement.update(verdict.score, True) >= bar:
            # a paid second sample only when agreeing could keep the answer; its evidence updates the score
            item.resample, item.prior = resample, verdict.score
            verdict = await _checked(self.agreement, item) or verdict
        return verdict

    # -- running ------------------------------------------------------------------------------------------
    async def run(self, plan: CascadePlan, ctx: RouteContext, body: dict[str, Any], dispatcher: Dispatcher,
                  started: float, stream: bool) -> CascadeOutcome:
        """Call the ladder. `started` is the request's perf_counter start, for the latency budget."""
        outcome = CascadeOutcome(attempts=[])
        call_body = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
        client_logprobs = bool(body.get("logprobs"))
        if self.wants_logprobs and not client_logprobs:
            call_body["logprobs"], call_body["top_logprobs"] = True, 2
        kept: DispatchResult | None = None  # the best answer so far, served if escalation fails
        last = len(plan.ladder) - 1
        for step, model in enumerate(plan.ladder):
            final = step == last
            if final and stream:
                outcome.stream_plan = [model, *plan.fallbacks]
                outcome.result = None
                return outcome
            try:
                result = await dispatcher.run([model, *plan.fallbacks] if final else [model], call_body, stream=False)
            except GatewayError as error:
                outcome.attempts.extend(error.attempts)
                if kept is None and final:
                    error.attempts = outcome.attempts
                    raise
                if kept is not None:
                    outcome.steps.append(f"{model}:failed")
                    outcome.result = kept
                    return outcome
                continue  # the cheap model failed: go up the ladder
            answer = result.answer or {}
            attempt = self._account(outcome, result, answer)
            if final:
                self._strip_logprobs(answer, client_logprobs)
                attempt.verdict = "final"
                outcome.steps.append(f"{result.entry.name}:final")
                outcome.result = result
                return outcome
            bar = plan.threshold if plan.threshold is not None else plan.quality[step + 1] - plan.lam * plan.cost[step + 1]
            resample = self._resampler(model, call_body, dispatcher, outcome) if self.agreement is not None else None
            verdict = await self.verify(ctx, answer, result.entry.name, plan.quality[step], bar, resample)
            self._strip_logprobs(answer, client_logprobs)
            attempt.score = round(verdict.score, 4)
            escalate = verdict.defect is not None or should_escalate(
                verdict.score, plan.quality[step + 1], plan.cost[step + 1], plan.lam, plan.threshold)
            blocked = self._over_budget(plan.ladder[step + 1], started, outcome, answer) if escalate else None
            if escalate and blocked is None:
                attempt.verdict = f"escalated:{verdict.defect}" if verdict.defect else "escalated"
                outcome.steps.append(f"{result.entry.name}:{verdict.score:.3f}:{verdict.defect or 'escalated'}")
                kept = result
                continue
            attempt.verdict = f"accepted:{blocked}" if blocked else "accepted"
            outcome.steps.append(f"{result.entry.name}:{verdict.score:.3f}:{attempt.verdict}")
            outcome.result = result
            return outcome
        outcome.result = kept
        return outcome

    def _resampler(self, model: str, body: dict[str, Any], dispatcher: Dispatcher,
                   outcome: CascadeOutcome) -> Callable[[], Awaitable[dict[str, Any] | None]]:
        """A second sample of the same model (for the agreement check), paid for and in the ledger."""

        async def resample() -> dict[str, Any] | None:
            try:
                result = await dispatcher.run([model], {**body, "temperature": self.config.resample_temperature}, stream=False)
            except GatewayError as error:
                outcome.attempts.extend(error.attempts)
                return None
            self._account(outcome, result, result.answer or {}).verdict = "sample"
            return result.answer

        return resample

    def _strip_logprobs(self, answer: dict[str, Any], client_asked: bool) -> None:
        if self.wants_logprobs and not client_asked:
            for choice in answer.get("choices") or []:
                if isinstance(choice, dict):
                    choice["logprobs"] = None  # asked upstream for the verifier only: not the client's

    def _account(self, outcome: CascadeOutcome, result: DispatchResult, answer: dict[str, Any]) -> Attempt:
        usage = answer.get("usage")
        if not isinstance(usage, dict):
            usage = {}
        prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        cost = result.entry.cost(prompt, completion)
        outcome.attempts.extend(result.attempts)
        outcome.upstream_ms += result.upstream_ms
        outcome.cost_usd += cost
        outcome.prompt_tokens += prompt
        outcome.completion_tokens += completion
        attempt = result.attempts[-1]  # the successful call
        attempt.cost_usd = round(cost, 10)
        attempt.prompt_tokens, attempt.completion_tokens = prompt, completion
        return attempt

    def _over_budget(self, next_model: str, started: float, outcome: CascadeOutcome, answer: dict[str, Any]) -> str | None:
        """Why the next step may not run ("latency_budget", "cost_budget"), or None."""
        budget = self.config.latency_budget_s
        if budget is not None and time.perf_counter() - started >= budget:
            return "latency_budget"
        if self.config.cost_budget_usd is not None:
            usage = answer.get("usage")
            if not isinstance(usage, dict):
                usage = {}
            # the next model reads the same prompt and writes about as much as the last one did
            estimate = self.pool[next_model].cost(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
            if outcome.cost_usd + estimate > self.config.cost_budget_usd:
                return "cost_budget"
        return None
