"""A node's long poll (``GET /api/runs/next``, and ``next`` on the channel) whose token is revoked while it waits:
401 at once (the revocation wakes it) instead of waiting out its timeout, and never a run: a task arriving after
the revocation wakes the poll, which answers 401 and leaves the run pending for the node's next login. Real hub on
loopback, SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
import time

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from nordfed.hub.routers.runs import RECHECK
from test_hub_support import Api, Network, park, served_network

pytestmark = pytest.mark.network


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def net(request, tmp_path_factory) -> Network:
    with served_network(request.param, tmp_path_factory.mktemp("hub")) as network:
        yield network


def _token(api: Api) -> str:
    return api.http.headers["Authorization"].split(" ", 1)[1]


def _park(node: Api, timeout: float) -> tuple[threading.Thread, dict]:
    """``GET /runs/next`` parked in a thread (:func:`park`)."""
    return park(node, "/runs/next", {"timeout": timeout})


def test_a_parked_poll_answers_401_at_once_after_logout_and_a_valid_one_keeps_waiting(net):
    revoked, valid = net.new_node("lp_logout"), net.new_node("lp_valid")
    revoked_thread, revoked_got = _park(revoked, 60)
    valid_thread, valid_got = _park(valid, RECHECK + 1.5)  # outlives one token re-check
    logout_at = time.monotonic()
    # the node logs out on another connection while its poll waits
    assert Api(net.url, _token(revoked)).call("POST", "/token/revoke") == {"revoked": 1}
    revoked_thread.join(RECHECK + 10)
    valid_thread.join(RECHECK + 10)
    assert revoked_got["status"] == 401, revoked_got
    assert revoked_got["at"] - logout_at < 2.0  # woken by the revocation: not RECHECK, not the 60 s timeout
    assert valid_got["status"] == 204, valid_got  # re-checking a good token changes nothing


def test_a_run_arriving_after_revocation_is_not_handed_to_the_poll(net):
    node = net.new_node("lp_admin")
    thread, got = _park(node, 60)
    assert net.admin_a.call("DELETE", f"/nodes/{node.id}/tokens") == {"revoked": 1}
    created_at = time.monotonic()
    task = net.task(net.researcher_a, [node])  # wakes the poll at once
    thread.join(RECHECK + 10)
    assert got["status"] == 401, got
    assert got["at"] - created_at < min(RECHECK, 3)  # woken by the task, re-checked before the claim
    runs = net.researcher_a.call("GET", f"/tasks/{task['id']}")["runs"]
    assert [r["status"] for r in runs] == ["pending"]
    fresh = net.anon.node_login(net.api_keys["lp_admin"])
    assert fresh.call("GET", "/runs/next", params={"timeout": 5})["task_id"] == task["id"]


def test_a_waiting_channel_claim_answers_401_and_closes_when_the_token_is_revoked(net):
    node = net.new_node("lp_channel")
    url = f"{net.url.replace('http://', 'ws://')}/api/runs/channel"
    with connect(url, additional_headers={"Authorization": f"Bearer {_token(node)}"}) as ws:
        ws.send(json.dumps({"op": "next", "timeout": 60, "id": 7}))
        time.sleep(0.5)
        revoked_at = time.monotonic()
        assert net.admin_a.call("DELETE", f"/nodes/{node.id}/tokens") == {"revoked": 1}
        reply = json.loads(ws.recv(timeout=RECHECK + 10))
        assert reply["op"] == "error" and reply["status"] == 401 and reply["id"] == 7, reply
        assert time.monotonic() - revoked_at < 2.0  # woken by the revocation
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
        assert ws.close_code == 1008
