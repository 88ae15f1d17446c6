"""The `pointsman` command: `serve`, `train` (routers and cascade verifiers), `route`, `calibrate`, `eval`."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from pointsman import __version__
from pointsman.accounting.commands import LedgerUnavailable, add_commands as add_account_commands
from pointsman.learning.commands import add_commands as add_learning_commands
from pointsman.accounting.cli import add_command as add_spend_command
from pointsman.observability.commands import add_command as add_audit_command
from pointsman.guards.commands import add_command as add_guard_command
from pointsman.learning.commands import add_train_options
from pointsman.ledger import without_password


def _serve(args: argparse.Namespace) -> int:
    import os

    if args.workers > 1:  # before anything imports prometheus_client: the workers add up their metrics
        from pointsman.observability.workers import share_metrics_between_workers

        share_metrics_between_workers()
    import uvicorn

    from pointsman.app.factory import ADMIN_KEY_ENV, CONFIG_ENV, LEDGER_ENV, LOG_REQUESTS_ENV, config_from_env
    from pointsman.app.server import Gateway
    from pointsman.config.loader import ConfigError

    # Workers build their gateway from the environment; the parent checks the same config first.
    if args.config:
        os.environ[CONFIG_ENV] = os.path.abspath(args.config)
    if args.ledger:
        os.environ[LEDGER_ENV] = args.ledger
    if args.log_requests:
        os.environ[LOG_REQUESTS_ENV] = "1"
    if args.admin_key_env:
        os.environ[ADMIN_KEY_ENV] = args.admin_key_env
    try:
        config = config_from_env()
    except (ConfigError, ValueError) as exc:
        print(f"pointsman: {exc}", file=sys.stderr)
        return 2
    host = args.host or config.server.host
    port = args.port or config.server.port
    taken = _port_taken(host, port)
    if taken:  # before the models load and the banner says where to connect
        print(f"pointsman: cannot listen on {host}:{port} ({taken}): is another server running there? "
              f"Choose another port with --port", file=sys.stderr)
        return 2
    try:
        gateway = Gateway(config)
    except (ConfigError, ValueError) as exc:
        print(f"pointsman: {exc}", file=sys.stderr)
        return 2
    print(f"pointsman {__version__}: {len(config.models)} model(s): {', '.join(gateway.pool.by_price)}", file=sys.stderr)
    print(f"  policies: {', '.join('router/' + p for p in gateway.router.policies)} (model=\"auto\" = "
          f"router/{config.server.default_policy}); ledger: {without_password(config.server.ledger_url)}", file=sys.stderr)
    print(f"  OpenAI base URL: http://{host}:{port}/v1" + (f" ({args.workers} workers)" if args.workers > 1 else ""),
          file=sys.stderr)
    print(f"  {what_is_on(config)}", file=sys.stderr)
    for line in per_worker_state(config, args.workers):
        print(f"  note: {line}", file=sys.stderr)
    for line in missing_keys(config):
        print(f"  warning: {line}", file=sys.stderr)
    from pointsman.app.protocol import GuardedHttpToolsProtocol

    options = dict(host=host, port=port, loop="uvloop", http=GuardedHttpToolsProtocol,
                   lifespan="on", access_log=False,
                   log_level=args.log_level, timeout_graceful_shutdown=30, proxy_headers=False, server_header=False)
    if args.workers > 1:
        # Each worker is a process with its own pool, breakers and ledger writer (SQLite in WAL mode
        # takes their batches in turn).
        uvicorn.run("pointsman.app.factory:create_app", factory=True, workers=args.workers, **options)
    else:
        uvicorn.run(gateway, **options)
    return 0


def _port_taken(host: str, port: int) -> str | None:
    """Why nothing can listen on host:port, or None (the probe binds as uvicorn will, with SO_REUSEADDR)."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def missing_keys(config: Any) -> list[str]:
    """Pool models whose key variable is not set: their upstream will refuse every request."""
    import os

    return [f"model {m.name!r}: ${m.api_key_env} is not set, so its provider will refuse the gateway's requests"
            for m in config.models if m.api_key_env and not os.environ.get(m.api_key_env)]


