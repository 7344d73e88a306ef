"""Hub governance on a real server, on SQLite and on PostgreSQL: logout and token revocation (refused on the very
next request despite the token cache), listing, editing, disabling and deleting users, nodes, collaborations and
organizations, api key rotation, and membership changes that take effect at once (collaboration cache)."""

from __future__ import annotations

import pytest

from test_hub_support import PASSWORD, Api, Network, b64, served_network

pytestmark = pytest.mark.network


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def net(request, tmp_path_factory) -> Network:
    with served_network(request.param, tmp_path_factory.mktemp("hub")) as network:
        yield network


def new_user(net: Network, name: str, org: str = "A", roles: tuple[str, ...] = ("researcher",)) -> Api:
    net.root.call(
        "POST",
        "/users",
        201,
        json={"username": name, "password": PASSWORD, "organization_id": net.org[org], "roles": list(roles)},
    )
    return net.anon.login(name)


def status(api: Api, method: str, path: str, **kwargs) -> int:
    return api.request(method, path, **kwargs).status_code


def test_logout_refuses_the_token_on_the_very_next_request(net):
    first, second = net.anon.login("researcher_b"), net.anon.login("researcher_b")
    assert first.call("GET", "/users/me")["username"] == "researcher_b"  # now in the hub's token cache
    assert first.call("POST", "/token/revoke") == {"revoked": 1}
    response = first.request("GET", "/users/me")
    assert response.status_code == 401 and response.json()["detail"] == "invalid or expired token"
    assert status(first, "POST", "/token/revoke") == 401
    assert second.call("GET", "/users/me")["username"] == "researcher_b"  # other sessions go on

    node = net.anon.node_login(net.api_keys["node_b"])
    assert node.call("GET", "/nodes/me")["name"] == "node_b"
    assert node.call("POST", "/token/revoke") == {"revoked": 1}
    assert status(node, "GET", "/nodes/me") == 401
    assert net.anon.node_login(net.api_keys["node_b"]).call("GET", "/nodes/me")["name"] == "node_b"


def test_all_tokens_of_a_user_or_node_are_revoked_by_their_admins(net):
    user = new_user(net, "revokee")
    other = net.anon.login("revokee")
    for api in (user, other):
        api.call("GET", "/users/me")
    assert status(net.researcher_a, "DELETE", f"/users/{user.id}/tokens") == 403
    assert status(net.admin_a, "DELETE", f"/users/{net.researcher_b.id}/tokens") == 403  # another organization
    assert net.admin_a.call("DELETE", f"/users/{user.id}/tokens") == {"revoked": 2}
    assert status(user, "GET", "/users/me") == status(other, "GET", "/users/me") == 401
    again = net.anon.login("revokee")
    assert again.call("DELETE", f"/users/{again.id}/tokens") == {"revoked": 1}  # log out everywhere, oneself
    assert status(again, "GET", "/users/me") == 401

    node = net.new_node("revoked_node")
    node.call("GET", "/nodes/me")
    assert status(net.admin_a, "DELETE", f"/nodes/{net.nodes['node_b'].id}/tokens") == 403
    assert net.admin_a.call("DELETE", f"/nodes/{node.id}/tokens")["revoked"] == 1
    assert status(node, "GET", "/runs/next", params={"timeout": 0}) == 401


def test_disabled_users_lose_their_tokens_and_cannot_log_in(net):
    user = new_user(net, "leaver")
    user.call("GET", "/users/me")
    assert status(user, "PATCH", f"/users/{user.id}", json={"disabled": True}) == 400  # not oneself
    assert net.admin_a.call("PATCH", f"/users/{user.id}", json={"disabled": True})["disabled"] is True
    assert status(user, "GET", "/users/me") == 401
    response = net.anon.request("POST", "/token", json={"username": "leaver", "password": PASSWORD})
    assert response.status_code == 403 and "disabled" in response.json()["detail"]
    wrong = net.anon.request("POST", "/token", json={"username": "leaver", "password": "wrong password"})
    assert wrong.status_code == 401  # the disabled state is told only to someone with the password
    listed = {u["username"]: u for u in net.admin_a.call("GET", "/users")}
    assert listed["leaver"]["disabled"] is True
    net.admin_a.call("PATCH", f"/users/{user.id}", json={"disabled": False})
    assert net.anon.login("leaver").call("GET", "/users/me")["disabled"] is False


