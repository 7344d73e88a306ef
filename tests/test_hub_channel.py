"""The node channel (``/api/runs/channel``) on a real hub: claims and updates as WebSocket messages, the same rules
as the HTTP endpoints, and hostile or unauthorised messages answered with an error, never a crash."""

from __future__ import annotations

import json
import threading
import time

import pytest
from websockets.sync.client import connect

from nordfed.hub.app import create_app
from nordfed.hub.server import HubServer
from nordfed.node.channel import ChannelClosed, ChannelRefused, HubChannel
from test_hub_support import ROOT_PASSWORD, Network, b64, build_network

pytestmark = pytest.mark.network


@pytest.fixture(scope="module")
def net(tmp_path_factory) -> Network:
    db = tmp_path_factory.mktemp("hub") / "hub.sqlite"
    with HubServer(create_app(f"sqlite:///{db}", root_password=ROOT_PASSWORD)) as server:
        yield build_network(server.url)


def _token(api) -> str:
    return api.http.headers["Authorization"].split(" ", 1)[1]


def _raw(net: Network, token: str | None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return connect(f"{net.url.replace('http://', 'ws://')}/api/runs/channel", additional_headers=headers)


def _ask(ws, message) -> dict:
    ws.send(message if isinstance(message, str) else json.dumps(message))
    return json.loads(ws.recv(timeout=10))


def test_claim_report_and_finish_through_the_channel(net):
    node = net.new_node("ch_rt")
    task = net.task(net.researcher_a, [node])
    ch = HubChannel.open(net.url, _token(node))
    try:
        run = ch.next(timeout=5)
        assert run is not None and run["task_id"] == task["id"] and run["algorithm"] == "stats.count"
        assert ch.update(run["run_id"], progress=0.5, log="half way")["status"] == "active"
        result = b64()
        state = ch.update(run["run_id"], status="completed", result=result, log="done")
        assert state == {"id": run["run_id"], "task_id": task["id"], "status": "completed", "progress": 1.0,
                         "attempts": 0}
        assert ch.next(timeout=0.2) is None  # nothing more: idle at the timeout
    finally:
        ch.close()
    got = net.researcher_a.call("GET", f"/tasks/{task['id']}/results", params={"wait": 5})
    assert [(r["status"], r["result"], r["log"]) for r in got] == [("completed", result, "half way\ndone")]


def test_a_waiting_claim_wakes_on_task_creation(net):
    node = net.new_node("ch_wait")
    ch = HubChannel.open(net.url, _token(node))
    got: list = []
    waiter = threading.Thread(target=lambda: got.append(ch.next(timeout=20)))
    waiter.start()
    time.sleep(0.3)
    task = net.task(net.researcher_a, [node])
    waiter.join(timeout=15)
    ch.close()
    assert not waiter.is_alive() and got and got[0] is not None and got[0]["task_id"] == task["id"]


def test_no_claim_for_a_channel_that_closed_while_waiting(net):
    node = net.new_node("ch_gone")
    with _raw(net, _token(node)) as ws:
        ws.send(json.dumps({"op": "next", "timeout": 10}))
        time.sleep(0.2)
    time.sleep(0.3)
    task = net.task(net.researcher_a, [node])
    time.sleep(0.3)
    assert [r["status"] for r in net.researcher_a.call("GET", f"/tasks/{task['id']}")["runs"]] == ["pending"]
    ch = HubChannel.open(net.url, _token(node))
    try:
        run = ch.next(timeout=5)
        assert run is not None and run["task_id"] == task["id"]
    finally:
        ch.close()


@pytest.mark.parametrize("who", ["nobody", "garbage", "user"])
def test_handshake_needs_a_node_token(net, who):
    token = {"nobody": "", "garbage": "x" * 43, "user": _token(net.researcher_a)}[who]
    with pytest.raises(ChannelRefused) as err:
        HubChannel.open(net.url, token)
    assert err.value.status == 401


def test_hostile_messages_get_errors_and_the_channel_stays_usable(net):
    node, other = net.new_node("ch_hostile"), net.new_node("ch_other")
    net.task(net.researcher_a, [other])
    other_run = other.call("GET", "/runs/next", params={"timeout": 5})
    cases = [
        ("{not json", 400, "valid JSON"),
        ("[1, 2]", 400, "JSON object"),
        ({"op": "drop tables"}, 400, "unknown op"),
        ({"op": "next", "timeout": -1}, 422, "timeout"),
        ({"op": "next", "timeout": "soon"}, 422, "timeout"),
        ({"op": "update", "run_id": "1; DROP"}, 422, "run_id"),
        ({"op": "update", "run_id": 2**70}, 422, "run_id"),
        ({"op": "update", "run_id": other_run["run_id"], "progress": 3}, 422, "progress"),
        ({"op": "update", "run_id": other_run["run_id"], "owner": 1}, 422, "owner"),
        ({"op": "update", "run_id": other_run["run_id"], "status": "completed"}, 403, "another node"),
        ({"op": "update", "run_id": 10**9, "progress": 0.1}, 404, "not found"),
    ]
    with _raw(net, _token(node)) as ws:
        for message, status, words in cases:
            reply = _ask(ws, message)
            assert reply["op"] == "error" and reply["status"] == status and words in reply["detail"], (message, reply)
        assert _ask(ws, {"op": "next", "timeout": 0, "id": 7}) == {"op": "idle", "id": 7}
    # the other node's run was not touched by any of it
    assert other.call("GET", f"/runs/{other_run['run_id']}")["status"] == "active"


def test_updating_a_finished_run_is_409(net):
    node = net.new_node("ch_409")
    net.task(net.researcher_a, [node])
    ch = HubChannel.open(net.url, _token(node))
    try:
        run = ch.next(timeout=5)
        ch.update(run["run_id"], status="failed", log="boom")
        with pytest.raises(ChannelRefused) as err:
            ch.update(run["run_id"], progress=0.2)
        assert err.value.status == 409
    finally:
        ch.close()


def test_a_revoked_token_ends_the_channel(net):
    node = net.new_node("ch_revoked")
    ch = HubChannel.open(net.url, _token(node))
    try:
        assert ch.next(timeout=0) is None
        net.root.call("DELETE", f"/nodes/{node.id}/tokens")
        with pytest.raises(ChannelRefused) as err:
            ch.next(timeout=0)
        assert err.value.status == 401
    finally:
        ch.close()


def test_shutdown_answers_a_waiting_channel_at_once(tmp_path):
    server = HubServer(create_app(f"sqlite:///{tmp_path / 'hub.sqlite'}", root_password=ROOT_PASSWORD)).start()
    net = build_network(server.url)
    ch = HubChannel.open(server.url, _token(net.nodes["node_a"]))
    got: list = []

    def wait() -> None:
        try:
            got.append(ch.next(timeout=60))
        except ChannelClosed as exc:
            got.append(exc)

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    server.stop()
    thread.join(30)
    ch.close()
    # idle (then the hub closes the channel) or the close itself: either way at once, and the node reconnects
    assert got and (got[0] is None or isinstance(got[0], ChannelClosed)) and time.monotonic() - t0 < 10
