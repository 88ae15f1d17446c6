"""Verification sampling and the online error bound through the gateway (README, "Cache"; issue 18): the real
server on loopback and the test upstream, whose `user` behaviour answers with the request's `user` field, the
test's ground truth (the cache does not key on it), so that a reused answer is wrong exactly when its truth
differs from the request's.

The question pairs are QQP's (../shared/data/qqp, line numbers; all from eval.py's training split): CALM are
duplicates, SHIFT and LATE are not, yet the shipped acceptance model accepts them all (p 0.79-0.87 against a
threshold of 0.76). Each pair has a system prompt of its own, so its two questions share a namespace with no
other pair's."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import ledger_rows, model

QQP = Path(__file__).resolve().parents[2] / "shared" / "data" / "qqp" / "pairs.jsonl"
pytestmark = pytest.mark.skipif(not QQP.exists(), reason="shared data not present")

CALM = [11756, 3643, 93, 5706, 7242, 2260, 1709, 10983, 1455, 12665, 11075, 15202, 14594, 12983, 4659, 11653, 6970,
        11558, 8057, 13955, 4157, 3946, 7667, 2027, 5593, 416, 4688, 9685, 4549, 3185, 11912, 9032, 13836, 1466, 7711,
        3216, 5988, 10739, 13816, 4657, 255, 1096, 7637, 336, 7722, 10453, 7159, 12109, 5633, 9367, 12414, 15328,
        1207, 1582, 11457, 14562, 9136, 11687, 11352, 8762, 14668, 7236, 3852, 10556, 1933, 11480, 1616, 9206, 11385,
        10095, 5150, 6736, 12880, 14094, 14107, 5484, 8015, 4130, 12584, 7445]
# the shift: the 40 non-duplicates the shipped model is surest of (p 0.81-0.87), in a shuffled order
SHIFT = [14563, 497, 9874, 2333, 10023, 14701, 3619, 4114, 1790, 7317, 3437, 10396, 2917, 8867, 8000, 12265, 13603,
         3447, 7425, 13654, 14404, 9280, 1327, 8092, 6914, 5471, 3658, 7469, 2603, 1749, 11656, 12022, 1954, 2546,
         7039, 774, 738, 1017, 8927, 5253]
# afterwards: more non-duplicates of the same kind (p 0.79-0.81), and the duplicates it is surest of (p 0.872-0.882)
LATE_WRONG = [3412, 5919, 12582, 7362, 1081, 11884, 7142, 3004, 10265, 8371, 14922, 7220, 6394, 3172, 2829, 12927,
              7728, 7492, 3965]
LATE_RIGHT = [5306, 14666, 11426, 5915, 12564, 15284, 8907, 603, 168, 8621, 13589, 1619, 4632, 7311, 11485, 2835, 1942,
              8395, 15251, 1575]
ANSWERS = ["The Eiffel Tower stands in Paris.", "Photosynthesis turns sunlight, water and carbon dioxide into sugar.",
           "A Python list is reversed in place with its reverse method.", "Mount Everest is the highest mountain.",
           "Interest rates rise when central banks tighten policy.", "Sourdough rises thanks to wild yeast.",
           "The heart pumps blood through arteries and veins.", "Chess openings fight for the centre early.",
           "Jupiter is the largest planet of the solar system.", "Regular sleep and exercise lower stress."]
ADMIN = "sk-admin-verify-test"
KEY = "sk-tenant-verify"


@pytest.fixture(scope="module")
def qqp() -> list[dict]:
    with QQP.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


@pytest.fixture
def keys(monkeypatch):
    monkeypatch.setenv("PM_VERIFY_KEY", KEY)
    monkeypatch.setenv("PM_VERIFY_ADMIN", ADMIN)


def gateway_with(make_gateway, upstream, **verify) -> tuple:
    name = f"user:{uuid.uuid4().hex[:8]}"  # answers the `user` field; a model id of its own for call counts
    config = {"models": [model("m", upstream, name, prices={"input": 1.0, "output": 2.0})],
              "server": {"cache": {"enabled": True, "verify": {"share": 1.0, **verify}}, "api_keys_env": ["PM_VERIFY_KEY"],
                         "admin_key_env": "PM_VERIFY_ADMIN"}}
    return make_gateway(config), name


def ask(gateway, system: str, text: str, truth: str, team: str | None = None) -> tuple[httpx.Headers, str]:
    client = openai.OpenAI(base_url=gateway.base_url, api_key=KEY, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "system", "content": system}, {"role": "user", "content": text}],
        temperature=0, user=truth, extra_headers={"x-pointsman-team": team} if team else None)
    return raw.headers, raw.parse().choices[0].message.content


def metrics(gateway) -> dict:
    response = httpx.get(f"{gateway.url}/admin/cache/metrics", headers={"authorization": f"Bearer {ADMIN}"})
    assert response.status_code == 200, response.text
    return response.json()


def settle(gateway) -> dict:
    """The metrics once every verification in flight has been labelled."""
    deadline = time.monotonic() + 10
    while True:
        found = metrics(gateway)
        if found["verify"]["in_flight"] == 0 or time.monotonic() > deadline:
            return found
        time.sleep(0.01)


def tenant(found: dict) -> dict:
    (only,) = found["verify"]["tenants"]
    return only


def serve_pair(gateway, qqp, line: int, i: int, team: str | None = None) -> tuple[int, int]:
    """Ask a pair's two questions (a then b); (wrong answers, cache hits) of the second."""
    row = qqp[line]
    first = ANSWERS[(2 * i) % len(ANSWERS)]
    second = first if row["label"] == 1 else ANSWERS[(2 * i + 1) % len(ANSWERS)]
    ask(gateway, f"Pair {line}.", row["text_a"], first, team)
    headers, text = ask(gateway, f"Pair {line}.", row["text_b"], second, team)
    return int(text != second), int(headers.get("x-pointsman-cache", "").startswith("hit"))


