"""The schemathesis check shared by the fuzz test and bench/fuzz: no 5xx that the gateway made itself."""

from __future__ import annotations

import schemathesis


def upstream_made(response) -> bool:
    """A 5xx the upstream caused (it answered 5xx itself), not one the gateway made."""
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return response.status_code == 502 and error.get("code") == "upstream_error" and "upstream 500" in error.get("message", "")


@schemathesis.check
def no_gateway_server_error(ctx, response, case) -> None:
    if response.status_code >= 500 and not upstream_made(response):
        raise AssertionError(f"the gateway answered {response.status_code}: {response.text[:500]}")