def what_is_on(config: Any) -> str:
    """The settings a newcomer finds out about the hard way, said at start: the cache, who may call, the admin API."""
    server = config.server
    # virtual keys (pointsman keys create) are accepted in every case, and their first one closes an open gateway
    clients = (f"client keys from ${', $'.join(server.api_keys_env)} or virtual keys" if server.api_keys_env
               else f"clients need the admin key (${server.admin_key_env}) or a virtual key" if server.admin_key_env
               else "open: no client keys (server.api_keys_env), until a virtual key exists")
    admin = f"on (${server.admin_key_env})" if server.admin_key_env else "off (enable with --admin-key-env NAME)"
    return f"cache: {'on' if server.cache.enabled else 'off'}; gateway {clients}; admin API {admin}"


def per_worker_state(config: Any, workers: int) -> list[str]:
    """What is not shared between `--workers` processes, said at start rather than found out later."""
    if workers <= 1:
        return []
    lines = ["each worker keeps its own circuit breakers and retry state: a failing model is cooled down by each "
             "worker as it sees the failures"]
    if any(p.sticky_s > 0 for p in config.policies.values()):
        lines.append("sticky sessions are per worker: a session's next request may reach another worker and be "
                     "routed afresh")
    cache = config.server.cache
    if cache.enabled and cache.store == "memory":
        lines.append("the in-memory cache is per worker: a worker serves only what it stored, and cache feedback that "
                     "names a request works only on the worker that answered it; share it with "
                     "server.cache.store: redis://...")
    return lines


def _check(args: argparse.Namespace) -> int:
    """Validate a config without serving: its schema and policies, the key variables, and (unless --offline)
    one tiny request to every model. Exit 0 when all is well, 1 when something needs fixing."""
    import asyncio

    from pointsman.config.defaults import default_config
    from pointsman.config.loader import load_config
    from pointsman.embed.registry import Embedders
    from pointsman.gateway.health import probe_models
    from pointsman.gateway.pool import Pool
    from pointsman.providers.transport import ReqwestTransport
    from pointsman.routing.policy import PolicyRouter

    config = load_config(args.config) if args.config else default_config()
    pool = Pool(config, ReqwestTransport())
    router = PolicyRouter(config, pool, Embedders(batch=False))  # names, delegations, router files: checked here
    print(f"config: {args.config or 'the built-in default'}: {len(config.models)} model(s), policies "
          f"{', '.join('router/' + p for p in router.policies)}")
    problems = missing_keys(config)
    for line in problems:
        print(f"  key: {line}")
    if not args.offline:
        async def probe() -> list[dict[str, Any]]:
            try:
                return await probe_models(pool, args.timeout)
            finally:
                await pool.aclose()

        for row in asyncio.run(probe()):
            print(f"  {row['id']}: " + (f"ok ({row['latency_ms']:.0f} ms)" if row["ok"] else f"{row['error']}: {row['message']}"))
            problems += [] if row["ok"] else [row["id"]]
    print("ok" if not problems else f"{len(problems)} problem(s)")
    return 0 if not problems else 1


def _anchors(pairs: list[str]) -> dict[str, float]:
    anchors = {}
    for pair in pairs:
        name, _, value = pair.rpartition("=")
        try:
            anchors[name] = float(value)
        except ValueError:
            raise SystemExit(f"pointsman: --anchor takes MODEL=PRIOR (a number 0..1), got {pair!r}") from None
    return anchors


def _aliases(pairs: list[str]) -> dict[str, str]:
    aliases = {}
    for pair in pairs:
        old, sep, new = pair.partition("=")
        if not sep or not old or not new:
            raise SystemExit(f"pointsman: --alias takes NAME=CANONICAL, got {pair!r}")
        aliases[old] = new
    return aliases


