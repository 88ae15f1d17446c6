"""Build the gateway from the environment: how each worker process of `serve --workers N` starts."""

from __future__ import annotations

import os

from pointsman.app.server import Gateway
from pointsman.config.defaults import default_config
from pointsman.config.loader import load_config
from pointsman.config.schema import Config

CONFIG_ENV = "POINTSMAN_CONFIG"
LEDGER_ENV = "POINTSMAN_LEDGER_URL"
LOG_REQUESTS_ENV = "POINTSMAN_LOG_REQUESTS"
ADMIN_KEY_ENV = "POINTSMAN_ADMIN_KEY_ENV"  # `serve --admin-key-env NAME`: the variable holding the admin key


def config_from_env() -> Config:
    path = os.environ.get(CONFIG_ENV)
    config = load_config(path) if path else default_config()
    if os.environ.get(LEDGER_ENV):
        config.server.ledger_url = os.environ[LEDGER_ENV]
    if os.environ.get(LOG_REQUESTS_ENV) == "1":
        config.server.log_requests = True
    if os.environ.get(ADMIN_KEY_ENV):
        config.server.admin_key_env = os.environ[ADMIN_KEY_ENV]
    return config


def create_app() -> Gateway:
    return Gateway(config_from_env())
