"""The learning loop's commands: `pointsman train --from-ledger`, `promote`, `rollback`, `drift`."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

__all__ = ["add_commands", "train_from_ledger", "add_train_options"]

MIN_TRAINING_ROWS = 20


def _config(path: str | None) -> Any:
    from pointsman.config.defaults import default_config
    from pointsman.config.loader import load_config

    return load_config(path) if path else default_config()


def _since(value: str | None) -> float:
    """A date (2026-12-01), a date and time in ISO form, or a number of days back (7d)."""
    if not value:
        return 0.0
    if value.endswith("d") and value[:-1].replace(".", "", 1).isdigit():
        return time.time() - float(value[:-1]) * 86400
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"--since {value!r}: give a date (2026-12-01), an ISO date and time, or days back (7d)") from None
    return (when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)).timestamp()


def _deployed_router(config: Any, name: str | None) -> tuple[Path, Any]:
    from pointsman.predictors import load_predictor
    from pointsman.routing.semantic import router_file

    path = router_file(name or "deployed", config.learning.routers_dir)
    return path, load_predictor(path)


def _split(rows: Sequence[Any], holdout: float) -> float:
    """The time from which the most recent ``holdout`` share of the scored requests is kept out of training."""
    times = sorted({(row.ts, row.request_id) for row in rows})
    if holdout <= 0 or not times:
        return float("inf")
    return times[min(len(times) - 1, int(len(times) * (1 - holdout)))][0]


# -- train --from-ledger ---------------------------------------------------------------------------------
def add_train_options(train: argparse.ArgumentParser) -> None:
    train.add_argument("--from-ledger", metavar="URL",
                       help="learn from this gateway's own traffic instead of DATA: the ledger (sqlite:///pointsman.db) "
                            "with client feedback and shadow answers (needs learning.store_prompts); the deployed "
                            "router (--base) is corrected by them")
    train.add_argument("--since", help="--from-ledger: only requests since this date (2026-12-01) or days back (7d)")
    train.add_argument("--base", help="--from-ledger: the router to correct: deployed (what `pointsman promote` "
                                      "deployed, else the shipped one), default, or a file (default: deployed)")
    train.add_argument("--holdout", type=float, default=0.2,
                       help="--from-ledger: the most recent share of scored requests kept out of training, for "
                            "`pointsman promote` to compare on")
    train.add_argument("--export", metavar="JSONL", help="--from-ledger: also write the outcome rows in the long format")
    train.add_argument("--config", help="--from-ledger: the gateway's config (its learning.routers_dir; default: the "
                                        "built-in default)")


def train_from_ledger(args: argparse.Namespace) -> int:
    import numpy as np

    from pointsman.learning.adapt import adapt
    from pointsman.learning.traffic import embed_traffic, read_outcomes, write_outcomes

    if not 0 <= args.holdout < 1:
        raise ValueError("--holdout must be within 0..1")
    config = _config(args.config)
    rows = read_outcomes(args.from_ledger, _since(args.since))
    if args.export:
        write_outcomes(rows, args.export)
        print(f"wrote {len(rows)} outcome rows to {args.export}", file=sys.stderr)
    cut = _split(rows, args.holdout)
    training = [row for row in rows if row.ts < cut]
    if len(training) < MIN_TRAINING_ROWS:
        raise ValueError(f"{len(training)} scored answers to train on ({len(rows)} in the ledger, the newest "
                         f"{args.holdout:.0%} held out); at least {MIN_TRAINING_ROWS} are needed: send feedback "
                         "(POST /v1/feedback) or turn on shadow answers, with learning.store_prompts: true")
    base_path, base = _deployed_router(config, args.base)
    X, F = embed_traffic([row.prompt for row in training], base.info)
    candidate = adapt(base, X, F, [row.model for row in training], np.array([row.score for row in training]),
                      prompt_ids=[row.request_id for row in training])
    candidate.reference = dict(base.reference)
    candidate.info.update({"trained_until": cut if np.isfinite(cut) else None, "base_router": str(base_path),
                           "traffic_rows": len(training), "trained_at": time.time()})
    candidate.save(args.output)
    signals = {s: sum(row.signal == s for row in training) for s in ("feedback", "shadow")}
    print(f"adapted {base_path} on {len(training)} scored answers ({signals['feedback']} feedback, {signals['shadow']} "
          f"shadow) of {len({r.request_id for r in training})} requests; {len(rows) - len(training)} newer rows held out "
          f"for `pointsman promote {args.output}`", file=sys.stderr)
    return 0


# -- promote / rollback ----------------------------------------------------------------------------------
def _pool_router(predictor: Any, pool: list[Any]) -> Callable[[np.ndarray, np.ndarray | None], np.ndarray]:
    """The router as the gateway runs it: its predictions carried over to the pool's models (0..1 each)."""
    import numpy as np

    from pointsman.routing.semantic import pool_quality_map

    quality_map = pool_quality_map(predictor, pool)
    low, high = predictor.score_range
    scale = (high - low) or 1.0

    def predict(X: np.ndarray, F: np.ndarray | None) -> np.ndarray:
        quality, sd = predictor.predict_with_uncertainty(X, F)
        return np.array([quality_map.map((q - low) / scale, s / scale)[0] for q, s in zip(quality, sd)])

    return predict