def _train_verifier(args: argparse.Namespace) -> int:
    from pointsman.evaluation.cascade import train_verifier
    from pointsman.evaluation.datasets import load_answer_table

    tables = [load_answer_table(p, args.prices) for p in args.data]
    verifier = train_verifier(tables, tail_chars=args.tail_chars, alpha=args.alpha, progress=True,
                              prompt_tokens=args.max_tokens, encoder=args.encoder or "minilm",
                              log=lambda line: print(line, file=sys.stderr))
    verifier.save(args.output)
    info = verifier.info
    print(f"wrote {args.output}: verifier over {info['n_answers']} answers to {info['prompts']} prompts "
          f"(answer tail {verifier.tail_chars} chars); kappa {verifier.kappa:.2f}; inner out-of-fold Brier "
          f"{info['oof_brier']:.4f} (prompt only {info['oof_brier_prompt_only']:.4f})", file=sys.stderr)
    return 0


def _train(args: argparse.Namespace) -> int:
    if args.from_ledger:
        if args.data or args.verifier:
            raise ValueError("--from-ledger learns from the ledger: give no DATA and no --verifier with it")
        from pointsman.learning.commands import train_from_ledger

        return train_from_ledger(args)
    if not args.data:
        raise ValueError("give outcome DATA to train on, or --from-ledger URL to learn from the gateway's traffic")
    if args.verifier:
        return _train_verifier(args)
    from pointsman.training import load_data, train

    data = load_data(args.data, args.prices, progress=True, max_seq_length=args.max_tokens, encoder=args.encoder or "static",
                     aliases=_aliases(args.alias))
    table = data.table
    print(table.summary(), file=sys.stderr)
    predictor = train(data, args.predictor, _anchors(args.anchor), models=args.models)
    predictor.save(args.output)
    print(f"wrote {args.output}: {args.predictor} router over {len(predictor.model_names)} models, {len(table)} prompts", file=sys.stderr)
    return 0


def _route(args: argparse.Namespace) -> int:
    import asyncio

    import orjson

    from pointsman.offline import offline_router, read_prompts

    router, policy = offline_router(args.router, args.config, args.prices)
    overrides = {k: v for k, v in (("lambda", args.lambda_), ("floor", args.floor)) if v is not None}

    async def run() -> None:
        for prompt_id, body in read_prompts(args.prompts):
            line = {"id": prompt_id, **await policy(body, overrides)}
            sys.stdout.buffer.write(orjson.dumps(line) + b"\n")

    asyncio.run(run())
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from pointsman.predictors import load_predictor
    from pointsman.training import knob_curve, load_data, pick_for_floor, pick_for_share

    predictor = load_predictor(args.router)
    from pointsman.embed.registry import encoder_kind

    data = load_data(args.data, args.prices, max_seq_length=int(predictor.info.get("max_seq_length") or 256),
                     encoder=encoder_kind(predictor.info.get("encoder")))
    points = knob_curve(data, predictor, args.confidence)
    n = int(data.table.complete_rows().sum())
    trained_on = set(str(predictor.info.get("trained_on", "")).split("+"))
    same = sorted(trained_on & set(data.table.name.split("+")))
    if same:
        print(f"note: the router was trained on {', '.join(same)}: these numbers are in-sample, calibrate on held-out "
              "outcomes for honest ones", file=sys.stderr)
    if args.strong_share is not None:
        point = pick_for_share(points, args.strong_share)
        if abs(point.top_share - args.strong_share) > 0.05:
            print(f"warning: no knob setting sends {args.strong_share:.1%} of these prompts to the most expensive model; "
                  f"the closest below it sends {point.top_share:.1%}", file=sys.stderr)
        print(f"lambda = {point.lambda_:.4g}: {point.top_share:.1%} of {n} calibration prompts go to the most expensive "
              f"model (target {args.strong_share:.1%}); quality {point.mean_quality:.3f}, cost {point.cost_share:.1%} of "
              f"always using it")
    else:
        floor_point = pick_for_floor(points, args.quality_floor)
        if floor_point is None:
            best = max(points, key=lambda p: p.lower_bound)
            print(f"no setting reaches quality >= {args.quality_floor} with {args.confidence:.0%} confidence on {n} prompts; "
                  f"the best is {best.lower_bound:.3f} (lambda = {best.lambda_:.4g})")
            return 1
        point = floor_point
        print(f"lambda = {point.lambda_:.4g}: quality >= {args.quality_floor} with {args.confidence:.0%} confidence on "
              f"{n} prompts (mean {point.mean_quality:.3f}, lower bound {point.lower_bound:.3f}); cost "
              f"{point.cost_share:.1%} of always using the most expensive model, which gets {point.top_share:.1%} of prompts")
    print(f"policy snippet:\n  semantic: {{router: {args.router}, lambda: {point.lambda_:.4g}}}")
    return 0


