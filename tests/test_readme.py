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


def test_the_quick_start_runs(make_gateway, upstream):
    from tests.conftest import model

    gw = make_gateway({"models": [model("cheap", upstream), model("dear", upstream, prices={"input": 5})]})
    code = PYTHON_BLOCKS[0].replace("http://127.0.0.1:4000/v1", gw.base_url)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README quick start", "exec"), {})  # noqa: S102 - the README's own example
    answer, headers = out.getvalue().splitlines()
    assert answer.startswith("echo:") and headers.split()[0] in ("cheap", "dear")