def promote(args: argparse.Namespace) -> int:
    import numpy as np

    from pointsman.learning.compare import compare
    from pointsman.learning.deploy import RouterShelf
    from pointsman.learning.traffic import embed_traffic, read_outcomes
    from pointsman.predictors import load_predictor

    config = _config(args.config)
    ledger = args.ledger or config.server.ledger_url
    candidate = load_predictor(args.candidate)
    deployed_path, deployed = _deployed_router(config, "deployed")
    if candidate.info.get("encoder") != deployed.info.get("encoder"):
        raise ValueError(f"the candidate reads {candidate.info.get('encoder')} embeddings and the deployed router "
                         f"{deployed.info.get('encoder')}: compare routers on one encoder")
    pool = list(config.models)
    prices = {m.name: m.prices.blended() for m in pool}
    rows = [r for r in read_outcomes(ledger, _since(args.since)) if r.model in prices]
    if not rows:
        raise ValueError(f"no scored answers of pool models in {ledger}: nothing to compare on")
    until = candidate.info.get("trained_until")
    held_out = np.array([r.ts >= until for r in rows]) if until is not None else None
    X, F = embed_traffic([r.prompt for r in rows], deployed.info)
    lambda_ = _policy_lambda(config, args.policy)
    comparison = compare({"deployed": _pool_router(deployed, pool), "candidate": _pool_router(candidate, pool)}, X, F,
                         [r.request_id for r in rows], [r.model for r in rows], np.array([r.score for r in rows]),
                         prices=prices, margin=args.margin, held_out=held_out, holdout_share=args.holdout,
                         propensity=np.array([r.propensity for r in rows]), lambda_=lambda_)
    print(f"candidate {args.candidate} against the deployed router {deployed_path}, on {ledger}\n")
    print(comparison.table())
    if not comparison.promote:
        print("\nnot promoted: the deployed router stays", file=sys.stderr)
        return 1
    if args.dry_run:
        print("\n--dry-run: would promote", file=sys.stderr)
        return 0
    shelf = RouterShelf(config.learning.routers_dir)
    deployment = shelf.promote(args.candidate, {"comparison": comparison.reason, "prompts": comparison.prompts})
    print(f"\npromoted: version {deployment.version} is deployed in {shelf.deployed}; gateways routing with "
          f"`router: deployed` swap it in within {config.learning.reload_check_s:g} s", file=sys.stderr)
    return 0


def _policy_lambda(config: Any, name: str | None) -> float:
    from pointsman.config.schema import DEFAULT_LAMBDA

    policy = config.policies.get(name or config.server.default_policy)
    return float(policy.semantic.lambda_) if policy is not None and policy.semantic is not None else DEFAULT_LAMBDA


def rollback(args: argparse.Namespace) -> int:
    from pointsman.learning.deploy import RouterShelf

    config = _config(args.config)
    shelf = RouterShelf(config.learning.routers_dir)
    deployment = shelf.rollback()
    what = f"version {deployment.version} ({deployment.file})" if deployment.version else "the shipped router"
    print(f"rolled back: {what} is deployed; gateways swap it in within {config.learning.reload_check_s:g} s",
          file=sys.stderr)
    return 0


def drift(args: argparse.Namespace) -> int:
    from pointsman.learning.drift import traffic_drift
    from pointsman.routing.semantic import router_file

    config = _config(args.config)
    path = router_file(args.router, config.learning.routers_dir)
    report = traffic_drift(args.ledger or config.server.ledger_url, str(path), since=time.time() - args.days * 86400,
                           unseen_share_limit=config.learning.drift_unseen_share,
                           task_shift_limit=config.learning.drift_task_shift)
    print(json.dumps({"router": str(path), **report.as_dict()}, indent=2) if args.json
          else f"router: {path}\n{report.text()}")
    return 0


def add_commands(commands: Any) -> None:
    """`promote`, `rollback` and `drift` on the `pointsman` command's subparsers."""
    config_help = "the gateway's config: its pool, ledger and learning.routers_dir (default: the built-in default)"
    promote_parser = commands.add_parser(
        "promote", help="compare a candidate router with the deployed one on held-out recent traffic; deploy it "
                        "only if it is not worse beyond --margin at equal cost")
    promote_parser.add_argument("candidate", help="the candidate router (.npz), e.g. from `pointsman train --from-ledger`")
    promote_parser.add_argument("--config", help=config_help)
    promote_parser.add_argument("--ledger", help="ledger URL with the traffic to compare on (default: the config's)")
    promote_parser.add_argument("--policy", help="the policy whose knob (lambda) the comparison centres on "
                                                 "(default: the default policy)")
    promote_parser.add_argument("--margin", type=float, default=0.01,
                                help="how much worse (mean score, 0..1) the candidate may be, at its lower confidence bound")
    promote_parser.add_argument("--holdout", type=float, default=0.3,
                                help="share of the most recent requests compared on, for a candidate that does not "
                                     "record what it was trained on")
    promote_parser.add_argument("--since", help="only requests since this date (2026-12-01) or days back (7d)")
    promote_parser.add_argument("--dry-run", action="store_true", help="compare only, deploy nothing")
    promote_parser.set_defaults(handler=promote)

    rollback_parser = commands.add_parser("rollback", help="deploy the router that was deployed before the current one")
    rollback_parser.add_argument("--config", help=config_help)
    rollback_parser.set_defaults(handler=rollback)

    drift_parser = commands.add_parser("drift", help="is recent traffic still like the router's training prompts? "
                                                     "(says when to retrain)")
    drift_parser.add_argument("--config", help=config_help)
    drift_parser.add_argument("--ledger", help="ledger URL (default: the config's)")
    drift_parser.add_argument("--router", default="deployed", help="deployed, default, or a router file")
    drift_parser.add_argument("--days", type=float, default=7.0, help="compare the prompts of the last N days")
    drift_parser.add_argument("--json", action="store_true", help="print the report as JSON")
    drift_parser.set_defaults(handler=drift)
