"""``pointsman audit``: the prompt-log audit (audit.py) from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_command"]


def _audit(args: argparse.Namespace) -> int:
    from pointsman.observability.audit import format_text, render_html, run_audit

    overrides = {k: v for k, v in (("lambda", args.lambda_), ("floor", args.floor)) if v is not None}
    try:
        summary = run_audit(args.log, args.config, args.router, args.current, overrides, progress=not args.quiet)
    except (ValueError, OSError) as exc:
        print(f"pointsman audit: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "audit.json").write_text(json.dumps(summary, indent=1))
    (out / "audit.html").write_text(render_html(summary))
    print(format_text(summary))
    print(f"wrote {out / 'audit.json'} and {out / 'audit.html'}")
    return 0


def add_command(commands: Any) -> None:
    audit = commands.add_parser("audit", help="what routing would save on a log of prompts: routed offline, priced, "
                                              "with the predicted quality; writes an HTML report and a JSON summary")
    audit.add_argument("log", help="JSONL of OpenAI chat requests ({\"messages\": ...}, optional model, cohort, usage) "
                                   "or {\"prompt\": ...} rows, a CSV with a prompt column (model, cohort optional), or a "
                                   "ledger URL whose prompts were stored (learning.store_prompts)")
    audit.add_argument("--config", help="the pool and its policy (default: the router's own models)")
    audit.add_argument("--router", default="default", help="the semantic tier's router: default (shipped) or a .npz")
    audit.add_argument("--current", metavar="MODEL",
                       help="the model everything runs on today (default: the model each log row names)")
    audit.add_argument("--lambda", dest="lambda_", type=float, metavar="LAMBDA", help="the knob (default: the policy's)")
    audit.add_argument("--floor", type=float, help="instead of lambda: the cheapest model predicted to clear this")
    audit.add_argument("--out", default="audit", help="the folder audit.json and audit.html are written to")
    audit.add_argument("--quiet", action="store_true", help="no progress bar")
    audit.set_defaults(handler=_audit)
