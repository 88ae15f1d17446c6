"""Security: secrets never leak (logs at debug level, ledger, error bodies, response headers), admin paths
need the admin key, limits apply before authentication, and no request can move the gateway's upstream.

(The response cache's tenant isolation is tested with the cache, in its own issue.)"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.conftest import ledger_rows, model
from tests.servers import UpstreamServer, free_port

PROVIDER_KEY = "sk-provider-openai-7f3a9c1e55d04b2a"
ANTHROPIC_KEY = "sk-ant-provider-0b8e44d2c6a9f317"
CLIENT_KEY = "sk-client-2d9e61f0a4c7b853"
ADMIN_KEY = "sk-admin-94c1e7a03b5d2f68"
SECRETS = (PROVIDER_KEY, ANTHROPIC_KEY, CLIENT_KEY, ADMIN_KEY)
SERVER_PY = Path(__file__).resolve().parents[1] / "src" / "pointsman" / "app" / "server.py"


class _KeyEchoingUpstream(BaseHTTPRequestHandler):
    """An upstream that rejects the key and quotes it back in full in its error (some providers do)."""

    seen: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("content-length") or 0))
        key = self.headers.get("authorization") or self.headers.get("x-api-key") or ""
        self.seen.append(key)
        body = json.dumps({"error": {"message": f"Incorrect API key provided: {key}", "type": "invalid_request_error"}}).encode()
        self.send_response(401)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def key_echoing_upstream():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _KeyEchoingUpstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_secrets_appear_in_no_log_ledger_error_or_header(tmp_path, upstream, key_echoing_upstream):
    """`pointsman serve --log-level debug` as a real process: normal answers, streams, upstream 401s (one
    upstream quoting the key back), connection errors, validation errors, bad client keys, admin refusals."""
    db = tmp_path / "ledger.db"
    echo_url = key_echoing_upstream
    (tmp_path / "pointsman.yaml").write_text(f"""
models:
  - {{name: ok, provider: openai, base_url: "{upstream.url}/v1", model: echo, api_key_env: PM_SEC_OPENAI}}
  - {{name: claude, provider: anthropic, base_url: "{upstream.url}", model: echo, api_key_env: PM_SEC_ANTHROPIC}}
  - {{name: refused, provider: openai, base_url: "{upstream.url}/v1", model: "status:401", api_key_env: PM_SEC_OPENAI, max_retries: 1}}
  - {{name: quoting, provider: openai, base_url: "{echo_url}/v1", api_key_env: PM_SEC_OPENAI, max_retries: 1}}
  - {{name: quoting-claude, provider: anthropic, base_url: "{echo_url}", api_key_env: PM_SEC_ANTHROPIC, max_retries: 0}}
  - {{name: nowhere, provider: openai, base_url: "http://127.0.0.1:{free_port()}/v1", api_key_env: PM_SEC_OPENAI, max_retries: 1}}
policies:
  fallback: {{default: quoting, fallbacks: [ok]}}
server:
  ledger_url: "sqlite:///{db}"
  ledger_flush_interval_s: 0.05
  api_keys_env: [PM_SEC_CLIENT]
  admin_key_env: PM_SEC_ADMIN
  retry_backoff_s: 0.01
