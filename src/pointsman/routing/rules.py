"""Tier 1: rules from config (regex, keywords, length, tools, turns, JSON mode), in microseconds."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pointsman.config.schema import Rule
from pointsman.routing.base import RouteContext, RouteDecision


@dataclass(slots=True)
class CompiledRule:
    name: str
    route: str
    regex: re.Pattern[str] | None
    keywords: tuple[str, ...] | None
    min_chars: int | None
    max_chars: int | None
    has_tools: bool | None
    min_turns: int | None
    json_mode: bool | None

    @classmethod
    def compile(cls, rule: Rule, index: int) -> CompiledRule:
        when = rule.when
        try:
            regex = re.compile(when.regex) if when.regex else None
        except re.error as exc:
            raise ValueError(f"rule {rule.name or index}: invalid regex {when.regex!r}: {exc}") from exc
        keywords = tuple(k.lower() for k in when.keywords) if when.keywords else None
        return cls(rule.name or f"rule{index}", rule.route, regex, keywords, when.min_chars, when.max_chars,
                   when.has_tools, when.min_turns, when.json_mode)

    def matches(self, ctx: RouteContext) -> bool:
        # Cheapest checks first; each ctx feature is computed once per request at most.
        if self.has_tools is not None and ctx.has_tools != self.has_tools:
            return False
        if self.json_mode is not None and ctx.json_mode != self.json_mode:
            return False
        if self.min_turns is not None and ctx.user_turns < self.min_turns:
            return False
        if self.min_chars is not None and ctx.total_chars < self.min_chars:
            return False
        if self.max_chars is not None and ctx.total_chars > self.max_chars:
            return False
        if self.keywords is not None:
            text = ctx.last_user_text.lower()
            if not any(k in text for k in self.keywords):
                return False
        if self.regex is not None and self.regex.search(ctx.last_user_text) is None:
            return False
        return True


class RuleTier:
    """First matching rule wins. Its target is a pool model or another policy ("router/<name>")."""

    name = "rules"
    revises = False

    def __init__(self, rules: list[Rule]) -> None:
        self.rules = [CompiledRule.compile(rule, i) for i, rule in enumerate(rules)]

    async def decide(self, ctx: RouteContext, eligible: list[str], tentative: RouteDecision | None = None
                     ) -> RouteDecision | None:
        # A rule whose model cannot serve this request (say, no tools) is passed over, not obeyed.
        for rule in self.rules:
            if (rule.route.startswith("router/") or rule.route in eligible) and rule.matches(ctx):
                return RouteDecision(model=rule.route, tier=self.name, reason=f"rule {rule.name}")
        return None
