"""Pool configs: Pointsman's YAML, LiteLLM's model_list, clear errors, the embedded default."""

from __future__ import annotations

import pytest

from pointsman.config.defaults import default_config
from pointsman.config.loader import ConfigError, load_config, parse_config
from pointsman.routing.base import RouteContext
from pointsman.routing.rules import RuleTier
from pointsman.config.schema import Rule, RuleMatch


def write(tmp_path, text: str):
    path = tmp_path / "pool.yaml"
    path.write_text(text)
    return path


def test_full_yaml_config(tmp_path):
    config = load_config(write(tmp_path, """
models:
  - name: small
    provider: openai
    base_url: http://localhost:8000/v1
    model: Qwen/Qwen2.5-7B-Instruct
    api_key_env: VLLM_KEY
    prices: {input: 0.1, output: 0.3}
    context_window: 32768
    capabilities: [tools, json]
    tags: {region: eu, dpa: "yes", tier: small}
  - {name: big, provider: anthropic, api_key_env: ANTHROPIC_API_KEY, prices: {input: 3, output: 15}}
policies:
  auto:
    rules: [{name: code, when: {regex: "```|def |class "}, route: big}]
    default: small
server: {port: 4111}
"""))
    small = config.models[0]
    assert small.upstream_model == "Qwen/Qwen2.5-7B-Instruct" and small.tags["region"] == "eu"
    assert config.policies["auto"].rules[0].route == "big" and config.server.port == 4111


@pytest.mark.parametrize("text, needle", [
    ("models: [{name: a}]", "provider"),
    ("models: [{name: a, provider: openai, prices: {input: -1}}]", "prices must be >= 0"),
    ("models: [{name: a, provider: openai, capabilities: [telepathy]}]", "telepathy"),
    ("models: [{name: a, provider: openai, api_key: sk-123}]", "api_key"),
    ("models: [{name: a, provider: openai}, {name: a, provider: openai}]", "unique"),
    ("models: [{name: a, provider: openai, context_window: lots}]", "context_window"),
    ("models: {name: a}", "models"),
    ("just a string", "mapping"),
    ("models: [a: b: c]", "invalid YAML"),
    ("models: [{name: a, provider: openai}]\nserver: {cache: {encoder: static}}", "cache.encoder"),
])
def test_config_errors_name_the_problem(tmp_path, text, needle):
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    assert needle in str(caught.value) and "pool.yaml" in str(caught.value)


def test_a_word_out_of_a_closed_set_is_refused_with_the_accepted_ones(tmp_path):
    """Fields typed as a Literal in the schema: msgspec refuses the value, the loader names the choices."""
    for text, message in (
            ("policies: {auto: {cascade: {mode: sometimes}}}", "cascade.mode must be one of 'always', 'route', not 'sometimes'"),
            ("policies: {auto: {cascade: {stream: drip}}}", "cascade.stream must be one of 'hold', 'skip', not 'drip'"),
            ("server: {cache: {encoder: static}}", "server.cache.encoder must be one of 'minilm', 'minilm-dup', not 'static'")):
        with pytest.raises(ConfigError) as caught:
            load_config(write(tmp_path, "models: [{name: a, provider: openai, capabilities: [json]}]\n" + text))
        assert message in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, "models: [{name: a, provider: openai, capabilities: [json, telepathy]}]"))
    assert "models[0].capabilities[1] must be one of 'json', 'tools', 'vision', not 'telepathy'" in str(caught.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "absent.yaml")


def test_litellm_model_list_is_imported(tmp_path):
    config = load_config(write(tmp_path, """
model_list:
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o, api_key: os.environ/OPENAI_API_KEY}
    model_info: {input_cost_per_token: 0.0000025, output_cost_per_token: 0.00001, max_input_tokens: 128000,
                 supports_function_calling: true, supports_vision: true}
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o, api_base: "https://eu.example/v1", api_key: os.environ/OPENAI_EU_KEY}
  - model_name: claude
    litellm_params: {model: anthropic/claude-3-5-haiku-latest, api_key: os.environ/ANTHROPIC_API_KEY, timeout: 30}
  - model_name: llama
    litellm_params: {model: groq/llama-3.1-8b-instant, api_key: os.environ/GROQ_API_KEY}
  - model_name: local
    litellm_params: {model: ollama/qwen2.5}
"""))
    by_name = {m.name: m for m in config.models}
    assert set(by_name) == {"gpt-4o", "gpt-4o#2", "claude", "llama", "local"}
    gpt = by_name["gpt-4o"]
    assert (gpt.provider, gpt.upstream_model, gpt.api_key_env) == ("openai", "gpt-4o", "OPENAI_API_KEY")
    assert gpt.prices.input == pytest.approx(2.5) and gpt.prices.output == pytest.approx(10)
    assert gpt.context_window == 128000 and set(gpt.capabilities) == {"tools", "vision"}
    assert by_name["gpt-4o#2"].base_url == "https://eu.example/v1"
    assert by_name["claude"].provider == "anthropic" and by_name["claude"].timeout_s == 30
    assert by_name["llama"].base_url == "https://api.groq.com/openai/v1"
    assert by_name["local"].base_url == "http://localhost:11434/v1"


