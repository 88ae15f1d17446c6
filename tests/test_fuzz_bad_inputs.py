"""Hand-written bad inputs beyond test_errors.py: invalid UTF-8 inside strings, nesting that parses but
cannot be forwarded, 10 MB bodies, wrong types for every field, empty and unknown messages, huge and
too many headers, a body that never finishes, request-smuggling framings. Each gets a clean 4xx (an
OpenAI-style error when the gateway answers, uvicorn's 400 when the HTTP framing itself is refused),
never a 5xx or a hang, and the gateway stays healthy."""

from __future__ import annotations

import json
import socket
import time

import httpx
import msgspec
import pytest

from pointsman.app.schema import ChatRequest
from tests.conftest import API_KEY_ENV, UPSTREAM_SECRET, ledger_rows, model
from tests.servers import GatewayServer

HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def gateway(upstream, tmp_path_factory):
    """One gateway for the module (default 4 MB body limit); tests look at the ledger rows they added."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv(API_KEY_ENV, UPSTREAM_SECRET)
        server = GatewayServer({"models": [model("m", upstream, capabilities=["tools", "json"])]},
                               tmp_path_factory.mktemp("bad-inputs") / "ledger.db").start()
        yield server
        server.stop()


@pytest.fixture
def new_rows(gateway):
    """The ledger rows written since the test began."""
    before = len(ledger_rows(gateway))
    return lambda: ledger_rows(gateway)[before:]


def post(gw, content: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{gw.base_url}/chat/completions", content=content, timeout=10,
                      headers={"content-type": "application/json", **(headers or {})})


def openai_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text[:500]
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["type"] != "server_error" and "Traceback" not in response.text
    if code is not None:
        assert error["code"] == code
    return error


def healthy(gw) -> bool:
    answer = httpx.post(f"{gw.base_url}/chat/completions", json={"model": "m", "messages": HELLO}, timeout=10)
    return httpx.get(f"{gw.url}/health", timeout=5).status_code == 200 and answer.json()["choices"][0]["message"]["content"] == "echo: hello"


def raw_exchange(gw, data: bytes, *, wait: float = 5.0) -> tuple[bytes, bool, float]:
    """Send raw bytes; read until the server closes or `wait` passes: (what came back, closed?, seconds)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", gw.port), timeout=wait) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        received, closed = b"", False
        try:
            while chunk := sock.recv(65536):
                received += chunk
            closed = True
        except TimeoutError:
            pass
        except ConnectionResetError:
            closed = True
    return received, closed, time.monotonic() - started


def body_of(content: str) -> bytes:
    return b'{"model": "m", "messages": [{"role": "user", "content": "' + content.encode("latin-1") + b'"}]}'


# -- encodings ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("raw", [
    b"\xff\xfe", b"\xc3\x28", b"\xe2\x82", b"\xf0\x28\x8c\xbc", b"\xc0\xaf",  # invalid, truncated, overlong
    b"\xed\xa0\x80",  # a UTF-8-encoded surrogate
    b"\\ud800", b"\\udc00x", b"\\ud800\\u0041",  # lone surrogates written as escapes
], ids=["ff-fe", "bad-continuation", "truncated", "bad-4-byte", "overlong-slash", "encoded-surrogate",
        "lone-high", "lone-low", "high-then-ascii"])
def test_invalid_utf8_inside_a_json_string_is_a_400(gateway, raw):
    body = b'{"model": "m", "messages": [{"role": "user", "content": "ok ' + raw + b' ok"}]}'
    openai_error(post(gateway, body), 400, "invalid_json")


def test_valid_escapes_and_control_characters_pass(gateway, new_rows):
    for content in ("\\ud83d\\ude00 \\u00e9", "nul \\u0000 inside", "tab\\tnew\\nline"):
        answer = post(gateway, body_of(content))
        assert answer.status_code == 200, answer.text
    assert [r["status"] for r in new_rows()] == [200, 200, 200]


