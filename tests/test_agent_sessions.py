"""Agent sessions (issue 22): a tool-using conversation keeps its model (named by x-pointsman-session, or recognised
from its opening), unless the policy lets it switch; 20-turn agent loops through /v1/messages and /v1/responses with
every turn in the ledger under one session; per-session cost in the spend report; cached-input prices in tier 2."""

from __future__ import annotations

import itertools
from typing import Any

import anthropic
import httpx
import numpy as np
import openai
import pytest

from pointsman.config.schema import ModelConfig, Prices, SemanticTierConfig
from pointsman.core import RouteContext, RouteDecision
from pointsman.routing.semantic import SemanticTier, history_share
from pointsman.routing.sticky import conversation_session
from pointsman.routing.tiers import TierBuild
from tests.conftest import ledger_rows, model

TOOL = {"name": "get_weather", "description": "Weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
FUNCTION = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
TURNS = 20


class RoundRobinTier:
    """A tier that would move every request to the next eligible model: what stickiness has to hold against."""

    name = "round-robin"
    revises = False

    def __init__(self) -> None:
        self.turn = itertools.count()

    @classmethod
    def from_spec(cls, spec: dict[str, Any], build: TierBuild) -> RoundRobinTier:
        return cls()

    async def decide(self, ctx: RouteContext, eligible: list[str], tentative: RouteDecision | None = None) -> RouteDecision:
        return RouteDecision(model=eligible[next(self.turn) % len(eligible)], tier=self.name, reason="next in turn")


def pool(upstream) -> list[dict[str, Any]]:
    return [model("one", upstream, capabilities=["tools"], prices={"input": 1, "output": 2}),
            model("two", upstream, capabilities=["tools"], prices={"input": 2, "output": 4}),
            model("three", upstream, capabilities=["tools"], prices={"input": 3, "output": 6})]


@pytest.fixture
def gateway(make_gateway, upstream, monkeypatch):
    monkeypatch.setenv("POINTSMAN_TEST_ADMIN", "admin-secret")
    return make_gateway({"models": pool(upstream), "policies": {
        "auto": {"tiers": ["sticky", {"kind": "tests.test_agent_sessions:RoundRobinTier"}]},
        "switchy": {"tiers": ["sticky", {"kind": "tests.test_agent_sessions:RoundRobinTier"}], "agent_sticky_s": 0}},
        "server": {"admin_key_env": "POINTSMAN_TEST_ADMIN"}})


def test_twenty_tool_turns_through_messages_stay_on_one_model(gateway):
    c = anthropic.Anthropic(base_url=gateway.url, api_key="admin-secret", max_retries=0)
    messages: list[dict[str, Any]] = [{"role": "user", "content": "What is the weather in Paris, hour by hour?"}]
    models = []
    for turn in range(TURNS):
        raw = c.messages.with_raw_response.create(model="auto", max_tokens=100, tools=[TOOL], messages=messages)
        answer = raw.parse()
        models.append(raw.headers["x-pointsman-model"])
        assert raw.headers["x-pointsman-tier"] == ("round-robin" if turn == 0 else "sticky")
        use = answer.content[0]
        assert use.type == "tool_use"
        messages += [{"role": "assistant", "content": [{"type": "tool_use", "id": use.id, "name": use.name, "input": use.input}]},
                     {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": f"{turn} C"}]}]
    assert len(set(models)) == 1
    rows = [r for r in ledger_rows(gateway) if r["status"] == 200]
    assert len(rows) == TURNS and {r["chosen_model"] for r in rows} == set(models)
    sessions = {r["session"] for r in rows}
    assert len(sessions) == 1 and next(iter(sessions)).startswith("conv-")
    report = httpx.get(f"{gateway.url}/admin/spend/sessions", headers={"authorization": "Bearer admin-secret"}).json()
    (session,) = report["sessions"]
    assert session["requests"] == TURNS and not session["switched"] and list(session["models"]) == models[:1]
    assert session["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in rows))


def test_twenty_tool_turns_through_responses_stay_on_one_model(gateway):
    c = openai.OpenAI(base_url=gateway.base_url, api_key="admin-secret", max_retries=0)
    response = c.responses.create(model="auto", input="What is the weather in Paris, hour by hour?", tools=[FUNCTION])
    models = [response.model]
    for turn in range(TURNS - 1):
        call = response.output[0]
        assert call.type == "function_call"
        response = c.responses.create(model="auto", previous_response_id=response.id, tools=[FUNCTION],
                                      input=[{"type": "function_call_output", "call_id": call.call_id, "output": f"{turn} C"}])
        models.append(response.model)
    assert len(set(models)) == 1
    rows = ledger_rows(gateway)
    assert len(rows) == TURNS and len({r["session"] for r in rows}) == 1 and {r["chosen_model"] for r in rows} == set(models)


def test_a_policy_may_let_an_agent_switch_and_a_new_conversation_is_routed_afresh(gateway):
    c = openai.OpenAI(base_url=gateway.base_url, api_key="admin-secret", max_retries=0)
    response = c.responses.create(model="router/switchy", input="What is the weather in Rome?", tools=[FUNCTION])
    models = [response.model]
    for turn in range(3):
        response = c.responses.create(model="router/switchy", previous_response_id=response.id, tools=[FUNCTION],
                                      input=[{"type": "function_call_output", "call_id": response.output[0].call_id,
                                              "output": "warm"}])
        models.append(response.model)
    assert len(set(models)) == 3  # agent_sticky_s: 0, the round robin moves it every turn
    fresh = [c.responses.create(model="auto", input="What is the weather in Oslo?", tools=[FUNCTION]).model
             for _ in range(2)]
    assert fresh[0] != fresh[1]  # the same opening again, with no turn taken: a new conversation, not a session


def test_a_named_session_header_keeps_an_agent_on_its_model(gateway):
    c = openai.OpenAI(base_url=gateway.base_url, api_key="admin-secret", max_retries=0,
                      default_headers={"x-pointsman-session": "task-42"})
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    chosen = {c.chat.completions.create(model="auto", tools=tools, messages=[
        {"role": "user", "content": f"weather, question {i}"}]).model for i in range(4)}
    assert len(chosen) == 1
    assert {r["session"] for r in ledger_rows(gateway)} == {"task-42"}


def test_conversation_session_is_the_opening_and_needs_tools():
    opening = [{"role": "system", "content": "You are an agent."}, {"role": "user", "content": "fix the bug"}]
    later = [*opening, {"role": "assistant", "content": None, "tool_calls": []}, {"role": "tool", "content": "ok"}]
    assert conversation_session({"messages": opening, "tools": [1]}) == conversation_session({"messages": later, "tools": [1]})
    assert conversation_session({"messages": opening}) is None
    assert conversation_session({"messages": [opening[0], {"role": "user", "content": "other"}], "tools": [1]}) != \
        conversation_session({"messages": opening, "tools": [1]})


def test_agents_are_priced_at_cached_input_rates_in_tier_two():
    """Two models of equal list price, one whose prompt cache is ten times cheaper: for a tool-using request the
    semantic tier sees the second as cheaper; for a plain request they are priced alike."""
    tier = object.__new__(SemanticTier)
    tier.config = SemanticTierConfig(agent_cached_share=0.8)
    tier.pool = {"a": ModelConfig(name="a", provider="openai", prices=Prices(input=10, output=10)),
                 "b": ModelConfig(name="b", provider="openai", prices=Prices(input=10, output=10))}
    tier.cached_rates = {"a": 5.0, "b": 1.0}
    plain = RouteContext({"messages": [{"role": "user", "content": "hi"}]})
    agent = RouteContext({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]})
    prices, share = tier._prices(plain, ["a", "b"])
    assert share is None and prices[0] == prices[1] == 10
    prices, share = tier._prices(agent, ["a", "b"])
    assert share == 0.8 and np.allclose(prices, [0.75 * (0.2 * 10 + 0.8 * 5) + 2.5, 0.75 * (0.2 * 10 + 0.8 * 1) + 2.5])


def test_history_share_is_what_came_before_the_last_turn():
    messages = [{"role": "user", "content": "a" * 30}, {"role": "assistant", "content": "b" * 50},
                {"role": "tool", "content": "c" * 20}]
    assert history_share(messages) == pytest.approx(0.8)
    assert history_share(messages[:1]) == 0.0