def test_litellm_literal_keys_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="literal key"):
        load_config(write(tmp_path, "model_list: [{model_name: a, litellm_params: {model: openai/x, api_key: sk-live-123}}]"))


LITELLM_TWO = """
model_list:
  - model_name: big
    litellm_params: {model: openai/gpt-4o, api_key: os.environ/OPENAI_API_KEY, num_retries: 1}
  - model_name: small
    litellm_params: {model: openai/gpt-4o-mini, api_key: os.environ/OPENAI_API_KEY}
"""


def test_litellm_master_key_protects_the_migrated_gateway(tmp_path):
    """Dropping general_settings.master_key used to serve a migrated config without authentication."""
    config = load_config(write(tmp_path, LITELLM_TWO + "general_settings: {master_key: os.environ/LITELLM_MASTER_KEY}\n"))
    assert config.server.api_keys_env == ["LITELLM_MASTER_KEY"] and config.server.admin_key_env == "LITELLM_MASTER_KEY"
    with pytest.raises(ConfigError, match="master_key must be `os.environ/NAME`"):
        load_config(write(tmp_path, LITELLM_TWO + "general_settings: {master_key: sk-1234}\n"))
    # a server section of ours wins key by key
    ours = load_config(write(tmp_path, LITELLM_TWO + "general_settings: {master_key: os.environ/LITELLM_MASTER_KEY}\n"
                                                     "server: {admin_key_env: MY_ADMIN, port: 4100}\n"))
    assert ours.server.api_keys_env == ["LITELLM_MASTER_KEY"] and ours.server.admin_key_env == "MY_ADMIN"
    assert ours.server.port == 4100


def test_litellm_fallbacks_timeouts_and_retries_are_imported(tmp_path):
    config = load_config(write(tmp_path, LITELLM_TWO + """
router_settings: {fallbacks: [{big: [small]}], num_retries: 4, timeout: 12}
litellm_settings: {drop_params: true}
"""))
    big, small = config.models
    assert big.fallbacks == ["small"] and small.fallbacks is None
    assert (big.max_retries, small.max_retries) == (1, 4)  # the model's own setting wins
    assert big.timeout_s == small.timeout_s == 12
    with pytest.raises(ConfigError, match="not in model_list"):
        load_config(write(tmp_path, LITELLM_TWO + "router_settings: {fallbacks: [{big: [medium]}]}\n"))


