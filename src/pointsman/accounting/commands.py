"""`pointsman keys create|list|rotate|revoke` and `pointsman budgets set|remove|list|reconcile`.

They work on the ledger's database directly (the config's ``server.ledger_url``, or ``--ledger``), so they need no
running gateway; running replicas pick every change up within ``server.limits.keys_refresh_s``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
from collections.abc import Callable
from typing import Any, TypeVar, cast

from pointsman.accounting.keys import METRICS, SCOPES, KeyStore, Limit, Scope, key_store_from_url

__all__ = ["LedgerUnavailable", "add_commands", "opened"]

T = TypeVar("T")


class LedgerUnavailable(Exception):
    """The ledger's database could not be opened; `pointsman` says so in one line (URL without its password)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(reason)
        self.url = url


def opened(url: str, open_: Callable[[], T]) -> T:
    """``open_()``, whose database errors (a missing folder, a refused connection) become LedgerUnavailable."""
    import sqlite3

    errors: tuple[type[BaseException], ...] = (sqlite3.Error,)
    try:
        import psycopg

        errors += (psycopg.Error,)
    except ImportError:  # the postgres extra is not installed: only SQLite URLs open
        pass
    try:
        return open_()
    except errors as exc:
        raise LedgerUnavailable(url, " ".join(str(exc).split()) or type(exc).__name__) from exc


def _config(args: argparse.Namespace) -> Any:
    from pointsman.config.defaults import default_config
    from pointsman.config.loader import load_config

    return load_config(args.config) if args.config else default_config()


def _store(args: argparse.Namespace) -> KeyStore:
    url = args.ledger or _config(args).server.ledger_url
    return opened(url, lambda: key_store_from_url(url))


def _when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ") if ts else "-"


def _limit_values(args: argparse.Namespace) -> dict[str, Any]:
    return {metric: getattr(args, metric) for metric in METRICS}


