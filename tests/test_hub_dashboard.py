"""The hub's web dashboard on a real uvicorn server (SQLite): login/logout with CSRF-protected forms, pages that
show what the API shows each user, and 4xx (never 5xx) answers to hostile ids, cookies and forms."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from websockets.sync.client import connect

from nordfed.ledger import make_entry
from nordfed.ledger.entry import GENESIS
from nordfed.privacy.crypto import Identity
from test_hub_support import PASSWORD, ROOT_PASSWORD, Api, Network, b64, served_network

pytestmark = pytest.mark.network

SESSION, CSRF = "nordfed_session", "nordfed_csrf"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def net(request, tmp_path_factory) -> Network:
    with served_network(request.param, tmp_path_factory.mktemp("hub")) as network:
        yield network


@pytest.fixture(scope="module")
def root_browser(net) -> httpx.Client:
    return login(net, "root", ROOT_PASSWORD)


def browser(net: Network, **cookies: str) -> httpx.Client:
    return httpx.Client(base_url=net.url, timeout=30, cookies=cookies)


def form_token(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


def login(net: Network, username: str, password: str = PASSWORD) -> httpx.Client:
    client = browser(net)
    token = form_token(client.get("/dashboard/login").text)
    response = client.post("/dashboard/login", data={"username": username, "password": password, "csrf_token": token})
    assert response.status_code == 303 and response.headers["location"] == "/dashboard", response.text[:300]
    return client


def logout(client: httpx.Client) -> httpx.Response:
    token = form_token(client.get("/dashboard").text)
    return client.post("/dashboard/logout", data={"csrf_token": token})


def test_root_redirects_to_login_and_login_shows_the_overview(net):
    anon = browser(net)
    first = anon.get("/")
    assert first.status_code == 307 and first.headers["location"] == "/dashboard"
    second = anon.get("/dashboard")
    assert second.status_code == 303 and second.headers["location"] == "/dashboard/login"
    form = anon.get("/dashboard/login")
    assert form.status_code == 200 and 'name="password"' in form.text and CSRF in form.headers["set-cookie"]
    response = anon.post("/dashboard/login", data={"username": "researcher_a", "password": PASSWORD,
                                                   "csrf_token": form_token(form.text)})
    assert response.status_code == 303
    cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith(SESSION + "="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert "Secure" not in cookie  # plain http on loopback; set when the request is https
    page = anon.get("/dashboard")
    assert page.status_code == 200 and "crc-study" in page.text and "node_a" in page.text and "node_b" in page.text
    assert '<meta http-equiv="refresh" content="5">' in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"] and "<script" not in page.text
    assert anon.get("/dashboard/login").status_code == 303  # already logged in


def test_wrong_password_shows_the_form_again(net):
    client = browser(net)
    token = form_token(client.get("/dashboard/login").text)
    for username, password in (("researcher_a", "wrong password"), ("nobody", PASSWORD), ("researcher_a", "x")):
        response = client.post("/dashboard/login", data={"username": username, "password": password,
                                                         "csrf_token": token})
        assert response.status_code == 401 and "wrong username or password" in response.text
        assert SESSION not in client.cookies and 'name="password"' in response.text


def test_posts_without_a_valid_csrf_token_are_refused(net):
    client = browser(net)
    token = form_token(client.get("/dashboard/login").text)
    body = {"username": "researcher_a", "password": PASSWORD}
    assert client.post("/dashboard/login", data=body).status_code == 403
    altered = token[:-1] + ("1" if token.endswith("0") else "0")
    assert client.post("/dashboard/login", data={**body, "csrf_token": altered}).status_code == 403
    forged = "abc." + "0" * 32  # a cookie the attacker planted, without the hub's key
    other = browser(net, **{CSRF: forged})
    assert other.post("/dashboard/login", data={**body, "csrf_token": forged}).status_code == 403
    assert browser(net).post("/dashboard/login", data={**body, "csrf_token": token}).status_code == 403  # no cookie
    assert SESSION not in client.cookies
    user = login(net, "researcher_a")
    session = user.cookies[SESSION]
    assert user.post("/dashboard/logout", data={}).status_code == 403
    assert user.post("/dashboard/logout", data={"csrf_token": "nope"}).status_code == 403
    assert browser(net, **{SESSION: session}).get("/dashboard").status_code == 200  # still logged in


def test_outsiders_see_neither_the_collaboration_nor_its_tasks(net):
    task = net.task(net.researcher_a, [net.nodes["node_a"]])
    outsider = login(net, "researcher_c")
    overview = outsider.get("/dashboard")
    assert overview.status_code == 200 and "crc-study" not in overview.text and "node_a" not in overview.text
    for path in (f"/dashboard/collaborations/{net.collab}", f"/dashboard/tasks/{task['id']}",
                 f"/dashboard/nodes/{net.nodes['node_a'].id}"):
        response = outsider.get(path)
        assert response.status_code in (403, 404), path
        assert "stats.count" not in response.text and "node_a" not in response.text
    member = login(net, "viewer_a")
    assert member.get(f"/dashboard/tasks/{task['id']}").status_code == 200
    collab = login(net, "researcher_b").get(f"/dashboard/collaborations/{net.collab}")
    assert collab.status_code == 200 and f"/dashboard/tasks/{task['id']}" in collab.text


def test_task_pages_show_status_and_logs_never_inputs_or_results(net):
    node = net.new_node("dash_node", "A")
    secret_input, secret_result = b64(), b64()
    task = net.researcher_a.call("POST", "/tasks", 201, json={
        "collaboration_id": net.collab, "algorithm": "stats.mean", "version": "2.0", "code_hash": "sha256:cd",
        "runs": [{"node_id": node.id, "input": secret_input}]})
    run = node.call("GET", "/runs/next", params={"timeout": 5})
    node.call("PATCH", f"/runs/{run['run_id']}", json={"progress": 0.5, "log": "loaded 1234 persons"})
    node.call("PATCH", f"/runs/{run['run_id']}", json={"status": "completed", "result": secret_result,
                                                       "log": "disclosure control passed"})
    owner = login(net, "researcher_a")
    page = owner.get(f"/dashboard/tasks/{task['id']}")
    assert page.status_code == 200 and "completed" in page.text and "dash_node" in page.text
    assert "loaded 1234 persons" in page.text and "disclosure control passed" in page.text
    assert '<meta http-equiv="refresh" content="5">' in page.text
    others = [owner.get(p).text for p in ("/dashboard", f"/dashboard/collaborations/{net.collab}",
                                          f"/dashboard/nodes/{node.id}")]
    assert "disclosure control passed" in others[1] and f"/dashboard/tasks/{task['id']}" in others[2]
    for html in (page.text, *others):
        assert secret_input not in html and secret_result not in html


def push_ledger(net: Network, node: Api, n: int) -> str:
    """Register a signing key for ``node`` and push ``n`` signed entries over its channel; the head hash."""
    key = Identity.generate()
    node.call("PUT", "/nodes/me/keys", json={"encryption_key": b64(n=32), "signing_key": key.signing_public})
    entries, prev = [], GENESIS
    for seq in range(1, n + 1):
        entry = make_entry(seq, "run_completed", "dash", {"task_id": seq}, prev, key).to_dict()
        entries.append(entry)
        prev = entry["entry_hash"]
    url = net.url.replace("http://", "ws://") + "/api/runs/channel"
    with connect(url, additional_headers={"Authorization": node.http.headers["Authorization"]}) as ws:
        ws.send(json.dumps({"op": "ledger", "entries": entries}))
        assert json.loads(ws.recv(timeout=10))["head"] == n
    return prev


def test_node_page_shows_the_hub_copy_of_its_ledger(net):
    node = net.new_node("dash_ledger", "B")
    head = push_ledger(net, node, 3)
    page = login(net, "researcher_a").get(f"/dashboard/nodes/{node.id}")
    assert page.status_code == 200 and "dash_ledger" in page.text
    cards = re.findall(r'<div class="label">([^<]+)</div><div class="value">([^<]+)</div>', page.text)
    assert ("Entries", "3") in cards and ("Head seq", "3") in cards and head in page.text
    assert "epoch 1" in page.text  # the current epoch of the copy (an admin's restart opens the next)
    # a researcher outside the collaboration sees neither the node nor its ledger
    assert login(net, "researcher_c").get(f"/dashboard/nodes/{node.id}").status_code == 403


def test_logout_revokes_the_token(net):
    client = login(net, "researcher_b")
    session = client.cookies[SESSION]
    response = logout(client)
    assert response.status_code == 303 and response.headers["location"] == "/dashboard/login"
    assert SESSION not in client.cookies
    old = browser(net, **{SESSION: session}).get("/dashboard")
    assert old.status_code == 303 and old.headers["location"] == "/dashboard/login"
    api = httpx.get(f"{net.url}/api/users/me", headers={"Authorization": f"Bearer {session}"})
    assert api.status_code == 401


def test_node_tokens_cannot_use_the_dashboard(net):
    node_token = net.nodes["node_b"].http.headers["Authorization"].removeprefix("Bearer ")
    for path in ("/dashboard", f"/dashboard/collaborations/{net.collab}", f"/dashboard/nodes/{net.nodes['node_b'].id}"):
        response = browser(net, **{SESSION: node_token}).get(path)
        assert response.status_code == 403 and "nodes cannot use the dashboard" in response.text


@pytest.mark.parametrize("ident", ["0", "-1", "abc", "2147483648", "99999999999999999999", "1e3", "%00", "%D9%A1",
                                   "1%20", "9" * 500])
def test_hostile_ids_give_404_pages(root_browser, ident):
    client = root_browser
    for kind in ("collaborations", "tasks", "nodes"):
        response = client.get(f"/dashboard/{kind}/{ident}")
        assert response.status_code == 404, (kind, ident, response.status_code)
    assert client.get("/dashboard/tasks/2147483647").status_code == 404


@pytest.mark.parametrize("cookie", ["", "garbage", "x" * 5000, "Bearer abc", "ünïcode", '"quoted"', "a;b=c"])
def test_garbage_cookies_lead_to_the_login_form(net, cookie):
    both = f"{SESSION}={cookie}; {CSRF}={cookie}".encode()
    response = httpx.get(f"{net.url}/dashboard", headers={"Cookie": both})
    assert response.status_code == 303 and response.headers["location"] == "/dashboard/login"
    assert httpx.get(f"{net.url}/dashboard/login", headers={"Cookie": both}).status_code == 200


def test_hostile_forms_are_4xx(net):
    client = browser(net)
    token = form_token(client.get("/dashboard/login").text)
    cases = [
        {"content": b"username=a&password=b", "headers": {"Content-Type": "text/plain"}},
        {"content": b"x=" + b"a" * 20000, "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
        {"content": b"\xff\xfe=%ff", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
        {"content": b"&".join(b"f%d=1" % i for i in range(50)),
         "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
    ]
    for case in cases:
        for path in ("/dashboard/login", "/dashboard/logout"):
            assert 400 <= client.post(path, **case).status_code < 500, (path, case["content"][:30])
    long_name = {"username": "u" * 5000, "password": "p" * 5000, "csrf_token": token}
    assert client.post("/dashboard/login", data=long_name).status_code == 401
    nul = {"username": "root\x00", "password": ROOT_PASSWORD, "csrf_token": token}
    assert client.post("/dashboard/login", data=nul).status_code == 401


def test_dashboard_is_not_in_the_openapi_schema(net):
    paths = httpx.get(f"{net.url}/openapi.json").json()["paths"]
    assert not [p for p in paths if p == "/" or p.startswith("/dashboard")]