""")
    port = free_port()
    env = {**os.environ, "PM_SEC_OPENAI": PROVIDER_KEY, "PM_SEC_ANTHROPIC": ANTHROPIC_KEY, "PM_SEC_CLIENT": CLIENT_KEY,
           "PM_SEC_ADMIN": ADMIN_KEY, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "pointsman.cli", "serve", "--config", "pointsman.yaml", "--port", str(port),
                                "--log-level", "debug"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    responses: list[httpx.Response] = []
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "pointsman serve did not start"
            time.sleep(0.05)
        auth = {"authorization": f"Bearer {CLIENT_KEY}"}
        with httpx.Client(base_url=url, timeout=20) as client:
            def chat(body, headers=auth):
                responses.append(client.post("/v1/chat/completions", json=body, headers=headers))
                return responses[-1]

            for name in ("ok", "claude", "refused", "quoting", "quoting-claude", "nowhere", "router/fallback"):
                for stream in (False, True):
                    chat({"model": name, "stream": stream, "messages": [{"role": "user", "content": "hello"}]})
            chat({"model": "ok", "messages": [{"role": "wizard", "content": "x"}]})  # validation error
            chat({"model": "ok", "messages": [{"role": "user", "content": "x"}], "temperature": PROVIDER_KEY})  # echoes input
            chat({"model": "ok", "messages": [{"role": "user", "content": "x"}]}, {"authorization": "Bearer sk-wrong"})
            chat({"model": "ok", "messages": [{"role": "user", "content": "x"}]}, {"x-api-key": "sk-wrong"})
            responses.append(client.post("/v1/chat/completions", content=b"{not json", headers=auth))
            responses.append(client.get("/v1/models", headers=auth))
            responses.append(client.get("/admin/models", headers=auth))
            responses.append(client.get("/admin/models", headers={"authorization": f"Bearer {ADMIN_KEY}"}))
            responses.append(client.get("/openapi.json"))
        process.send_signal(signal.SIGINT)
        logs = process.communicate(timeout=30)[0].decode("utf-8", "replace")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    statuses = [r.status_code for r in responses]
    assert statuses[:2] == [200, 200] and 502 in statuses and 400 in statuses and 401 in statuses and 403 in statuses
    assert responses[6].status_code == 502 and "[redacted]" in responses[6].json()["error"]["message"]  # quoting, JSON
    assert all(r.status_code == 200 for r in responses[12:14])  # router/fallback: `quoting` fails, `ok` answers
    assert PROVIDER_KEY in " ".join(_KeyEchoingUpstream.seen) and ANTHROPIC_KEY in " ".join(_KeyEchoingUpstream.seen)
    assert "Application startup complete" in logs and "Finished server process" in logs  # the whole log was captured
    ledger = "\n".join(sqlite3.connect(db).iterdump())
    assert "upstream_auth_error" in ledger and "[redacted]" in ledger
    files = b"".join(p.read_bytes() for p in tmp_path.glob("ledger.db*"))
    for secret in SECRETS:
        assert secret not in logs, f"{secret} in the log"
        assert secret not in ledger and secret.encode() not in files, f"{secret} in the ledger"
        for response in responses:
            where = f"{response.request.method} {response.request.url.path} -> {response.status_code}"
            assert secret not in response.text, f"{secret} in the body of {where}"
            assert secret not in str(response.headers.raw), f"{secret} in the headers of {where}"


def test_a_fallback_after_a_key_quoting_failure_keeps_the_key_out_of_the_ledger(make_gateway, upstream, key_echoing_upstream):
    from tests.conftest import API_KEY_ENV, UPSTREAM_SECRET

    quoting = {"name": "quoting", "provider": "openai", "base_url": f"{key_echoing_upstream}/v1", "api_key_env": API_KEY_ENV,
               "max_retries": 0}
    gw = make_gateway({"models": [quoting, model("ok", upstream, prices={"input": 1})]})
    answer = httpx.post(f"{gw.base_url}/chat/completions", json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]})
    assert answer.status_code == 200 and answer.headers["x-pointsman-model"] == "ok"
    row = ledger_rows(gw)[-1]
    assert "[redacted]" in row["attempts"] and UPSTREAM_SECRET not in json.dumps(row)


# -- admin --------------------------------------------------------------------------------------------------------
def admin_routes() -> list[tuple[str, str]]:
    """Every admin path the server routes, read from its source, so a new one is covered the day it lands."""
    routes = re.findall(r'path == "(/admin/[^"]+)" and method == "([A-Z]+)"', SERVER_PY.read_text())
    assert ("/admin/models", "GET") in routes
    return routes


@pytest.fixture
def keyed(make_gateway, upstream, monkeypatch):
    monkeypatch.setenv("PM_SEC_CLIENT", CLIENT_KEY)
    monkeypatch.setenv("PM_SEC_ADMIN", ADMIN_KEY)
    return make_gateway({"models": [model("m", upstream)],
                         "server": {"api_keys_env": ["PM_SEC_CLIENT"], "admin_key_env": "PM_SEC_ADMIN"}})


@pytest.mark.parametrize("path, method", admin_routes())
def test_every_admin_route_requires_the_admin_key(keyed, path, method):
    url = f"{keyed.url}{path}"
    for headers, status in [({}, 401), ({"authorization": "Bearer"}, 401), ({"authorization": f"Basic {ADMIN_KEY}"}, 401),
                            ({"authorization": f"Bearer {CLIENT_KEY}"}, 403), ({"x-api-key": CLIENT_KEY}, 403),
                            ({"authorization": "Bearer sk-nope"}, 403), ({"authorization": f"Bearer {ADMIN_KEY[:-1]}"}, 403)]:
        response = httpx.request(method, url, headers=headers)
        assert response.status_code == status, (headers, response.text)
        assert response.json()["error"]["code"] in ("missing_api_key", "forbidden")
    allowed = httpx.request(method, url, headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert allowed.status_code not in (401, 403), allowed.text


@pytest.mark.parametrize("path, method", admin_routes())
def test_admin_routes_are_closed_when_no_admin_key_is_configured(make_gateway, upstream, monkeypatch, path, method):
    monkeypatch.setenv("PM_SEC_CLIENT", CLIENT_KEY)
    gw = make_gateway({"models": [model("m", upstream)], "server": {"api_keys_env": ["PM_SEC_CLIENT"]}})
    assert httpx.request(method, f"{gw.url}{path}").status_code == 401
    assert httpx.request(method, f"{gw.url}{path}", headers={"authorization": f"Bearer {CLIENT_KEY}"}).status_code == 403
    open_gw = make_gateway({"models": [model("m", upstream)]})  # no keys at all: still no admin
    assert httpx.request(method, f"{open_gw.url}{path}", headers={"authorization": "Bearer anything"}).status_code == 403


LOOKALIKES = ["/admin", "/admin/", "/admin/models/", "/ADMIN/models", "//admin/models", "/admin//models", "/admin/models/../models",
              "/admin/%6dodels", "/admin/models%00", "/v1/../admin/models", "/admin/models;x", "/admin/router/reload/",
              "/admin/models?x=1", "/admin/models#x"]


def test_no_admin_lookalike_path_answers_to_a_client_key(keyed):
    """Paths as written on the wire (no client-side normalisation), every method: never a 2xx, never a 500."""
    answers = {}
    for path in LOOKALIKES:
        for method in ("GET", "POST", "PUT", "DELETE"):
            with socket.create_connection(("127.0.0.1", keyed.port), timeout=5) as sock:
                sock.sendall(f"{method} {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {CLIENT_KEY}\r\n"
                             f"content-length: 0\r\nconnection: close\r\n\r\n".encode())
                answers[method, path] = int(sock.recv(65536).split(b"\r\n", 1)[0].split()[1])
    assert all(400 <= status < 500 for status in answers.values()), answers
    assert answers["GET", "/admin/%6dodels"] == 403 and answers["GET", "/admin/models?x=1"] == 403  # decoded: the real route


# -- limits before authentication -----------------------------------------------------------------------------------
def test_limits_apply_before_the_key_is_checked(keyed):
    """An unauthenticated client cannot make the gateway read a large body, nor use huge headers."""
    started = time.monotonic()
    big = httpx.post(f"{keyed.base_url}/chat/completions", content=b"x" * 10_000_000, timeout=10)
    assert big.status_code in (401, 413) and time.monotonic() - started < 5
    huge = httpx.post(f"{keyed.base_url}/chat/completions", json={}, headers={"x-pad": "p" * 100_000})
    assert huge.status_code == 431
    many = httpx.get(f"{keyed.url}/admin/models", headers={f"x-h{i}": "1" for i in range(150)})
    assert many.status_code == 431


# -- no per-request upstream override (SSRF) ------------------------------------------------------------------------
@pytest.fixture
def trap():
    """A listener that counts every connection made to it: the upstream an attacker would like to reach."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.settimeout(0.1)
    hits: list[bytes] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            conn.settimeout(0.5)
            try:
                hits.append(conn.recv(4096))
            except OSError:
                hits.append(b"")
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", hits
    stop.set()
    thread.join(2)
    sock.close()


