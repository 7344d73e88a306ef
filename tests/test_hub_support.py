"""A small federated network on a real hub, shared by the hub tests (no tests here).

``build_network`` bootstraps through the public API only: root creates organizations A, B (in the collaboration)
and C (outside it); A's organization admin creates A's users and nodes.
"""

from __future__ import annotations

import base64
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

PASSWORD = "correct horse battery"
ROOT_PASSWORD = "root password 123"


@contextmanager
def hub_database(kind: str, folder: Path) -> Iterator[str]:
    """A fresh hub database URL: SQLite in ``folder``, or (``kind="postgres"``) a schema of its own on the server
    at NORDFED_TEST_POSTGRES_URL, dropped afterwards. For module-scoped fixtures (conftest's pg_url is per test)."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'hub.sqlite'}"
        return
    import pytest

    base = os.environ.get("NORDFED_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("NORDFED_TEST_POSTGRES_URL is not set (no PostgreSQL server configured)")
    import psycopg

    schema = f"nf_test_{uuid.uuid4().hex[:10]}"
    try:
        yield f"{base}{'&' if '?' in base else '?'}schema={schema}"
    finally:
        with psycopg.connect(base, autocommit=True) as con:
            con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def assert_clear_4xx(response: httpx.Response, expected: int | None = None) -> None:
    """A refusal as the house rule wants it: a 4xx whose JSON body has a readable string ``detail``."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    if expected is not None:
        assert response.status_code == expected, response.text[:300]
    detail = response.json()["detail"]
    assert isinstance(detail, str) and 0 < len(detail) < 5000  # readable, and never the huge input echoed back


def b64(data: bytes | None = None, n: int = 48) -> str:
    return base64.b64encode(data if data is not None else os.urandom(n)).decode()


class Api:
    """httpx against one hub as one principal; ``call`` checks the status code and returns the JSON."""

    def __init__(self, base_url: str, token: str | None = None, **info: Any):
        self.base_url = base_url
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=f"{base_url}/api", headers=headers, timeout=60)
        self.info = info

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.request(method, path, **kwargs)

    def call(self, method: str, path: str, expect: int = 200, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        assert response.status_code == expect, (method, path, response.status_code, response.text[:500])
        return response.json() if response.content else None

    def login(self, username: str, password: str = PASSWORD) -> Api:
        body = self.call("POST", "/token", json={"username": username, "password": password})
        return Api(self.base_url, body["access_token"], **body)

    def node_login(self, api_key: str) -> Api:
        body = self.call("POST", "/token/node", json={"api_key": api_key})
        return Api(self.base_url, body["access_token"], **body)

    @property
    def id(self) -> int:
        return self.info.get("user_id") or self.info["node_id"]

    def close(self) -> None:
        self.http.close()


@dataclass
class Network:
    url: str
    anon: Api
    root: Api
    org: dict[str, int]
    collab: int
    admin_a: Api
    researcher_a: Api
    viewer_a: Api
    researcher_b: Api
    researcher_c: Api
    nodes: dict[str, Api] = field(default_factory=dict)
    api_keys: dict[str, str] = field(default_factory=dict)

    def new_node(self, name: str, org: str = "A") -> Api:
        """Register a fresh node (own queue: tests that count claims use one)."""
        admin = self.root
        created = admin.call(
            "POST",
            "/nodes",
            201,
            json={"name": name, "organization_id": self.org[org], "collaboration_id": self.collab},
        )
        node = self.anon.node_login(created["api_key"])
        self.nodes[name], self.api_keys[name] = node, created["api_key"]
        return node

    def task(self, owner: Api, nodes: list[Api], expect: int = 201, **extra: Any) -> Any:
        body = {
            "collaboration_id": self.collab,
            "algorithm": "stats.count",
            "version": "1.0",
            "code_hash": "sha256:ab",
            "runs": [{"node_id": n.id, "input": b64()} for n in nodes],
            **extra,
        }
        return owner.call("POST", "/tasks", expect, json=body)


def build_network(url: str) -> Network:
    anon = Api(url)
    root = anon.login("root", ROOT_PASSWORD)
    org = {
        name: root.call("POST", "/organizations", 201, json={"name": f"Hospital {name}", "country": c})["id"]
        for name, c in (("A", "NO"), ("B", "SE"), ("C", "FI"))
    }
    collab = root.call(
        "POST", "/collaborations", 201, json={"name": "crc-study", "organization_ids": [org["A"], org["B"]]}
    )["id"]
    root.call(
        "POST",
        "/users",
        201,
        json={
            "username": "admin_a",
            "password": PASSWORD,
            "organization_id": org["A"],
            "roles": ["organization_admin"],
        },
    )
    admin_a = anon.login("admin_a")
    for name, role in (("researcher_a", "researcher"), ("viewer_a", "viewer")):
        admin_a.call(
            "POST",
            "/users",
            201,
            json={"username": name, "password": PASSWORD, "organization_id": org["A"], "roles": [role]},
        )
    for name, o in (("researcher_b", "B"), ("researcher_c", "C")):
        root.call(
            "POST",
            "/users",
            201,
            json={"username": name, "password": PASSWORD, "organization_id": org[o], "roles": ["researcher"]},
        )
    net = Network(
        url,
        anon,
        root,
        org,
        collab,
        admin_a,
        anon.login("researcher_a"),
        anon.login("viewer_a"),
        anon.login("researcher_b"),
        anon.login("researcher_c"),
    )
    for name, o in (("node_a", "A"), ("node_b", "B")):
        net.new_node(name, o)
    return net


@contextmanager
def served_network(kind: str, folder: Path) -> Iterator[Network]:
    """A real hub (uvicorn thread) on a fresh database of ``kind`` with :func:`build_network`'s principals."""
    from nordfed.hub.app import create_app
    from nordfed.hub.server import HubServer

    with hub_database(kind, folder) as url, HubServer(create_app(url, root_password=ROOT_PASSWORD)) as server:
        yield build_network(server.url)


def park(api: Api, path: str, params: dict[str, Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Start a long poll ``GET path`` in a thread; the dict gets its status, body and when it came."""
    got: dict[str, Any] = {}

    def poll() -> None:
        response = api.request("GET", path, params=params)
        got.update(status=response.status_code, body=response.json() if response.content else None,
                   at=time.monotonic())

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(0.5)  # parked on the hub
    return thread, got