def test_a_tenant_whose_traffic_shifts_sees_its_threshold_move_and_wrong_reuse_come_back_under_delta(
        make_gateway, upstream, keys, qqp):
    gateway, name = gateway_with(make_gateway, upstream, min_labels=150)
    shipped = metrics(gateway)["verify"]["shipped_threshold"]
    calm = [serve_pair(gateway, qqp, line, i) for i, line in enumerate(CALM)]
    before = tenant(settle(gateway))
    assert sum(w for w, _ in calm) == 0 and sum(h for _, h in calm) == len(CALM)  # duplicates: right hits
    assert before["labels_seen"] == 2 * len(CALM) and before["reason"] == "proven" and before["threshold"] <= shipped

    shifted = []
    for i, line in enumerate(SHIFT):
        shifted.append(serve_pair(gateway, qqp, line, i))
        settle(gateway)  # off the client's path: the label lands after the answer
    after = tenant(metrics(gateway))
    wrong_while_shifting = sum(w for w, _ in shifted)
    assert wrong_while_shifting / (2 * len(SHIFT)) > 0.02  # the shift hurt: wrong reuse above δ
    assert after["threshold"] > shipped > before["threshold"] - 1e-9  # and moved the threshold up, past the shipped one
    # every non-duplicate became a wrong label: checked upstream when served, from its own answer when a near miss
    assert after["disagreed"] == len(SHIFT) and after["wrong_reuse"]["bound"] <= 0.02

    late = [serve_pair(gateway, qqp, line, i) for i, line in enumerate(LATE_WRONG + LATE_RIGHT)]
    wrong_late = sum(w for w, _ in late)
    assert wrong_late <= 0.02 * 2 * len(late)  # wrong reuse back under δ (of all requests)
    assert sum(h for _, h in late[len(LATE_WRONG):]) > 0  # while the closest duplicates are still served

    final = settle(gateway)
    verify_rows = [r for r in ledger_rows(gateway) if r["tier"] == "cache-verify"]
    assert len(verify_rows) == final["verify"]["verified"] > 0
    assert all(r["key_id"] is None and r["cost_usd"] > 0 and r["status"] == 200 for r in verify_rows)
    assert final["verify"]["spent_usd_today"] == pytest.approx(sum(r["cost_usd"] for r in verify_rows), rel=1e-6)


