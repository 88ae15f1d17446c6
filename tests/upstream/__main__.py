"""Run the test upstream: `python -m tests.upstream --port 9100` (from the repository's root)."""

import argparse

from aiohttp import web

from tests.upstream.server import make_app

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, default=9100)
args = parser.parse_args()
try:
    import uvloop

    uvloop.install()
except ImportError:
    pass
web.run_app(make_app(), host=args.host, port=args.port, access_log=None, print=None)