def test_new_roles_apply_from_the_next_request(net):
    user = new_user(net, "promoted", roles=("viewer",))
    assert net.task(user, [net.nodes["node_a"]], expect=403)["detail"] == "only researchers may create tasks"
    assert net.admin_a.call("PATCH", f"/users/{user.id}", json={"roles": ["researcher"]})["roles"] == ["researcher"]
    net.task(user, [net.nodes["node_a"]])  # the same token, new roles
    net.admin_a.call("PATCH", f"/users/{user.id}", json={"roles": ["viewer"]})
    net.task(user, [net.nodes["node_a"]], expect=403)
    assert status(user, "PATCH", f"/users/{user.id}", json={"roles": ["researcher"]}) == 400  # not one's own


def test_password_changes(net):
    user = new_user(net, "changer")
    elsewhere = net.anon.login("changer")
    body = {"password": "a brand new password"}
    assert status(user, "PATCH", f"/users/{user.id}", json=body) == 400  # current_password missing
    assert status(user, "PATCH", f"/users/{user.id}", json={**body, "current_password": "not it"}) == 401
    user.call("PATCH", f"/users/{user.id}", json={**body, "current_password": PASSWORD})
    assert user.call("GET", "/users/me")["username"] == "changer"  # the session that changed it goes on
    assert status(elsewhere, "GET", "/users/me") == 401  # every other session ends
    assert status(net.anon, "POST", "/token", json={"username": "changer", "password": PASSWORD}) == 401
    net.anon.login("changer", "a brand new password")
    assert status(net.researcher_a, "PATCH", f"/users/{user.id}", json={"password": "x" * 12}) == 403
    net.admin_a.call("PATCH", f"/users/{user.id}", json={"password": "set by the admin"})  # no current needed
    assert status(user, "GET", "/users/me") == 401
    net.anon.login("changer", "set by the admin")


def test_user_administration_is_scoped(net):
    coord = new_user(net, "coordinator_a", roles=("collaboration_admin",))
    for target, body in (
        (net.researcher_b.id, {"disabled": True}),  # another organization
        (coord.id, {"password": "taken over!"}),  # a role organization admins cannot grant
        (coord.id, {"roles": ["viewer"]}),
    ):
        assert status(net.admin_a, "PATCH", f"/users/{target}", json=body) == 403, body
    assert status(net.admin_a, "PATCH", f"/users/{net.viewer_a.id}", json={"roles": ["root"]}) == 403
    assert status(net.researcher_a, "PATCH", f"/users/{net.viewer_a.id}", json={"disabled": True}) == 403
    assert status(net.researcher_a, "DELETE", f"/users/{net.viewer_a.id}") == 403
    assert status(net.admin_a, "PATCH", f"/users/{net.viewer_a.id}", json={"disable": True}) == 422  # typo
    assert status(net.researcher_c, "PATCH", f"/users/{net.viewer_a.id}", json={}) == 403  # no peeking either
    names = {u["username"] for u in net.admin_a.call("GET", "/users")}
    assert {"admin_a", "researcher_a", "viewer_a"} <= names and "researcher_b" not in names
    assert {u["organization_id"] for u in net.viewer_a.call("GET", "/users")} == {net.org["A"]}
    assert status(net.admin_a, "GET", "/users", params={"organization_id": net.org["B"]}) == 403
    everyone = {u["username"] for u in net.root.call("GET", "/users")}
    assert {"root", "researcher_b", "researcher_c"} <= everyone
    only_b = net.root.call("GET", "/users", params={"organization_id": net.org["B"]})
    assert {u["organization_id"] for u in only_b} == {net.org["B"]}
    assert status(net.nodes["node_a"], "GET", "/users") == 403


def test_deleting_users(net):
    user = new_user(net, "shortlived")
    assert status(user, "DELETE", f"/users/{user.id}") == 400  # not oneself
    assert net.admin_a.call("DELETE", f"/users/{user.id}")["username"] == "shortlived"
    assert status(user, "GET", "/users/me") == 401
    assert status(net.root, "GET", f"/users/{user.id}") == 404
    owner = new_user(net, "owner")
    net.task(owner, [net.nodes["node_a"]])
    response = net.admin_a.request("DELETE", f"/users/{owner.id}")
    assert response.status_code == 409 and "disable" in response.json()["detail"]