def _keys(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        if args.action == "create":
            expires = dt.datetime.fromisoformat(args.expires).replace(tzinfo=dt.timezone.utc).timestamp() if args.expires else None
            key, secret = store.create_key(name=args.name, user=args.user, team=args.team, cohort=args.cohort,
                                           allow_cohort_header=args.allow_cohort_header, expires=expires)
            values = _limit_values(args)
            if any(v is not None for v in values.values()):
                store.set_limit(Limit("key", key.id, "", **values))
            print(f"created {key.id} (team {key.team or '-'}, cohort {key.cohort or '-'})")
            print(f"key: {secret}")
            print("  shown once: store it now; only its hash is kept")
        elif args.action == "list":
            keys = store.list_keys()
            if args.json:
                print(json.dumps([k.public() for k in keys], indent=1))
            for k in [] if args.json else keys:
                state = f"revoked {_when(k.revoked)}" if k.revoked else f"expires {_when(k.expires)}" if k.expires else "active"
                print(f"{k.id}  {k.prefix}…  name={k.name or '-'} user={k.user or '-'} team={k.team or '-'} "
                      f"cohort={k.cohort or '-'}{' (header may override)' if k.allow_cohort_header else ''}  {state}")
        elif args.action == "rotate":
            rotated = store.rotate_key(args.id, args.grace_s)
            if rotated is None:
                print(f"pointsman keys: no active key {args.id}")
                return 1
            print(f"rotated {rotated[0].id}" + (f" (the old key works {args.grace_s:g} s more)" if args.grace_s else ""))
            print(f"key: {rotated[1]}")
        else:  # revoke
            if store.revoke_key(args.id) is None:
                print(f"pointsman keys: no active key {args.id}")
                return 1
            print(f"revoked {args.id}: every replica refuses it within server.limits.keys_refresh_s")
        return 0
    finally:
        store.close()


def _budgets(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        if args.action == "set":
            values = _limit_values(args)
            if all(v is None for v in values.values()):
                raise ValueError("give at least one of --requests-per-minute, --tokens-per-minute, --usd-per-day, "
                                 "--usd-per-month (`budgets remove` removes a limit)")
            limit = store.set_limit(Limit(cast(Scope, args.scope), args.name, args.model or "", **values))
            print(f"set: {limit.label()} " + ", ".join(f"{m}={getattr(limit, m)}" for m in METRICS if getattr(limit, m) is not None))
        elif args.action == "remove":
            if not store.remove_limit(args.scope, args.name, args.model or ""):
                print(f"pointsman budgets: no limit on {args.scope} {args.name!r}")
                return 1
            print(f"removed the limit on {args.scope} {args.name!r}")
        elif args.action == "list":
            limits = store.list_limits()
            if args.json:
                print(json.dumps([lim.public() for lim in limits], indent=1))
            for lim in [] if args.json else limits:
                print(f"{lim.scope:6} {lim.name:24} {lim.model or '*':12} " + "  ".join(
                    f"{m}={getattr(lim, m)}" for m in METRICS if getattr(lim, m) is not None))
        else:  # reconcile
            return _reconcile(args, store)
        return 0
    finally:
        store.close()


def _reconcile(args: argparse.Namespace, store: KeyStore) -> int:
    """The USD counters of the current day and month set from the ledger (plus open reservations)."""
    from pointsman.accounting.directory import KeyDirectory
    from pointsman.accounting.limits import Budgets

    config = _config(args)
    if args.limits_store:
        config.server.limits.store = args.limits_store

    async def run() -> list[dict[str, Any]]:
        directory = KeyDirectory(lambda: store, refresh_s=0)
        directory.store = store
        await directory.refresh()
        budgets = Budgets(config.server.limits, directory, cast(Any, {}))
        try:
            return await budgets.reconcile(directory.all_limits())
        finally:
            await budgets.counters.close()

    for row in asyncio.run(run()):
        print(f"{row['scope']} {row['name']!r}{' on ' + row['model'] if row['model'] else ''} {row['metric']}: "
              f"ledger {row['ledger_usd']:.6f} USD -> counter {row['counter_usd']:.6f} USD")
    if config.server.limits.store == "memory":
        print("note: server.limits.store is memory: each gateway process reconciles its own counters when it starts")
    return 0


def add_commands(commands: Any) -> None:
    where = dict(help="the gateway's config, for server.ledger_url (default: the built-in default)")
    keys = commands.add_parser("keys", help="virtual keys: create, list, rotate, revoke (in the ledger's database)")
    key_actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION",
                                      help="create, list, rotate or revoke")
    create = key_actions.add_parser("create", help="a new key; its secret is printed once")
    for name in ("name", "user", "team", "cohort"):
        create.add_argument(f"--{name}", help=f"the key's {name} (key metadata: ledger rows and budgets use it)")
    create.add_argument("--allow-cohort-header", action="store_true",
                        help="let x-pointsman-cohort replace the key's cohort (a customer tagging its own cohorts)")
    create.add_argument("--expires", help="UTC date (and time) the key stops working, ISO form")
    _limit_options(create, "on this key")
    listing = key_actions.add_parser("list", help="every key, revoked ones included; never a secret")
    listing.add_argument("--json", action="store_true")
    rotate = key_actions.add_parser("rotate", help="a new secret for the same key (its id, budgets and history stay)")
    rotate.add_argument("id")
    rotate.add_argument("--grace-s", type=float, default=0.0, help="how long the old secret keeps working (default 0)")
    revoke = key_actions.add_parser("revoke", help="refuse the key from now on (every replica within keys_refresh_s)")
    revoke.add_argument("id")
    for sub in (create, listing, rotate, revoke):
        sub.add_argument("--config", **where)
        sub.add_argument("--ledger", help="the ledger's URL (default: the config's server.ledger_url)")
    keys.set_defaults(handler=_keys)

    budgets = commands.add_parser("budgets", help="budgets and rate limits on keys, teams, cohorts and models")
    actions = budgets.add_subparsers(dest="action", required=True, metavar="ACTION",
                                     help="set, remove, list or reconcile")
    set_ = actions.add_parser("set", help="set (replace) the limit of a scope; a metric left out is unlimited")
    remove = actions.add_parser("remove", help="remove the limit of a scope")
    for sub in (set_, remove):
        sub.add_argument("--scope", required=True, choices=SCOPES)
        sub.add_argument("--name", required=True, help="the key id (vk_...), team, cohort or model")
        sub.add_argument("--model", help="only requests routed to this model (default: every model)")
    _limit_options(set_, "")
    listing = actions.add_parser("list", help="every limit")
    listing.add_argument("--json", action="store_true")
    reconcile = actions.add_parser("reconcile", help="set today's and this month's USD counters from the ledger "
                                                     "(after Redis lost them); run on quiet traffic")
    reconcile.add_argument("--limits-store", help="redis://... (default: the config's server.limits.store)")
    for sub in (set_, remove, listing, reconcile):
        sub.add_argument("--config", **where)
        sub.add_argument("--ledger", help="the ledger's URL (default: the config's server.ledger_url)")
    budgets.set_defaults(handler=_budgets)


def _limit_options(parser: argparse.ArgumentParser, where: str) -> None:
    parser.add_argument("--requests-per-minute", type=int, dest="requests_per_minute", help=f"requests a minute {where}")
    parser.add_argument("--tokens-per-minute", type=int, dest="tokens_per_minute", help=f"tokens a minute {where}")
    parser.add_argument("--usd-per-day", type=float, dest="usd_per_day", help=f"USD a UTC day {where}")
    parser.add_argument("--usd-per-month", type=float, dest="usd_per_month", help=f"USD a UTC month {where}")