def test_a_strict_team_gets_the_fresh_answer_when_the_cached_one_differs(make_gateway, upstream, keys, qqp):
    gateway, name = gateway_with(make_gateway, upstream, on_path_teams=["strict"])
    row = qqp[SHIFT[0]]
    truth_a, truth_b = ANSWERS[0], ANSWERS[1]
    for team in ("strict", "loose"):
        ask(gateway, "s", row["text_a"], truth_a, team)
    strict, strict_text = ask(gateway, "s", row["text_b"], truth_b, "strict")
    loose, loose_text = ask(gateway, "s", row["text_b"], truth_b, "loose")
    assert strict["x-pointsman-cache"] == "replaced" and strict_text == truth_b  # checked on its path
    assert loose["x-pointsman-cache"] == "hit-semantic" and loose_text == truth_a  # checked after: served the cached one
    found = settle(gateway)["verify"]
    assert found["verified"] == found["disagreed"] == 2 and found["replaced"] == 1
    again, again_text = ask(gateway, "s", row["text_b"], truth_b, "strict")
    assert again["x-pointsman-cache"] == "hit-exact" and again_text == truth_b  # the fresh answer was stored
    assert len([r for r in ledger_rows(gateway) if r["tier"] == "cache-verify"]) == 2


def test_verification_stops_at_its_daily_budget(make_gateway, upstream, keys, qqp):
    gateway, name = gateway_with(make_gateway, upstream, budget_usd_per_day=1e-9)
    for i, line in enumerate(CALM[:4]):
        serve_pair(gateway, qqp, line, i)
        settle(gateway)
    found = settle(gateway)["verify"]
    assert found["verified"] == 1 and found["over_budget"] >= 6  # one paid check, then no more sampling
    assert found["spent_usd_today"] > 1e-9
    assert len([r for r in ledger_rows(gateway) if r["tier"] == "cache-verify"]) == 1


def test_a_client_reject_of_a_semantic_hit_counts_as_a_wrong_label(make_gateway, upstream, keys, qqp):
    gateway, name = gateway_with(make_gateway, upstream, share=1e-4)  # (practically) never sampled
    row = qqp[SHIFT[0]]
    ask(gateway, "s", row["text_a"], ANSWERS[0])
    headers, _ = ask(gateway, "s", row["text_b"], ANSWERS[1])
    assert headers["x-pointsman-cache"] == "hit-semantic"
    response = httpx.post(f"{gateway.base_url}/cache/feedback", headers={"authorization": f"Bearer {KEY}"},
                          json={"request_id": headers["x-pointsman-request-id"], "verdict": "reject"})
    assert response.status_code == 200, response.text
    found = tenant(metrics(gateway))
    assert found["feedback_rejects"] == 1 and found["wrong_reuse"]["wrong_labels"] > 0
    assert metrics(gateway)["verify"]["verified"] == 0


def test_verification_is_off_by_default(make_gateway, upstream, keys):
    gateway = make_gateway({"models": [model("m", upstream)],
                            "server": {"cache": {"enabled": True}, "admin_key_env": "PM_VERIFY_ADMIN"}})
    found = httpx.get(f"{gateway.url}/admin/cache/metrics", headers={"authorization": f"Bearer {ADMIN}"}).json()
    assert found["verify"] is None and gateway.gateway.caching.verifier is None


def test_a_judge_model_decides_when_the_two_answers_differ(make_gateway, upstream, keys, qqp):
    name = f"user:{uuid.uuid4().hex[:8]}"
    prices = {"input": 1.0, "output": 2.0}
    gateway = make_gateway({"models": [model("m", upstream, name, prices=prices), model("j", upstream, "say:yes", prices=prices)],
                            "server": {"cache": {"enabled": True, "verify": {"share": 1.0, "judge": "j"}},
                                       "api_keys_env": ["PM_VERIFY_KEY"], "admin_key_env": "PM_VERIFY_ADMIN"}})
    row = qqp[SHIFT[0]]
    ask(gateway, "s", row["text_a"], ANSWERS[0])
    headers, _ = ask(gateway, "s", row["text_b"], ANSWERS[1])  # answers that no embedding would call the same
    assert headers["x-pointsman-cache"] == "hit-semantic"
    found = settle(gateway)["verify"]
    assert found["verified"] == found["agreed"] == 1 and found["disagreed"] == 0  # the judge said yes
    tiers = [r["tier"] for r in ledger_rows(gateway) if (r["tier"] or "").startswith("cache-verify")]
    assert sorted(tiers) == ["cache-verify", "cache-verify-judge"]