def test_disabling_a_node_fails_its_runs_and_locks_it_out(net):
    node = net.new_node("retiring")
    waiting = net.task(net.researcher_a, [node])
    running = net.task(net.researcher_a, [node])
    assert node.call("GET", "/runs/next", params={"timeout": 5})["task_id"] == waiting["id"]
    assert status(net.admin_a, "PATCH", f"/nodes/{net.nodes['node_b'].id}", json={"disabled": True}) == 403
    assert net.admin_a.call("PATCH", f"/nodes/{node.id}", json={"disabled": True})["disabled"] is True
    for task in (waiting, running):
        done = net.researcher_a.call("GET", f"/tasks/{task['id']}/wait", params={"timeout": 5})
        assert done["status"] == "failed" and "node disabled" in done["runs"][0]["log"]
    assert status(node, "GET", "/nodes/me") == 401
    response = net.anon.request("POST", "/token/node", json={"api_key": net.api_keys["retiring"]})
    assert response.status_code == 403 and "disabled" in response.json()["detail"]
    listed = net.researcher_a.call("GET", f"/collaborations/{net.collab}/nodes")
    assert "retiring" not in {n["name"] for n in listed}
    listed = net.researcher_a.call("GET", f"/collaborations/{net.collab}/nodes", params={"include_disabled": True})
    assert {n["name"]: n["disabled"] for n in listed}["retiring"] is True
    response = net.researcher_a.request(
        "POST",
        "/tasks",
        json={
            "collaboration_id": net.collab,
            "algorithm": "a",
            "version": "1",
            "code_hash": "h",
            "runs": [{"node_id": node.id, "input": b64()}],
        },
    )
    assert response.status_code == 400 and "disabled" in response.json()["detail"]
    net.admin_a.call("PATCH", f"/nodes/{node.id}", json={"disabled": False, "name": "returned"})
    assert net.anon.node_login(net.api_keys["retiring"]).call("GET", "/nodes/me")["name"] == "returned"


def test_node_api_key_rotation_and_deletion(net):
    node = net.new_node("rotating")
    node.call("GET", "/nodes/me")
    assert status(net.researcher_a, "POST", f"/nodes/{node.id}/api-key") == 403
    rotated = net.admin_a.call("POST", f"/nodes/{node.id}/api-key")
    assert rotated["id"] == node.id and rotated["api_key"] != net.api_keys["rotating"]
    assert status(node, "GET", "/nodes/me") == 401
    assert status(net.anon, "POST", "/token/node", json={"api_key": net.api_keys["rotating"]}) == 401
    fresh = net.anon.node_login(rotated["api_key"])
    assert fresh.call("GET", "/nodes/me")["id"] == node.id

    net.task(net.researcher_a, [fresh])
    response = net.admin_a.request("DELETE", f"/nodes/{node.id}")
    assert response.status_code == 409 and "disable" in response.json()["detail"]
    unused = net.new_node("unused")
    assert status(net.admin_a, "DELETE", f"/nodes/{net.nodes['node_b'].id}") == 403
    assert net.admin_a.call("DELETE", f"/nodes/{unused.id}")["name"] == "unused"
    assert status(unused, "GET", "/nodes/me") == 401
    assert status(net.root, "GET", f"/nodes/{unused.id}") == 404


def test_node_listing_is_scoped(net):
    names = {n["name"] for n in net.researcher_b.call("GET", "/nodes")}
    assert {"node_a", "node_b"} <= names
    assert net.researcher_c.call("GET", "/nodes") == []
    only_b = net.root.call("GET", "/nodes", params={"organization_id": net.org["B"]})
    assert {n["organization_id"] for n in only_b} == {net.org["B"]}
    mine = net.nodes["node_a"].call("GET", "/nodes")
    assert {n["collaboration_id"] for n in mine} == {net.collab}