def test_no_request_field_or_header_moves_the_upstream(make_gateway, upstream, trap):
    trap_url, hits = trap
    gw = make_gateway({"models": [model("m", upstream)]})
    calls_before = upstream.stats()["counts"]
    overrides = {"base_url": f"{trap_url}/v1", "api_base": f"{trap_url}/v1", "baseURL": trap_url, "api_url": trap_url,
                 "endpoint": trap_url, "url": trap_url, "extra_headers": {"host": trap_url[7:]},
                 "headers": {"x-forwarded-host": trap_url[7:]}, "extra_body": {"base_url": trap_url},
                 "custom_llm_provider": "openai", "api_key": "sk-attacker", "litellm_params": {"api_base": trap_url}}
    headers = {"x-pointsman-base-url": trap_url, "x-base-url": trap_url, "x-api-base": trap_url, "x-forwarded-host": trap_url[7:],
               "forwarded": f"host={trap_url[7:]}", "x-forwarded-proto": "http", "x-original-url": trap_url,
               "x-rewrite-url": trap_url, "authorization": "Bearer sk-attacker", "openai-organization": "org-attacker"}
    for stream in (False, True):
        response = httpx.post(f"{gw.base_url}/chat/completions", headers=headers,
                              json={"model": "m", "stream": stream, "messages": [{"role": "user", "content": "hi"}], **overrides})
        assert response.status_code == 200, response.text
    for name in (f"{trap_url}/v1", f"openai/{trap_url}", trap_url[7:], "m@" + trap_url[7:]):
        assert httpx.post(f"{gw.base_url}/chat/completions", json={"model": name, "messages": [{"role": "user", "content": "x"}]}).status_code == 404
    time.sleep(0.3)
    assert hits == []
    seen = upstream.stats()
    assert {k: v - calls_before.get(k, 0) for k, v in seen["counts"].items() if v != calls_before.get(k, 0)} == {"echo": 2}
    sent = seen["last_headers"]
    assert sent["authorization"].endswith("sk-upstream-secret-do-not-leak-8c1f")  # the gateway's key, not the client's
    assert sent["host"] == f"127.0.0.1:{upstream.port}"
    assert not {h for h in sent if h.startswith(("x-pointsman", "x-forwarded", "forwarded", "x-original", "x-rewrite",
                                                 "openai-organization", "x-base", "x-api-base"))}


