"""The `pointsman` command: `serve` today; `train`, `route`, `eval` and `calibrate` join it."""

from __future__ import annotations

import argparse
import logging
import sys

from pointsman import __version__


def _serve(args: argparse.Namespace) -> int:
    import os

    import uvicorn

    from pointsman.app.factory import CONFIG_ENV, LEDGER_ENV, config_from_env
    from pointsman.app.server import Gateway
    from pointsman.config.loader import ConfigError

    # Workers build their gateway from the environment; the parent checks the same config first.
    if args.config:
        os.environ[CONFIG_ENV] = os.path.abspath(args.config)
    if args.ledger:
        os.environ[LEDGER_ENV] = args.ledger
    try:
        config = config_from_env()
        gateway = Gateway(config)
    except (ConfigError, ValueError) as exc:
        print(f"pointsman: {exc}", file=sys.stderr)
        return 2
    host = args.host or config.server.host
    port = args.port or config.server.port
    print(f"pointsman {__version__}: {len(config.models)} model(s): {', '.join(gateway.pool.by_price)}", file=sys.stderr)
    print(f"  policies: {', '.join('router/' + p for p in gateway.router.policies)} (model=\"auto\" = "
          f"router/{config.server.default_policy}); ledger: {config.server.ledger_url}", file=sys.stderr)
    print(f"  OpenAI base URL: http://{host}:{port}/v1" + (f" ({args.workers} workers)" if args.workers > 1 else ""),
          file=sys.stderr)
    options = dict(host=host, port=port, loop="uvloop", http="httptools", lifespan="on", access_log=False,
                   log_level=args.log_level, timeout_graceful_shutdown=30, proxy_headers=False, server_header=False)
    if args.workers > 1:
        # Each worker is a process with its own pool, breakers and ledger writer (SQLite in WAL mode
        # takes their batches in turn).
        uvicorn.run("pointsman.app.factory:create_app", factory=True, workers=args.workers, **options)
    else:
        uvicorn.run(gateway, **options)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pointsman", description="An OpenAI-compatible LLM routing gateway.")
    parser.add_argument("--version", action="version", version=f"pointsman {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="pool config (YAML: Pointsman's format or LiteLLM's model_list); "
                                         "default: the local model plus cloud models whose keys are set")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--ledger", help="ledger URL, e.g. sqlite:///pointsman.db (overrides the config)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    serve.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(handler=_serve)
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper(), logging.WARNING) if hasattr(args, "log_level") else logging.WARNING)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