# -- nesting ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("depth, status", [(50, 200), (300, 400), (1000, 400), (5000, 400)])
def test_deeply_nested_json_inside_message_content(gateway, new_rows, depth, status):
    """orjson reads 1024 levels but writes 254: what parses yet cannot be forwarded is the client's 400, not a 500."""
    nested = b"[" * depth + b"]" * depth
    body = (b'{"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "x": '
            + nested + b"}]}]}")
    response = post(gateway, body)
    if status == 200:
        assert response.status_code == 200, response.text
    else:
        assert "nested" in openai_error(response, 400, "invalid_json")["message"] or depth > 1024
    stream = post(gateway, body.replace(b'{"model": "m",', b'{"model": "m", "stream": true,'))
    assert stream.status_code == status
    assert [r["status"] for r in new_rows()] == [status, status]


def test_deeply_nested_body_at_temperature_zero_is_a_400_not_a_500(make_gateway, upstream):
    """With the cache on, a request at temperature 0 is keyed: a deep extra field broke the key's digest (a 500)."""
    gw = make_gateway({"models": [model("m", upstream)], "server": {"cache": {"enabled": True, "semantic": False}}})
    nested = b"[" * 300 + b"]" * 300
    body = b'{"model": "m", "temperature": 0, "messages": [{"role": "user", "content": "hi"}], "extra": ' + nested + b"}"
    assert "nested" in openai_error(post(gw, body), 400, "invalid_json")["message"]
    stream = post(gw, body.replace(b'{"model": "m",', b'{"model": "m", "stream": true,'))
    assert stream.status_code == 400
    assert [r["status"] for r in ledger_rows(gw)] == [400, 400]


def test_deeply_nested_tool_parameters(gateway):
    nested = b'{"a": ' * 400 + b"1" + b"}" * 400
    body = (b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", '
            b'"function": {"name": "f", "parameters": ' + nested + b"}}]}")
    openai_error(post(gateway, body), 400, "invalid_json")
    assert healthy(gateway)


# -- size --------------------------------------------------------------------------------------------------------
def test_a_10_mb_body_is_a_413_and_the_gateway_stays_healthy(gateway, new_rows):
    big = body_of("x" * 10_000_000)
    openai_error(post(gateway, big), 413, "request_too_large")  # content-length declared
    chunked = httpx.post(f"{gateway.base_url}/chat/completions", content=(big[i:i + 1_000_000] for i in range(0, len(big), 1_000_000)),
                         timeout=10)
    openai_error(chunked, 413, "request_too_large")  # chunked: cut off while reading
    assert healthy(gateway)
    assert [r["status"] for r in new_rows()] == [413, 413, 200]


# -- wrong types ---------------------------------------------------------------------------------------------------
WRONG = {"string": 5, "integer": "5", "number": "0.5", "boolean": "yes", "array": {"a": 1}, "object": [1]}


def wrong_value(prop: dict):
    """A value of a type the property does not allow."""
    types = {s.get("type") for s in prop.get("anyOf", [prop])} - {"null", None}
    if not types:  # an enum or a $ref
        return 12345
    for candidate in WRONG.values():
        allowed = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "array": list, "object": dict}
        if not any(isinstance(candidate, allowed[t]) and not (t in ("integer", "number") and isinstance(candidate, bool))
                   for t in types):
            return candidate
    raise AssertionError(prop)


(_,), _COMPONENTS = msgspec.json.schema_components([ChatRequest])
FIELDS = sorted(_COMPONENTS["ChatRequest"]["properties"])


@pytest.mark.parametrize("field", FIELDS)
def test_a_wrong_type_for_any_field_is_a_400_naming_it(gateway, field):
    body = {"model": "m", "messages": HELLO, field: wrong_value(_COMPONENTS["ChatRequest"]["properties"][field])}
    error = openai_error(post(gateway, msgspec.json.encode(body)), 400)
    assert field in error["message"]