def _save_plot(plot: Any, result: dict, path: Any) -> None:
    """The cost-quality PNG, when matplotlib is installed (`pip install 'pointsman[eval]'`)."""
    try:
        plot(result, path)
    except ImportError:
        print(f"no {path.name}: the curve needs matplotlib (pip install 'pointsman[eval]'); tables written", file=sys.stderr)


def _eval_cascade(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from pointsman.evaluation.cascade import evaluate_cascade, plot, prepare, tables
    from pointsman.evaluation.datasets import load_answer_table

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for path in args.data:
        answers = load_answer_table(path, args.prices)
        data = prepare(answers, args.tail_chars, progress=True, router_encoder=args.encoder)
        result = evaluate_cascade(data, folds_k=args.folds, log=lambda line: print(line, file=sys.stderr))
        _save_plot(plot, result, out / f"cascade-{answers.table.name}.png")
        results.append(result)
    markdown = tables(results)
    (out / "cascade.md").write_text(markdown)
    (out / "cascade.json").write_text(json.dumps(results, indent=1, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
    print(markdown)
    return 0


def _eval_cross_source(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from pointsman.evaluation.cross_source import cross_source, load_sources, router_scorer, tables_markdown

    sources = load_sources(args.data, encoder=args.encoder, progress=True)
    if len(sources) < 2:
        raise ValueError("--cross-source needs two or more sources (or a folder holding them, like ../shared/data)")
    extra = {Path(p).name: router_scorer(p) for p in args.router}
    result = cross_source(sources, folds=args.folds, extra=extra, log=lambda line: print(line, file=sys.stderr))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    markdown = tables_markdown(result)
    (out / "cross_source.md").write_text(markdown)
    (out / "cross_source.json").write_text(json.dumps(result, indent=1))
    print(markdown)
    return 0


def _eval(args: argparse.Namespace) -> int:
    if args.cascade:
        return _eval_cascade(args)
    if args.cross_source:
        return _eval_cross_source(args)
    import json
    from pathlib import Path

    from pointsman.evaluation.report import evaluate, plot, tables
    from pointsman.training import load_data, require_costs

    data = load_data(args.data, args.prices, progress=True, encoder=args.encoder)
    table = data.table
    require_costs(table)  # as calibrate does: say what is missing rather than average NaNs into `no points`
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = evaluate(table, data.embeddings, data.features, folds=args.folds, quick=args.quick, log=lambda line: print(line, file=sys.stderr))
    _save_plot(plot, result, out / f"{table.name}.png")
    markdown = tables([result])
    (out / "report.md").write_text(markdown)
    (out / "report.json").write_text(json.dumps(result, indent=1, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
    print(markdown)
    return 0


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """`--help` shows every option's default; an option whose default is absent (None, off, empty) says in its help
    what happens without it, so "(default: None)" would only be noise."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default == []:
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """The `pointsman` parser; its subcommands' parsers are of the same class (argparse's default), so a subcommand
    added anywhere shows its defaults too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="pointsman", description="An OpenAI-compatible LLM routing gateway.")
    parser.add_argument("--version", action="version", version=f"pointsman {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     help="one of these; `pointsman COMMAND --help` lists its options")
    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="pool config (YAML: Pointsman's format or LiteLLM's model_list); "
                                         "default: the local model plus cloud models whose keys are set")
    serve.add_argument("--host", help="address to listen on (default: server.host in the config, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default: server.port in the config, 4000)")
    serve.add_argument("--ledger", help="ledger URL (default: server.ledger_url in the config, sqlite:///pointsman.db: "
                                         "a file in the current directory)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes")
    serve.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"],
                       help="the gateway's log level")
    serve.add_argument("--admin-key-env", metavar="NAME",
                       help="enable the admin API (/admin/*, /health?models=1) with the key held in the environment "
                            "variable NAME (overrides server.admin_key_env; default: the config's, else disabled)")
    serve.add_argument("--log-requests", action="store_true",
                       help="one console line per chat request: id, status, model asked -> model that answered (tier), "
                            "latency, cost (also server.log_requests in the config)")
    serve.set_defaults(handler=_serve)

    check = commands.add_parser("check", help="validate a config (schema, policies, key variables) and probe every "
                                             "model with one tiny request, without serving")
    check.add_argument("--config", help="the pool config (default: the built-in default pool)")
    check.add_argument("--offline", action="store_true", help="do not contact the models")
    check.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each model")
    check.set_defaults(handler=_check)

    data_help = ("outcome data: long-format .jsonl/.csv (prompt, model, score[, answer, input_tokens, output_tokens, cost]), "
                 "a RouteLLM mmlu/ folder or gsm8k_responses.csv, or an arena-bench folder; several are stacked")
    train = commands.add_parser("train", help="train a router on per-prompt outcomes")
    train.add_argument("data", nargs="*", help=data_help)
    train.add_argument("-o", "--output", required=True, help="the router artefact to write (.npz)")
    train.add_argument("--predictor", default="knn", choices=["knn", "linear", "mlp", "mf", "transfer"],
                       help="knn; linear (logistic head); mlp (one hidden layer, 3 members; the best single head on "
                            "MMLU in bench/router); mf (matrix factorisation: N models, new models from few labels); "
                            "transfer (harmonised labels of every source, task-type cues out of distribution: the "
                            "shipped default; bench/router/CROSS_SOURCE.md)")
    train.add_argument("--alias", action="append", default=[], metavar="NAME=CANONICAL",
                       help="one model under two names in two data sets: rename NAME to CANONICAL")
    train.add_argument("--models", nargs="+", metavar="MODEL",
                       help="predict only these models (with transfer, the others still shape the labels)")
    train.add_argument("--prices", help="prices CSV: model,input_usd_per_mtok,output_usd_per_mtok")
    train.add_argument("--anchor", action="append", default=[], metavar="MODEL=PRIOR",
                       help="quality prior (0..1) of a trained model, so the router can place pool models it has not seen")
    train.add_argument("--encoder", default=None, choices=["static", "minilm"],
                       help="prompt embedding the artefact reads: static (the token table distilled from MiniLM, "
                            "~0.1 ms; the default for routers) or minilm (the transformer, ~3-15 ms; the default for "
                            "--verifier); stored in the artefact")
    train.add_argument("--max-tokens", type=int, default=None, metavar="N",
                       help="route on the first N tokens of each prompt (default 512 for static, "
                            "pointsman.embed.encoder.ROUTING_MAX_TOKENS for minilm; for --verifier, the prompt window); "
                            "stored in the artefact")
    train.add_argument("--verifier", action="store_true",
                       help="train a cascade verifier instead: DATA must hold answers (gsm8k_responses.csv, an "
                            "arena-bench folder, or long-format rows with prompt, model, answer, score)")
    train.add_argument("--tail-chars", type=int, default=0,
                       help="verifier: embed the answer's last N characters too (0: answer features only; "
                            "each 4 characters cost about 0.4 ms of encoder time per check)")
    train.add_argument("--alpha", type=float, default=3e-3, help="verifier: L2 strength of its logistic head")
    add_train_options(train)  # --from-ledger and its options (learning/commands.py)
    train.set_defaults(handler=_train)

    route = commands.add_parser("route", help="route prompts offline: predicted quality and cost per model, the choice")
    route.add_argument("prompts", help='JSONL of {"prompt": ...} or {"messages": [...]}')
    route.add_argument("--router", help="a trained router (.npz), or default: the shipped one (default: the shipped "
                                        "router, or with --config the one its default policy names, as the gateway does)")
    route.add_argument("--config", help="pool config: route onto this pool with its policy (default: the router's own models)")
    route.add_argument("--prices", help="prices CSV for the router's own models (without --config)")
    route.add_argument("--lambda", dest="lambda_", type=float, metavar="LAMBDA",
                       help="the knob: predicted quality - lambda x relative price (default: the policy's, else 0.25)")
    route.add_argument("--floor", type=float,
                       help="instead of lambda: the cheapest model whose predicted quality clears this (0..1)")
    route.set_defaults(handler=_route)

    calibrate = commands.add_parser("calibrate", help="set the knob from a calibration set")
    calibrate.add_argument("data", nargs="+", help=data_help)
    calibrate.add_argument("--router", required=True, help="the trained router (.npz) whose knob to set")
    target = calibrate.add_mutually_exclusive_group(required=True)
    target.add_argument("--strong-share", type=float, help="target share of calls to the most expensive model")
    target.add_argument("--quality-floor", type=float, help="mean quality (0..1) to guarantee")
    calibrate.add_argument("--confidence", type=float, default=0.95,
                           help="confidence of the quality floor's lower bound")
    calibrate.add_argument("--prices", help="prices CSV: model,input_usd_per_mtok,output_usd_per_mtok (needed unless "
                                            "the data has costs)")
    calibrate.set_defaults(handler=_calibrate)

    evaluate = commands.add_parser("eval", help="cross-validated router evaluation with baselines; writes a report")
    evaluate.add_argument("data", nargs="+", help=data_help)
    evaluate.add_argument("--folds", type=int, default=5, help="cross-validation folds")
    evaluate.add_argument("--out", default="router-eval", help="folder for the report (markdown, JSON, the curve PNG)")
    evaluate.add_argument("--quick", action="store_true", help="fewer methods, no nested model selection")
    evaluate.add_argument("--prices", help="prices CSV: model,input_usd_per_mtok,output_usd_per_mtok (needed unless "
                                           "the data has costs)")
    evaluate.add_argument("--encoder", default="static", choices=["static", "minilm"],
                          help="the router's prompt embedding, as for train (with --cascade the verifier reads MiniLM)")
    evaluate.add_argument("--cascade", action="store_true",
                          help="compare routing only, cascade only and cascade routing (DATA must hold answers)")
    evaluate.add_argument("--tail-chars", type=int, default=0, help="with --cascade: the verifier's answer-tail window")
    evaluate.add_argument("--cross-source", action="store_true",
                          help="train on every source but one, test on the one left out (each DATA is a source; a folder "
                               "like ../shared/data stands for all its sources): random, length, task-type, kNN and "
                               "the transfer router, with reliability of its confidence; --folds for in-distribution")
    evaluate.add_argument("--router", action="append", default=[], metavar="NPZ",
                          help="with --cross-source: a trained router file to add as a row (e.g. the shipped default)")
    evaluate.set_defaults(handler=_eval)
    add_learning_commands(commands)  # promote, rollback, drift (learning/commands.py)
    add_spend_command(commands)  # spend (accounting/cli.py)
    add_audit_command(commands)  # audit (observability/commands.py)
    add_guard_command(commands)  # guard (guards/commands.py)
    add_account_commands(commands)  # keys, budgets (accounting/commands.py)
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper(), logging.WARNING) if hasattr(args, "log_level") else logging.WARNING)
    try:
        return int(args.handler(args))
    except (ValueError, FileNotFoundError) as exc:  # bad data or arguments: a message, not a traceback
        print(f"pointsman {args.command}: {exc}", file=sys.stderr)
        return 2
    except LedgerUnavailable as exc:  # keys, budgets, spend: a ledger URL that does not open
        from urllib.parse import urlsplit

        password = urlsplit(exc.url).password  # a driver's message should not carry it; if one does, it is hidden
        reason = str(exc).replace(password, "***") if password else str(exc)
        print(f"pointsman {args.command}: cannot open the ledger {without_password(exc.url)}: {reason}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:  # a training-only dependency (scipy: the train extra)
        print(f"pointsman {args.command}: needs the {exc.name} package: pip install 'pointsman[train]'", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `pointsman route ... | head`: the reader is done
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
