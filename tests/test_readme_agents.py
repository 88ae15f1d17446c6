"""The README's examples for the APIs agents speak (issue 22) run against a real gateway: the `anthropic` SDK's
Messages example and the `openai` SDK's Responses example, as printed."""

from __future__ import annotations

import contextlib
import io

from tests.conftest import model
from tests.test_readme import PYTHON_BLOCKS, section


def _block(marker: str) -> str:
    (code,) = [block for block in PYTHON_BLOCKS if marker in block]
    return code


def _run(code: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README", "exec"), {})  # noqa: S102 - the README's own example
    return out.getvalue()


def test_the_messages_example_runs(make_gateway, upstream):
    gw = make_gateway({"models": [model("small", upstream)]})
    printed = _run(_block("anthropic.Anthropic(").replace("http://127.0.0.1:4000", gw.url))
    assert printed.splitlines() == ["echo: Say hello in French. small", "echo: Count to 3."]


def test_the_responses_example_runs(make_gateway, upstream):
    gw = make_gateway({"models": [model("small", upstream)]})
    printed = _run(_block("client.responses.create(").replace("http://127.0.0.1:4000/v1", gw.base_url))
    assert printed.splitlines() == ["echo: Name a French cheese. / echo: And a Swiss one?", "echo: Count to 3.echo: And a Swiss one?"]


def test_the_readme_names_the_agent_settings():
    from pointsman.config.schema import Policy, SemanticTierConfig

    text = section("Agent sessions")
    assert f"default {Policy().agent_sticky_s:g} s" in text and f"default {SemanticTierConfig().agent_cached_share:g}" in text
