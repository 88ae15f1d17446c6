"""The README's examples run (issue 17): every YAML block is a config Pointsman accepts, the policy snippets
build a router over the README's own pool, and the quick start runs against a real gateway."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest
import yaml

from pointsman.config.loader import parse_config

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
YAML_BLOCKS = re.findall(r"```yaml\n(.*?)```\n", README, flags=re.DOTALL)
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```\n", README, flags=re.DOTALL)
BASE = yaml.safe_load(YAML_BLOCKS[0])  # the configuration example: the pool the snippets refer to


def test_the_readme_has_its_examples():
    assert len(YAML_BLOCKS) >= 5 and PYTHON_BLOCKS


@pytest.mark.parametrize("index", range(len(YAML_BLOCKS)))
def test_each_yaml_block_is_a_valid_config(index):
    from pointsman.embed.registry import Embedders
    from pointsman.gateway.pool import Pool
    from pointsman.providers.transport import ReqwestTransport
    from pointsman.routing.policy import PolicyRouter

    block = yaml.safe_load(YAML_BLOCKS[index])
    config = parse_config({"models": BASE["models"], **block} if "models" not in block else block, f"README block {index}")
    if "mypackage" in YAML_BLOCKS[index]:
        return  # names a user's own tier module: the schema is what can be checked here
    PolicyRouter(config, Pool(config, ReqwestTransport()), Embedders(batch=False))


def section(title: str) -> str:
    """A README section's text, from its heading to the next heading of any level."""
    match = re.search(rf"^#+ {re.escape(title)}\n(.*?)(?=^#)", README, flags=re.DOTALL | re.MULTILINE)
    assert match, f"the README has no section {title!r}"
    return " ".join(match.group(1).split())


def test_the_readme_says_what_is_on_by_default():
    """Issue 17: a newcomer found out about the cache, the ledger file and the open gateway by accident."""
    from pointsman.config.schema import ServerConfig

    defaults, text = ServerConfig(), section("On by default")
    assert f"`{defaults.host}:{defaults.port}`" in text and f"`{defaults.ledger_url}`" in text
    assert defaults.api_keys_env == [] and "open gateway" in text and "every caller" in text
    assert defaults.cache.enabled and defaults.cache.store == "memory" and "**The cache.** Exact and semantic, in memory" in text
    assert defaults.admin_key_env is None and "the admin API" in text.split("Off until you turn them on")[1]


def test_the_admin_api_section_says_how_to_enable_it():
    from pointsman.app.server import ADMIN_DISABLED

    text = section("The admin API")
    assert "server.admin_key_env" in text and "pointsman serve --admin-key-env" in text
    assert "server.admin_key_env" in ADMIN_DISABLED and "--admin-key-env" in ADMIN_DISABLED  # the error says the same


def test_the_routing_tiers_start_short_and_the_local_model_is_not_oversold():
    """Issue 17: the tiers were one 15-line sentence with ONNX details; the 135M model's answers surprised users."""
    intro = section("Routing tiers and the knob").split("```")[0]
    assert len(intro.split()) < 120 and "ONNX" not in intro and "onnx" not in intro
    assert "ONNX" in section("Inside the semantic tier and the judge")
    setup = section("Set-up on a fresh machine")
    assert "SmolLM2-135M is a real model" in setup and "not for answers you would use" in setup


def test_the_configuration_example_starts_as_pasted(tmp_path, monkeypatch):
    """Issue 17: the example named client-key variables nobody had set, so `pointsman serve` refused to start."""
    from pointsman.app.server import Gateway
    from pointsman.cli import missing_keys

    for name in re.findall(r"\b[A-Z][A-Z0-9_]*_KEY\w*\b", YAML_BLOCKS[0]):
        monkeypatch.delenv(name, raising=False)
    config = parse_config(BASE, "README configuration example")
    config.server.ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    Gateway(config)  # starts; the unset provider keys are warnings at start, not errors
    assert [line.split(":")[0] for line in missing_keys(config)] == ["model 'small'", "model 'big'"]


def test_every_code_fence_is_closed():
    """Issue 17: one fence run into the text around the LiteLLM sentence broke the rendering of the rest."""
    fences = re.findall(r"(?m)^ *```(\S*) *$", README)
    assert len(fences) % 2 == 0 and not any(fences[1::2]), fences  # every opener has a bare closer


def test_the_quick_start_runs(make_gateway, upstream):
    from tests.conftest import model

    gw = make_gateway({"models": [model("cheap", upstream), model("dear", upstream, prices={"input": 5})]})
    code = PYTHON_BLOCKS[0].replace("http://127.0.0.1:4000/v1", gw.base_url)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README quick start", "exec"), {})  # noqa: S102 - the README's own example
    answer, headers = out.getvalue().splitlines()
    assert answer.startswith("echo:") and headers.split()[0] in ("cheap", "dear")