@pytest.mark.parametrize("message, where", [
    ({"role": 5, "content": "x"}, "$.messages[0].role"),
    ({"role": "user", "content": {"text": "x"}}, "$.messages[0].content"),
    ({"role": "user", "content": [1, 2]}, "$.messages[0].content"),
    ({"role": "user", "content": "x", "name": ["a"]}, "$.messages[0].name"),
    ({"role": "assistant", "tool_calls": "call"}, "$.messages[0].tool_calls"),
    ({"role": "tool", "content": "x", "tool_call_id": 7}, "$.messages[0].tool_call_id"),
    ({"content": "x"}, "role"),
    (None, "$.messages[0]"),
    ("hello", "$.messages[0]"),
])
def test_wrong_types_inside_messages(gateway, message, where):
    error = openai_error(post(gateway, msgspec.json.encode({"model": "m", "messages": [message]})), 400)
    assert where in error["message"]


@pytest.mark.parametrize("tools, where", [
    ([{"type": "function", "function": {"name": ""}}], "$.tools[0].function.name"),
    ([{"type": "function", "function": {"name": "f" * 65}}], "$.tools[0].function.name"),
    ([{"type": "retrieval", "function": {"name": "f"}}], "$.tools[0].type"),
    ([{"type": "function", "function": {"name": "f", "parameters": "{}"}}], "$.tools[0].function.parameters"),
    ("f", "$.tools"),
])
def test_wrong_tools(gateway, tools, where):
    error = openai_error(post(gateway, msgspec.json.encode({"model": "m", "messages": HELLO, "tools": tools})), 400)
    assert where in error["message"]


# -- messages ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("messages", [[], {}, None, [{}], [[]]], ids=["empty-list", "object", "null", "empty-message", "list-in-list"])
def test_empty_or_missing_messages_are_400(gateway, messages):
    error = openai_error(post(gateway, msgspec.json.encode({"model": "m", "messages": messages})), 400)
    assert "messages" in error["message"] or "role" in error["message"]
    openai_error(post(gateway, b'{"model": "m"}'), 400)


@pytest.mark.parametrize("role", ["wizard", "", "USER", "user ", "System", "tool_result", "\u0000"])
def test_unknown_roles_are_400(gateway, role):
    error = openai_error(post(gateway, msgspec.json.encode({"model": "m", "messages": [{"role": role, "content": "x"}]})), 400)
    assert "$.messages[0].role" in error["message"]


# -- headers ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("headers", [
    {"x-big": "a" * 100_000},
    {"x-pointsman-user": "u" * 1_000_000},
    {f"x-h-{i}": "v" for i in range(200)},
], ids=["100-kB-value", "1-MB-tag", "200-headers"])
def test_huge_or_too_many_headers_are_a_clean_431(gateway, headers):
    started = time.monotonic()
    response = httpx.post(f"{gateway.base_url}/chat/completions", json={"model": "m", "messages": HELLO}, headers=headers, timeout=10)
    openai_error(response, 431, "request_header_fields_too_large")
    assert httpx.get(f"{gateway.url}/health", headers=headers, timeout=10).status_code == 431
    assert time.monotonic() - started < 5 and healthy(gateway)


def test_ordinary_header_sets_are_accepted(gateway):
    headers = {f"x-h-{i}": "v" * 100 for i in range(60)}
    assert httpx.post(f"{gateway.base_url}/chat/completions", json={"model": "m", "messages": HELLO}, headers=headers).status_code == 200


# -- slow and malformed framing ---------------------------------------------------------------------------------------
def test_a_body_that_never_finishes_is_cut_off_with_a_408(gateway, new_rows, monkeypatch):
    monkeypatch.setattr(gateway.gateway, "body_timeout_s", 0.5)  # the default is 30 s (BODY_TIMEOUT_S)
    body = body_of("hello")
    head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
    received, closed, took = raw_exchange(gateway, head % (len(body) + 100) + body, wait=5)
    assert received.startswith(b"HTTP/1.1 408 ") and b'"code":"request_timeout"' in received
    assert closed and 0.4 < took < 3
    assert [r["status"] for r in new_rows()] == [408] and healthy(gateway)


