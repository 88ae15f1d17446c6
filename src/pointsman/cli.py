"""The `pointsman` command: `serve` today; `train`, `route`, `eval` and `calibrate` join it."""

from __future__ import annotations

import argparse
import logging
import sys

from pointsman import __version__


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from pointsman.app.server import Gateway
    from pointsman.config.defaults import default_config
    from pointsman.config.loader import ConfigError, load_config

    try:
        config = load_config(args.config) if args.config else default_config()
        if args.ledger:
            config.server.ledger_url = args.ledger
        gateway = Gateway(config)
    except (ConfigError, ValueError) as exc:
        print(f"pointsman: {exc}", file=sys.stderr)
        return 2
    host = args.host or config.server.host
    port = args.port or config.server.port
    print(f"pointsman {__version__}: {len(config.models)} model(s): {', '.join(gateway.pool.by_price)}", file=sys.stderr)
    print(f"  policies: {', '.join('router/' + p for p in gateway.router.policies)} (model=\"auto\" = "
          f"router/{config.server.default_policy}); ledger: {config.server.ledger_url}", file=sys.stderr)
    print(f"  OpenAI base URL: http://{host}:{port}/v1", file=sys.stderr)
    uvicorn.run(gateway, host=host, port=port, loop="uvloop", http="httptools", lifespan="on",
                access_log=False, log_level=args.log_level, timeout_graceful_shutdown=30,
                proxy_headers=False, server_header=False)
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
    serve.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(handler=_serve)
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper(), logging.WARNING) if hasattr(args, "log_level") else logging.WARNING)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
