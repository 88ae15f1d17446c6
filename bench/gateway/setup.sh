#!/usr/bin/env bash
# Idempotent install of everything bench/gateway/run.py needs besides the main venv:
#   - wrk (Debian package): the load generator (C, epoll, Lua-scripted POST bodies)
#   - LiteLLM proxy 1.108.7 in its own venv bench/.venv-litellm (no database)
#   - Portkey gateway 1.15.2 from npm into bench/gateway/node_modules
# Usage: bash bench/gateway/setup.sh      (re-running is a no-op when all is in place)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BENCH="$(dirname "$HERE")"
LITELLM_VERSION=1.108.7
PORTKEY_VERSION=1.15.2
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3

# 1. load generator
if ! command -v wrk >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq wrk
fi
echo "wrk: $(command -v wrk)"

# 2. LiteLLM proxy in its own venv
VENV="$BENCH/.venv-litellm"
if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('litellm') != '$LITELLM_VERSION')" 2>/dev/null; then
    [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip 2>&1 | { grep -v "^WARNING: Location" || true; }
    "$VENV/bin/pip" install -q "litellm[proxy]==$LITELLM_VERSION" 2>&1 | { grep -v "^WARNING: Location" || true; }
fi
echo "litellm: $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))')"

# 3. Portkey gateway (pinned in package.json; package-lock.json pins the rest of its tree)
PK="$HERE/node_modules/@portkey-ai/gateway/package.json"
if [ ! -f "$PK" ] || [ "$(node -p "require('$PK').version")" != "$PORTKEY_VERSION" ]; then
    (cd "$HERE" && npm install --no-audit --no-fund --loglevel=error)
fi
echo "portkey: $(node -p "require('$PK').version")"