def test_a_slow_but_steady_body_within_the_limit_is_served(gateway, monkeypatch):
    monkeypatch.setattr(gateway.gateway, "body_timeout_s", 2.0)
    body = body_of("slowly")

    def trickle():
        for i in range(0, len(body), 20):
            time.sleep(0.02)
            yield body[i:i + 20]

    response = httpx.post(f"{gateway.base_url}/chat/completions", content=trickle(), timeout=10)
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "echo: slowly"


SMUGGLED = b"GET /admin/models HTTP/1.1\r\nhost: x\r\n\r\n"


@pytest.mark.parametrize("framing", [
    b"content-length: %(n)d\r\ncontent-length: 5\r\n",  # two different lengths
    b"content-length: %(n)d\r\ncontent-length: %(n)d\r\n",  # the same length twice
    b"content-length: %(n)d\r\ntransfer-encoding: chunked\r\n",  # CL.TE
    b"transfer-encoding: chunked\r\ntransfer-encoding: identity\r\n",  # TE.TE
    b"content-length: -1\r\n",
    b"content-length: 1e3\r\n",
], ids=["cl-cl-different", "cl-cl-same", "cl-te", "te-te", "negative-cl", "float-cl"])
def test_ambiguous_framing_is_refused_and_nothing_is_smuggled(gateway, framing):
    body = b"0\r\n\r\n" + SMUGGLED
    head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n" + framing % {b"n": len(body)}
    received, closed, took = raw_exchange(gateway, head + b"\r\n" + body)
    assert received.startswith(b"HTTP/1.1 400 ") and received.count(b"HTTP/1.1 ") == 1, received
    assert closed and took < 3
    assert healthy(gateway)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "TRACE"])
def test_a_wrong_method_is_a_405_saying_what_is_allowed(gateway, method):
    response = httpx.request(method, f"{gateway.base_url}/chat/completions")
    openai_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"


@pytest.mark.parametrize("sent", [b"", b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"])
def test_a_client_that_never_finishes_its_headers_is_cut_off(make_gateway, upstream, sent):
    gateway = make_gateway({"models": [model("m", upstream)], "server": {"header_timeout_s": 0.5}})
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(sent)
        started = time.monotonic()
        assert sock.recv(1024) == b""  # closed by the gateway, not by our 5 s timeout
        assert time.monotonic() - started < 2
    assert httpx.get(f"{gateway.url}/health").status_code == 200


def test_upstream_answer_nested_too_deeply_is_a_502(make_gateway, upstream):
    """orjson reads 1024 levels but writes 254: an upstream answer it cannot relay is the upstream's fault."""
    gw = make_gateway({"models": [model("deep", upstream, "deep:300", max_retries=0)]})
    response = httpx.post(f"{gw.base_url}/chat/completions", json={"model": "deep", "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 502 and "nested too deeply" in response.json()["error"]["message"]
    row = ledger_rows(gw)[-1]
    assert row["status"] == 502
    # the upstream answered (and bills for it): its attempt and tokens stay in the ledger (they were dropped)
    assert [a[1] for a in json.loads(row["attempts"])] == ["ok"] and row["completion_tokens"] > 0


def test_a_header_is_refused_while_it_arrives_not_after(gateway):
    """The 64 KB limit was checked only once the headers were complete: one connection made the process buffer
    97 MiB of a single header first."""
    host, port = gateway.url.split("//")[1].split(":")
    sent = 0
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-pointsman-user: ")
        try:
            for _ in range(640):  # up to 40 MiB, in 64 KiB pieces
                sock.sendall(b"a" * 65536)
                sent += 65536
        except OSError:  # the gateway closed the connection
            pass
        reply = b""
        try:
            while chunk := sock.recv(4096):
                reply += chunk
        except OSError:
            pass
    assert sent < 4 * 1024 * 1024  # refused after a few hundred KB, not after the whole header
    assert reply.startswith(b"HTTP/1.1 431") and b"request_header_fields_too_large" in reply
    assert httpx.get(f"{gateway.url}/health").status_code == 200