def test_an_upstream_redirect_is_not_followed(make_gateway, trap):
    """An upstream answering 30x towards another host is an error, not a hop (no SSRF through redirects)."""
    trap_url, hits = trap

    class Redirect(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(307)
            self.send_header("location", f"{trap_url}/v1/chat/completions")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        gw = make_gateway({"models": [{"name": "m", "provider": "openai", "base_url": f"http://127.0.0.1:{server.server_port}/v1",
                                       "max_retries": 0}]})
        response = httpx.post(f"{gw.base_url}/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "x"}]})
        assert response.status_code in (400, 502) and response.json()["error"]["message"]
        time.sleep(0.3)
        assert hits == []
    finally:
        server.shutdown()
        server.server_close()


def test_second_upstream_server_is_untouched_by_model_names(make_gateway, upstream):
    """A second, real upstream reachable on loopback is never called unless a pool model points at it."""
    other = UpstreamServer().start()
    try:
        gw = make_gateway({"models": [model("m", upstream)]})
        for name in (f"{other.url}/v1", f"{other.url}", "echo", "status:500"):
            httpx.post(f"{gw.base_url}/chat/completions", json={"model": name, "base_url": f"{other.url}/v1",
                                                                 "messages": [{"role": "user", "content": "x"}]})
        assert other.stats()["counts"] == {}
    finally:
        other.stop()


# -- secrets in answers, short keys, URL credentials (issue 15: each failed before the fix) ----------------------

def test_a_key_an_upstream_puts_in_a_200_answer_is_redacted(make_gateway, upstream):
    import httpx

    from tests.conftest import UPSTREAM_SECRET, ledger_rows, model

    gw = make_gateway({"models": [model("m", upstream, "leak-key")],
                       "server": {"cache": {"enabled": True, "semantic": False}}})
    for stream in (False, True):
        body = {"model": "m", "temperature": 0, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
        response = httpx.post(f"{gw.base_url}/chat/completions", json=body)
        assert response.status_code == 200 and UPSTREAM_SECRET not in response.text
        assert "[redacted]" in response.text
    cached = httpx.post(f"{gw.base_url}/chat/completions", json={**body, "stream": False})
    assert cached.headers.get("x-pointsman-cache") == "hit-exact" and UPSTREAM_SECRET not in cached.text
    assert UPSTREAM_SECRET not in str(ledger_rows(gw))


def test_a_short_key_is_redacted_as_a_whole_token(make_gateway, upstream, monkeypatch):
    import httpx

    from tests.conftest import API_KEY_ENV, model

    monkeypatch.setenv(API_KEY_ENV, "k3y9")  # a local server's toy key: shorter than 8 characters
    gw = make_gateway({"models": [model("m", upstream, "leak-key")]})
    text = httpx.post(f"{gw.base_url}/chat/completions",
                      json={"model": "m", "messages": [{"role": "user", "content": "hi"}]}).json()["choices"][0]["message"]["content"]
    assert "k3y9" not in text.split() and "[redacted]" in text


def test_credentials_in_an_upstream_url_reach_neither_client_nor_ledger(make_gateway, upstream):
    import httpx

    from tests.conftest import ledger_rows, model
    from tests.servers import free_port

    secret = "sig-0a1b2c3d4e5f6a7b"
    gw = make_gateway({"models": [{**model("m", upstream, max_retries=0), "connect_timeout_s": 1,
                                   "base_url": f"http://user:pa55w0rd-long@127.0.0.1:{free_port()}/v1?api-key={secret}"}]})
    response = httpx.post(f"{gw.base_url}/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 502
    for shown in (response.text, str(ledger_rows(gw))):
        assert secret not in shown and "pa55w0rd-long" not in shown


def test_url_secrets_and_the_redactor():
    from pointsman.app.secrets import Redactor, url_secrets

    assert set(url_secrets("https://u:pw@h/v1?key=a%2Bb&x=1")) >= {"pw", "a%2Bb", "a+b", "1"}
    redactor = Redactor(["sk-live-0123456789", "abc"])
    assert redactor.text("key sk-live-0123456789 and abc, not abcdef") == "key [redacted] and [redacted], not abcdef"
    assert redactor.body(b'{"c":"sk-live-0123456789"}') == b'{"c":"[redacted]"}'
    assert not Redactor([None, ""])
