"""``pointsman spend``: the spend reports (accounting/reports.py) from a ledger, printed as a table or JSON."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

__all__ = ["add_command", "spend"]

DEFAULT_LEDGER = "sqlite:///pointsman.db"


def _pricing_and_url(args: argparse.Namespace) -> tuple[Any, str]:
    from pointsman.accounting.reports import Pricing

    if not args.config:
        return Pricing(), args.ledger or DEFAULT_LEDGER
    from pointsman.accounting.prices import resolve_prices
    from pointsman.config.loader import load_config

    config = load_config(args.config)
    return Pricing(config.models, resolve_prices(config.models)), args.ledger or config.server.ledger_url


def _finite(value: Any) -> Any:
    """JSON has no infinity: a ratio to an average of zero is written null (as the admin API writes it)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf"
        return f"{value:.6f}" if abs(value) < 100 else f"{value:.2f}"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "-"
    if isinstance(value, dict):
        return " ".join(f"{k}={_cell(v)}" for k, v in value.items())
    return str(value)


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no requests in this period)"
    columns = list(rows[0])
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def _text(kind: str, report: dict[str, Any]) -> str:
    period = f"{report.get('since') or 'first day'} .. {report.get('until') or 'last day'} (UTC days)"
    if kind == "spend":
        return f"spend by {', '.join(report['group_by'])}, {period}\n{_table(report['groups'])}\ntotal: {_cell(report['total'])}"
    if kind == "hidden":
        rows = [{k: v for k, v in row.items() if k != "ratios"} | {f"x_{k}": v for k, v in row["ratios"].items()}
                for row in report["groups"]]
        flagged = ", ".join(str(f) for f in report["flagged"]) or "none"
        return (f"hidden expensive paths per {report['group']}, {period}; strong models: "
                f"{', '.join(report['strong_models']) or '-'}; flagged at {report['factor']:g}x the average: {flagged}\n"
                f"average: {_cell(report['average'])}\n{_table(rows)}")
    if kind == "savings":
        return (f"savings against everything on {report['baseline']} ({report['baseline_source']}), {period}\n"
                f"{_table(report['groups'])}\ntotal: {_cell(report['total'])}")
    if kind == "sessions":
        rows = [{k: v for k, v in row.items() if k not in ("models", "first_ts", "last_ts")}
                | {"models": ",".join(m for m in row["models"] if m)} for row in report["sessions"]]
        return f"cost per session (most expensive first), {period}\n{_table(rows)}"
    return f"contract commitments per month, {period}\n{_table(report['months'])}"


def spend(args: argparse.Namespace) -> int:
    from pointsman.accounting.reports import SpendReader, run_report

    kind = ("hidden" if args.hidden else "savings" if args.baseline else "contracts" if args.contracts
            else "sessions" if args.sessions else "spend")
    pricing, url = _pricing_and_url(args)
    options = {"group_by": args.group_by, "group": args.group, "since": args.since, "until": args.until,
               "baseline": args.baseline, "factor": args.factor, "min_requests": args.min_requests, "strong": args.strong,
               "limit": args.limit}
    from pointsman.accounting.commands import opened

    with SpendReader(url) as reader:
        opened(url, reader._connect)  # a ledger that cannot be opened: one line, not a traceback
        report = run_report(reader, kind, {k: str(v) for k, v in options.items() if v is not None}, pricing)
    print(json.dumps(_finite(report), indent=2) if args.json else _text(kind, report))
    return 0


def add_command(commands: Any) -> None:
    """`spend` on the `pointsman` command's subparsers."""
    parser = commands.add_parser("spend", help="spend per key, team, cohort, model, tier or day; hidden expensive "
                                               "paths; savings against a baseline model; contract commitments")
    parser.add_argument("--config", help="the gateway's config: its ledger, its pool's prices and contracts")
    parser.add_argument("--ledger", help=f"ledger URL (default: the config's, else {DEFAULT_LEDGER})")
    parser.add_argument("--group-by", default="cohort", help="comma-separated: key, team, cohort, model, tier, day")
    parser.add_argument("--since", help="first UTC day counted: 2026-11-01, an ISO time, unix seconds, or 7d (days back)")
    parser.add_argument("--until", help="last UTC day counted (default: today)")
    parser.add_argument("--hidden", action="store_true",
                        help="the hidden-expensive-path report: groups far above the average in escalation share, "
                             "strong-model share or cost per request")
    parser.add_argument("--group", default="cohort", help="--hidden and --baseline: per cohort, team or key")
    parser.add_argument("--factor", type=float, default=2.0, help="--hidden: flag at this many times the average")
    parser.add_argument("--min-requests", type=int, default=20, help="--hidden: groups with fewer are not flagged")
    parser.add_argument("--strong", help="--hidden: the strong models, comma-separated (default: the pool's most "
                                         "expensive, or the dearest per token in the ledger)")
    parser.add_argument("--baseline", help="savings against every request on this model (a pool model or a model id "
                                           "the price snapshot knows)")
    parser.add_argument("--contracts", action="store_true", help="per month, what each model's contract commitment bills")
    parser.add_argument("--sessions", action="store_true", help="cost per session (agents' conversations), most "
                                                                "expensive first, with the models each used")
    parser.add_argument("--limit", type=int, default=100, help="--sessions: at most this many")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(handler=spend)
