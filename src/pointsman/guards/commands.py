"""``pointsman guard PROMPTS.jsonl [--config POOL]``: the guards offline, one JSON line per prompt, so that any
corpus can be measured without a gateway: the injection scores (user turns, tool results), the PII kinds found,
and the action the config's policy would take (its default action; ``flag`` when the guard is off there)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

__all__ = ["add_command"]


def add_command(commands: Any) -> None:
    guard = commands.add_parser("guard", help="score prompts with the guards offline: injection, PII, the action")
    guard.add_argument("prompts", help='JSONL: {"prompt": "..."} or {"messages": [...]} per line (optional "id")')
    guard.add_argument("--config", help="a pool config whose `guards:` section sets the thresholds and actions")
    guard.set_defaults(handler=_guard)


def _guard(args: argparse.Namespace) -> int:
    import orjson

    from pointsman.config.loader import load_config
    from pointsman.core import RouteContext
    from pointsman.embed.registry import Embedders
    from pointsman.guards.config import GuardsConfig
    from pointsman.guards.injection import InjectionGuard
    from pointsman.guards.pii import PiiGuard
    from pointsman.offline import read_prompts

    config = load_config(args.config).guards if args.config else GuardsConfig()
    embedders = Embedders(batch=False)
    pool: Any = _NoPool()
    injection = InjectionGuard(config.injection, pool, lambda _: None, embedders)
    pii = PiiGuard(config.pii, pool, lambda _: None)
    user_bar, tool_bar = injection.thresholds(None)
    injection_action = config.injection.action if config.injection.action != "off" else "flag"
    pii_action = config.pii.action if config.pii.action != "off" else "flag"

    async def run() -> None:
        for prompt_id, body in read_prompts(args.prompts):
            ctx = RouteContext(body)
            user, tool = await injection.score(ctx)
            flagged = user.flagged(user_bar) or (tool is not None and tool.flagged(tool_bar))
            redaction = pii.scan(ctx.messages)
            line = {"id": prompt_id,
                    "injection": {"user": round(user.score, 4), "tool": None if tool is None else round(tool.score, 4),
                                  "rule": user.rule or (tool.rule if tool is not None else None), "flagged": flagged,
                                  # which detector stage decided (2: the text reached the second stage's gate)
                                  "stage": max(user.stage, tool.stage if tool is not None else 1)},
                    "pii": dict(redaction.kinds) if redaction is not None else {},
                    "action": {"injection": injection_action if flagged else None,
                               "pii": pii_action if redaction is not None else None}}
            sys.stdout.buffer.write(orjson.dumps(line) + b"\n")

    asyncio.run(run())
    return 0


class _NoPool:
    """Offline there is no pool to route to: every name is unknown (route_to is not checked)."""

    entries: dict[str, Any] = {}

    def __contains__(self, name: str) -> bool:
        return True