def test_membership_changes_take_effect_at_once(net):
    d = net.root.call("POST", "/organizations", 201, json={"name": "Hospital D", "country": "DK"})["id"]
    net.org["D"] = d
    collab = net.root.call(
        "POST", "/collaborations", 201, json={"name": "leaving", "organization_ids": [net.org["A"], d]}
    )
    researcher = new_user(net, "researcher_d", org="D")
    created = net.root.call(
        "POST", "/nodes", 201, json={"name": "node_d", "organization_id": d, "collaboration_id": collab["id"]}
    )
    node = net.anon.node_login(created["api_key"])
    study = researcher.call("POST", "/studies", 201, json={"collaboration_id": collab["id"], "name": "s"})
    assert study["organization_ids"] == sorted([net.org["A"], d])
    body = {
        "collaboration_id": collab["id"],
        "algorithm": "a",
        "version": "1",
        "code_hash": "h",
        "runs": [{"node_id": node.id, "input": b64()}],
    }
    researcher.call("POST", "/tasks", 201, json=body)  # the membership is now in the hub's cache
    researcher.call("GET", f"/collaborations/{collab['id']}")

    assert status(net.researcher_a, "PATCH", f"/collaborations/{collab['id']}", json={"name": "x"}) == 403
    changed = net.root.call(
        "PATCH", f"/collaborations/{collab['id']}", json={"name": "left", "remove_organization_ids": [d]}
    )
    assert changed == {"id": collab["id"], "name": "left", "organization_ids": [net.org["A"]]}
    response = researcher.request("POST", "/tasks", json=body)
    assert response.status_code == 403 and "not a member" in response.json()["detail"]
    assert status(researcher, "GET", f"/collaborations/{collab['id']}") == 403
    assert status(node, "GET", "/nodes/me") == 401  # its node there is disabled
    assert net.root.call("GET", f"/studies/{study['id']}")["organization_ids"] == [net.org["A"]]

    net.root.call("PATCH", f"/collaborations/{collab['id']}", json={"add_organization_ids": [d]})
    assert researcher.call("GET", f"/collaborations/{collab['id']}")["organization_ids"] == sorted([net.org["A"], d])
    net.root.call("PATCH", f"/nodes/{node.id}", json={"disabled": False})
    researcher.call("POST", "/tasks", 201, json=body)


def test_collaboration_edits_are_checked(net):
    collab = net.root.call("POST", "/collaborations", 201, json={"name": "edited", "organization_ids": [net.org["A"]]})
    path = f"/collaborations/{collab['id']}"
    for body, code in (
        ({"name": "crc-study"}, 409),
        ({"remove_organization_ids": [net.org["B"]]}, 400),  # not a member
        ({"remove_organization_ids": [net.org["A"]]}, 400),  # would leave none
        ({"add_organization_ids": [999_999]}, 404),
        ({"add_organization_ids": [net.org["B"]], "remove_organization_ids": [net.org["B"]]}, 400),
        ({"organization_ids": [net.org["B"]]}, 422),  # not a field of PATCH
    ):
        assert status(net.root, "PATCH", path, json=body) == code, body
    swapped = net.root.call(
        "PATCH", path, json={"add_organization_ids": [net.org["B"]], "remove_organization_ids": [net.org["A"]]}
    )
    assert swapped["organization_ids"] == [net.org["B"]]
    coord = new_user(net, "coord_edit", org="C", roles=("collaboration_admin",))
    assert coord.call("PATCH", path, json={"name": "renamed"})["name"] == "renamed"


def test_deleting_collaborations(net):
    response = net.root.request("DELETE", f"/collaborations/{net.collab}")
    assert response.status_code == 409 and "tasks" in response.json()["detail"]
    empty = net.root.call("POST", "/collaborations", 201, json={"name": "empty", "organization_ids": [net.org["A"]]})
    created = net.admin_a.call(
        "POST", "/nodes", 201, json={"name": "n", "organization_id": net.org["A"], "collaboration_id": empty["id"]}
    )
    node = net.anon.node_login(created["api_key"])
    net.researcher_a.call("POST", "/studies", 201, json={"collaboration_id": empty["id"], "name": "s"})
    net.researcher_a.call("GET", f"/collaborations/{empty['id']}")  # cached
    assert status(net.researcher_a, "DELETE", f"/collaborations/{empty['id']}") == 403
    assert net.root.call("DELETE", f"/collaborations/{empty['id']}")["name"] == "empty"
    assert status(net.researcher_a, "GET", f"/collaborations/{empty['id']}") == 404
    assert status(node, "GET", "/nodes/me") == 401
    assert net.researcher_a.call("GET", "/studies", params={"collaboration_id": empty["id"]}) == []


def test_organization_edits(net):
    org = net.root.call("POST", "/organizations", 201, json={"name": "Clinic E", "country": "EE"})
    assert net.root.call("PATCH", f"/organizations/{org['id']}", json={"name": "Clinic E2"})["name"] == "Clinic E2"
    mine = net.admin_a.call("PATCH", f"/organizations/{net.org['A']}", json={"country": "NO"})
    assert mine == {"id": net.org["A"], "name": "Hospital A", "country": "NO"}
    assert status(net.admin_a, "PATCH", f"/organizations/{net.org['B']}", json={"country": "DK"}) == 403
    assert status(net.researcher_a, "PATCH", f"/organizations/{net.org['A']}", json={"country": "DK"}) == 403
    assert status(net.root, "PATCH", f"/organizations/{org['id']}", json={"name": "Hospital B"}) == 409
    assert status(net.root, "PATCH", "/organizations/999999", json={"name": "x"}) == 404
