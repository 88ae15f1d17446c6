"""Schemathesis hooks for bench/fuzz/run.py (loaded through SCHEMATHESIS_HOOKS=bench.fuzz.hooks).

- `no_gateway_server_error` replaces the built-in `not_a_server_error`: a 5xx fails the run unless the
  upstream made it (the echo upstream itself answers 500 to content parts whose `text` is not a
  string; the gateway passes those through as any OpenAI-compatible server would, and says 502).
- Positive cases send integral numbers as integers: JSON Schema counts 10.0 as an integer, msgspec
  (strict, as the gateway validates) wants 10; without this a third of the positive cases would stop
  at validation instead of reaching routing and the upstream. Negative cases are left untouched.
"""

from __future__ import annotations

import schemathesis
from schemathesis import GenerationMode
from tests.fuzz_checks import no_gateway_server_error  # noqa: F401 - importing registers the check

INTEGER_FIELDS = ("n", "max_tokens", "max_completion_tokens", "seed", "top_logprobs")


@schemathesis.hook
def before_call(context, case, kwargs) -> None:
    meta = getattr(case, "meta", None)
    if meta is None or meta.generation.mode != GenerationMode.POSITIVE or not isinstance(case.body, dict):
        return
    for name in INTEGER_FIELDS:
        value = case.body.get(name)
        if isinstance(value, float) and value.is_integer():
            case.body[name] = int(value)