@pytest.mark.parametrize("extra, needle", [
    ("router_settings: {routing_strategy: latency-based-routing}", "router_settings.routing_strategy"),
    ("general_settings: {database_url: os.environ/DATABASE_URL}", "general_settings.database_url"),
    ("environment_variables: {OPENAI_API_KEY: sk-live}", "set them in the environment"),
    ("litellm_settings: {success_callback: [langfuse]}", "litellm_settings.success_callback"),
])
def test_litellm_settings_without_an_equivalent_are_refused_by_name(tmp_path, extra, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(write(tmp_path, LITELLM_TWO + extra + "\n"))


def test_a_model_named_directly_falls_back_to_its_own_fallbacks(make_gateway, upstream):
    import openai

    from tests.conftest import model

    gw = make_gateway({"models": [model("big", upstream, "status:503", max_retries=0, fallbacks=["small"]),
                                  model("small", upstream)]})
    client = openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="big", messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-pointsman-model"] == "small" and raw.headers["x-pointsman-tier"] == "direct"
    with pytest.raises(ConfigError, match="not other pool models"):
        parse_config({"models": [{"name": "a", "provider": "openai", "fallbacks": ["a"]}]})


def test_litellm_unknown_provider(tmp_path):
    with pytest.raises(ConfigError, match="not supported"):
        load_config(write(tmp_path, "model_list: [{model_name: a, litellm_params: {model: sagemaker/x}}]"))


def test_policy_naming_an_unknown_model_fails_at_start():
    from pointsman.app.server import Gateway

    config = parse_config({"models": [{"name": "a", "provider": "openai"}], "policies": {"auto": {"default": "b"}}})
    with pytest.raises(ValueError, match="'b'"):
        Gateway(config)


def test_default_config_uses_keys_present_in_the_environment():
    config = default_config({"OPENAI_API_KEY": "x", "GROQ_API_KEY": "y"}, include_local=False)
    names = [m.name for m in config.models]
    assert names == ["gpt-4o-mini", "gpt-4o", "llama-3.1-8b-instant"]
    assert config.policies["auto"].default == "llama-3.1-8b-instant"  # cheapest cloud model
    assert all(m.api_key_env for m in config.models)
    with pytest.raises(ValueError, match="no model available"):
        default_config({}, include_local=False)


def ctx(text: str, **body) -> RouteContext:
    return RouteContext({"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}], **body})


async def test_rules_match_each_condition():
    tier = RuleTier([
        Rule(name="tools", when=RuleMatch(has_tools=True), route="t"),
        Rule(name="json", when=RuleMatch(json_mode=True), route="j"),
        Rule(name="kw", when=RuleMatch(keywords=["Refactor"]), route="k"),
        Rule(name="re", when=RuleMatch(regex=r"\bSQL\b"), route="r"),
        Rule(name="long", when=RuleMatch(min_chars=200), route="l"),
        Rule(name="short", when=RuleMatch(max_chars=20), route="s"),
    ])
    every = ["t", "j", "k", "r", "l", "s"]
    assert (await tier.decide(ctx("x", tools=[{"type": "function"}]), every)).model == "t"
    assert (await tier.decide(ctx("x", response_format={"type": "json_object"}), every)).model == "j"
    assert (await tier.decide(ctx("please refactor this code"), every)).model == "k"
    assert (await tier.decide(ctx("write SQL for the report table now"), every)).model == "r"
    assert (await tier.decide(ctx("y" * 300), every)).model == "l"
    assert (await tier.decide(ctx("hi"), every)).model == "s"
    assert (await tier.decide(ctx("an ordinary question of medium size"), every)) is None
    assert (await tier.decide(ctx("please refactor this code"), ["t", "r"])) is None  # target not eligible: passed over


def test_multi_turn_features():
    c = RouteContext({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                                   {"role": "user", "content": [{"type": "text", "text": "see"}, {"type": "image_url", "image_url": {"url": "x"}}]}]})
    assert c.user_turns == 2 and c.last_user_text == "see" and c.has_images
    assert c.required_capabilities == {"vision"}


def test_serve_says_what_several_workers_do_not_share():
    """With --workers N and the in-memory store, cache feedback naming a request 404'd on another worker, and
    sticky sessions and breakers were per worker, all silently; the limits are now stated at start."""
    from pointsman.cli import per_worker_state

    config = parse_config({"models": [{"name": "a", "provider": "openai"}], "policies": {"auto": {"sticky_s": 60}}})
    notes = " ".join(per_worker_state(config, 2))
    assert "breakers" in notes and "sticky sessions are per worker" in notes and "in-memory cache is per worker" in notes
    assert per_worker_state(config, 1) == []
    shared = parse_config({"models": [{"name": "a", "provider": "openai"}],
                           "server": {"cache": {"store": "redis://127.0.0.1:6379/0"}}})
    assert "cache" not in " ".join(per_worker_state(shared, 4))


def test_serve_says_a_port_is_taken_before_starting(tmp_path):
    """Issue 17: a port already in use was reported by uvicorn after the banner had said where to connect."""
    import socket
    import subprocess
    import sys

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        config = tmp_path / "pool.yaml"
        config.write_text("models: [{name: m, provider: openai, base_url: 'http://127.0.0.1:9/v1'}]\n")
        done = subprocess.run([sys.executable, "-m", "pointsman.cli", "serve", "--config", str(config), "--port", str(port),
                               "--ledger", f"sqlite:///{tmp_path / 'l.db'}"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--port" in done.stderr and "OpenAI base URL" not in done.stderr


def test_check_validates_a_config_and_probes_each_model(tmp_path, upstream, monkeypatch, capsys):
    """Issue 17: `pointsman check --config FILE` validates the config, the key variables and each model's
    reachability without serving."""
    from pointsman.cli import main
    from tests.conftest import API_KEY_ENV, UPSTREAM_SECRET

    monkeypatch.setenv(API_KEY_ENV, UPSTREAM_SECRET)
    monkeypatch.delenv("PM_CHECK_UNSET", raising=False)
    good = tmp_path / "good.yaml"
    good.write_text(f"models:\n  - {{name: up, provider: openai, base_url: '{upstream.url}/v1', model: echo, "
                    f"api_key_env: {API_KEY_ENV}}}\n")
    assert main(["check", "--config", str(good)]) == 0
    assert "up: ok" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"models:\n  - {{name: up, provider: openai, base_url: '{upstream.url}/v1', model: echo, "
                   f"api_key_env: {API_KEY_ENV}}}\n  - {{name: refused, provider: openai, base_url: '{upstream.url}/v1', "
                   "model: 'status:401', api_key_env: PM_CHECK_UNSET}\n")
    assert main(["check", "--config", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "$PM_CHECK_UNSET is not set" in out and "refused: upstream_auth_error" in out and "2 problem(s)" in out
    assert main(["check", "--config", str(bad), "--offline"]) == 1  # the unset key alone


def test_health_with_models_probes_each_model_for_the_admin(make_gateway, upstream, monkeypatch):
    import httpx

    from tests.conftest import model

    monkeypatch.setenv("PM_HEALTH_ADMIN", "sk-health-admin")
    gw = make_gateway({"models": [model("up", upstream), model("down", upstream, "status:503")],
                       "server": {"admin_key_env": "PM_HEALTH_ADMIN"}})
    assert httpx.get(f"{gw.url}/health").json()["status"] == "ok"
    assert httpx.get(f"{gw.url}/health?models=1").status_code == 401
    report = httpx.get(f"{gw.url}/health?models=1", headers={"authorization": "Bearer sk-health-admin"}).json()
    assert report["status"] == "degraded"
    assert {row["id"]: row["ok"] for row in report["models"]} == {"up": True, "down": False}
