"""Schema-driven fuzzing of the hub: every operation of its own /openapi.json (so endpoints added later are covered
too), as each kind of caller, with hostile path and query values, mutated JSON bodies and broken requests; then the
nodes' WebSocket channel with fuzzed frames.

Every answer is a success or a clear 4xx (JSON with a string ``detail``), never a 5xx; a refused request leaves the
database exactly as it was (a digest of every table before and after); the hub keeps serving afterwards.
Deterministic (seeded) and bounded (MAX_REQUESTS).
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from nordfed.hub.app import create_app
from nordfed.hub.server import HubServer
from nordfed.ledger import make_entry
from nordfed.ledger.entry import GENESIS
from nordfed.privacy.crypto import Identity
from test_hub_support import PASSWORD, ROOT_PASSWORD, Network, assert_clear_4xx, b64, build_network

pytestmark = pytest.mark.network

SEED = 20_240_611
MAX_REQUESTS = 4000  # the generator stays under this (it sends about 2,500)
OTHER_CALLER_SHARE = 0.1  # of the mutated requests, also sent as a randomly chosen other caller
HUGE = "x" * 1_000_000
BIG_INT = "@@an integer of 5000 digits@@"  # json.dumps refuses to write one: swapped into the JSON text
# Query parameters the hub waits on: never left at their default (a 30 s long poll per request).
LONG_POLLS = frozenset({"timeout", "wait"})


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


# raw (already percent-encoded) URL text
PATH_VALUES = {
    "zero": "0",
    "negative": "-1",
    "2**63": str(2**63),
    "2**64": str(2**64),
    "letters": "abc",
    "exponent": "1e3",
    "NUL": "%00",
    "lone surrogate": "%ED%A0%80",  # U+D800 as WTF-8
    "huge": "9" * 5000,
}
QUERY_VALUES = {**PATH_VALUES, "NaN": "NaN", "Infinity": "Infinity", "empty": "", "word": "true"}
FIELD_VALUES: dict[str, Any] = {
    "null": None,
    "list": [],
    "dict": {},
    "bool": True,
    "zero": 0,
    "negative": -1,
    "2**63": 2**63,
    "2**64": 2**64,
    "10**30": 10**30,
    "5000 digits": BIG_INT,
    "float": 1.5,
    "NaN": float("nan"),
    "Infinity": float("inf"),
    "-Infinity": float("-inf"),
    "empty string": "",
    "string": "abc",
    "numeric string": "1",
    "huge string": HUGE,
    "NUL": "a\x00b",
    "lone surrogate": "\ud800",
    "nested 200 deep": nested(200),
    "1000 wrong items": ["x"] * 1000,
}
EXTRA_KEYS = {"unknown": "unexpected", "huge": "k" * 100_000, "NUL": "a\x00b", "lone surrogate": "\ud800", "empty": ""}


def to_json(value: Any) -> bytes:
    """JSON as hostile clients write it: NaN/Infinity literals, escaped lone surrogates, 5000-digit integers."""
    return json.dumps(value, allow_nan=True).replace(json.dumps(BIG_INT), "1" * 5000).encode()


def field_paths(value: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every field of a JSON value (into the first item of lists), parents before children."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*prefix, key)
            yield from field_paths(item, (*prefix, key))
    elif isinstance(value, list) and value:
        yield (*prefix, 0)
        yield from field_paths(value[0], (*prefix, 0))


def dict_paths(value: Any, prefix: tuple = ()) -> Iterator[tuple]:
    if isinstance(value, dict):
        yield prefix
    for path in field_paths(value, prefix):
        if isinstance(_get(value, path[len(prefix):]), dict):
            yield path


def _get(value: Any, path: tuple) -> Any:
    for key in path:
        value = value[key]
    return value


def replaced(body: Any, path: tuple, new: Any) -> Any:
    out = copy.deepcopy(body)
    _get(out, path[:-1])[path[-1]] = new
    return out


def without(body: Any, path: tuple) -> Any:
    out = copy.deepcopy(body)
    del _get(out, path[:-1])[path[-1]]
    return out


@dataclass
class Caller:
    """One principal sending fuzzed requests; ``login`` gets it a fresh token once a request revoked its own."""

    name: str
    token: str | None = None
    login: Callable[[], str] | None = None

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


class Fingerprint:
    """A digest of every table of the hub's SQLite database, read beside the running hub (WAL: never blocks it)."""

    def __init__(self, path: Path):
        self.con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
        query = "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
        self.tables = [name for (name,) in self.con.execute(query)]

    def __call__(self) -> dict[str, str]:
        self.con.execute("BEGIN")  # one snapshot of all tables
        try:
            return {t: self._digest(t) for t in self.tables}
        finally:
            self.con.execute("COMMIT")

    def close(self) -> None:
        self.con.close()

    def _digest(self, table: str) -> str:
        digest = hashlib.sha256()
        for row in self.con.execute(f'SELECT * FROM "{table}"'):
            digest.update(repr(row).encode())
        return digest.hexdigest()


@dataclass
class Fuzzed:
    net: Network
    db: Path
    targets: dict[str, int]  # path parameter → id of an object the fuzzed requests may change or delete


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory) -> Iterator[Fuzzed]:
    db = tmp_path_factory.mktemp("fuzz") / "hub.sqlite"
    with HubServer(create_app(f"sqlite:///{db}", root_password=ROOT_PASSWORD)) as server:
        net = build_network(server.url)
        yield Fuzzed(net, db, _targets(net))


def _targets(net: Network) -> dict[str, int]:
    """Objects the path ids point at, so that what valid requests change or delete (a collaboration's members, a
    user's roles, a node's api key) is not what the callers themselves need."""
    root, admin, researcher = net.root, net.admin_a, net.researcher_a
    org = root.call("POST", "/organizations", 201, json={"name": "Fuzz org", "country": "DK"})["id"]
    collab = root.call("POST", "/collaborations", 201, json={"name": "fuzz", "organization_ids": [net.org["A"], org]})
    user = {"username": "fuzz_target", "password": PASSWORD, "organization_id": net.org["A"], "roles": ["viewer"]}
    node = {"name": "fuzz_target", "organization_id": net.org["A"], "collaboration_id": net.collab}
    study = researcher.call("POST", "/studies", 201, json={"collaboration_id": net.collab, "name": "fuzz study"})["id"]
    task = net.task(researcher, [net.nodes["node_a"]], study_id=study)
    return {
        "organization_id": org,
        "collaboration_id": collab["id"],
        "user_id": admin.call("POST", "/users", 201, json=user)["id"],
        "node_id": root.call("POST", "/nodes", 201, json=node)["id"],
        "study_id": study,
        "task_id": task["id"],
        "run_id": task["runs"][0]["id"],
    }


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # as documented: /api/users/{user_id}
    path_params: dict[str, dict]  # name → schema
    query: dict[str, dict]
    body: dict | None  # JSON schema of the body, or None


def operations(spec: dict) -> list[Operation]:
    """Every documented operation, the deleting ones last (they remove the objects the others aim at)."""
    out = []
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            params = op.get("parameters", [])
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            out.append(Operation(
                method.upper(),
                path,
                {p["name"]: p["schema"] for p in params if p["in"] == "path"},
                {p["name"]: p["schema"] for p in params if p["in"] == "query"},
                body,
            ))
    return sorted(out, key=lambda o: o.method == "DELETE")


@dataclass
class Fuzzer:
    """Sends the requests, checks every answer and records what broke the rules (all of it, for one report)."""

    fz: Fuzzed
    spec: dict
    rng: random.Random = field(default_factory=lambda: random.Random(SEED))
    sent: int = 0
    writes: int = 0  # successful requests that changed the database (the digests do see the hub's writes)
    statuses: Counter[int] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    counter: int = 0

    def __post_init__(self) -> None:
        net = self.fz.net
        self.http = httpx.Client(base_url=net.url, timeout=60)
        self.fingerprint = Fingerprint(self.fz.db)

        def user(name: str, password: str = PASSWORD) -> Callable[[], str]:
            return lambda: net.anon.login(name, password).info["access_token"]

        def node() -> str:
            return net.anon.node_login(net.api_keys["node_a"]).info["access_token"]

        # from least to most powerful: the last of equally successful callers is the one sent every mutation
        self.callers = [Caller("anonymous"), Caller("forged token", "nft." + "f" * 40)]
        for caller in (Caller("node", login=node), Caller("researcher", login=user("researcher_a")),
                       Caller("org admin", login=user("admin_a")), Caller("root", login=user("root", ROOT_PASSWORD))):
            caller.token = caller.login()
            self.callers.append(caller)
        self.state = self.fingerprint()
        self.hints: dict[str, Any] = {
            "organization_id": net.org["A"],
            "collaboration_id": net.collab,
            "node_id": net.nodes["node_a"].id,
            "study_id": self.fz.targets["study_id"],
            "organization_ids": [net.org["A"]],
            "add_organization_ids": [net.org["C"]],
            "remove_organization_ids": [self.fz.targets["organization_id"]],
            "roles": ["viewer"],
            "TokenRequest.username": "researcher_a",  # elsewhere a unique name: users are created with it
            "password": PASSWORD,
            "current_password": PASSWORD,
            "api_key": net.api_keys["node_a"],
            "encryption_key": b64(n=32),
            "signing_key": b64(n=32),
            "input": b64(),
            "result": b64(),
        }

    # ---------------------------------------------------------------------------------------- valid requests
    def resolve(self, schema: dict) -> dict:
        while "$ref" in schema:
            schema = self.spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
        return schema

    def example(self, schema: dict, name: str, model: str = "") -> Any:
        """A valid value for ``schema``: the hint for the field ``model.name`` or ``name``, else the simplest value
        the schema allows."""
        for hint in (f"{model}.{name}", name):
            if hint in self.hints:
                return copy.deepcopy(self.hints[hint])
        schema = self.resolve(schema)
        if "anyOf" in schema:
            return self.example(next(s for s in schema["anyOf"] if s.get("type") != "null"), name)
        if "enum" in schema:
            return schema["enum"][0]
        kind = schema.get("type")
        if kind == "object":
            return {k: self.example(s, k, schema.get("title", "")) for k, s in schema.get("properties", {}).items()}
        if kind == "array":
            return [self.example(schema.get("items", {}), name)]
        if kind == "integer":
            return int(schema.get("minimum", 1))
        if kind == "number":
            return float(schema.get("minimum", 0))
        if kind == "boolean":
            return False
        self.counter += 1  # strings: unique, since names must be
        return f"fuzz-{self.counter}"[: schema.get("maxLength", 100)]

    # --------------------------------------------------------------------------------------------- sending
    def request(
        self,
        caller: Caller,
        op: Operation,
        label: str,
        path: dict[str, str],
        query: list[tuple[str, str]],
        body: bytes | None,
        content_type: str | None = "application/json",
    ) -> int:
        url = op.path.format(**path) + ("?" + "&".join(f"{k}={v}" for k, v in query) if query else "")
        headers = caller.headers()
        if content_type is not None and body is not None:
            headers["Content-Type"] = content_type
        what = f"{caller.name}: {op.method} {op.path} [{label}]"
        try:
            response = self.http.request(op.method, url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            self.problems.append(f"{what}: no answer ({type(exc).__name__}: {exc})")
            self.sent += 1
            return 599
        self.sent += 1
        status = response.status_code
        self.statuses[status] += 1
        after = self.fingerprint()
        if status >= 500:
            self.problems.append(f"{what}: {status} {response.text[:200]}")
        elif status >= 400:
            try:
                assert_clear_4xx(response)
            except (AssertionError, ValueError, KeyError, TypeError):
                self.problems.append(f"{what}: unclear {status}: {response.text[:200]!r} ({len(response.text)} chars)")
            changed = sorted(t for t in after if after[t] != self.state[t])
            if changed:
                self.problems.append(f"{what}: refused with {status}, yet changed the tables {changed}")
        elif after != self.state:
            self.writes += 1
        self.state = after
        if status == 401 and caller.login is not None and "www-authenticate" in response.headers:
            caller.token = caller.login()  # the request revoked the caller's own token (logout): log in again
            self.state = self.fingerprint()
        return status

    def fuzz(self, op: Operation) -> int:
        """Send ``op`` valid as every caller, then mutated as the caller that got deepest; its best status."""
        targets = self.fz.targets
        path = {p: str(targets[p]) if p in targets else str(self.example(s, p)) for p, s in op.path_params.items()}
        query = [(q, quote(self.text(self.example(s, q)), safe="")) for q, s in op.query.items()]
        body = self.example(op.body, "body") if op.body is not None else None
        raw = to_json(body) if body is not None else None
        statuses = {c.name: self.request(c, op, "valid", path, query, raw) for c in self.callers}

        def depth(status: int) -> int:  # how far into the hub a request got
            return 0 if status < 400 else {401: 3, 403: 2}.get(status, 1)

        deep = min(reversed(self.callers), key=lambda c: depth(statuses[c.name]))
        others = [c for c in self.callers if c is not deep]
        for label, p, q, b, ctype in self.mutations(op, path, query, body):
            self.request(deep, op, label, p, q, b, ctype)
            if self.rng.random() < OTHER_CALLER_SHARE:
                self.request(self.rng.choice(others), op, label, p, q, b, ctype)
        return statuses[deep.name]

    @staticmethod
    def text(value: Any) -> str:
        return json.dumps(value) if isinstance(value, bool) else str(value)

    def mutations(
        self, op: Operation, path: dict[str, str], query: list[tuple[str, str]], body: Any
    ) -> Iterator[tuple[str, dict[str, str], list[tuple[str, str]], bytes | None, str | None]]:
        raw = to_json(body) if body is not None else None
        for name in op.path_params:
            for label, value in PATH_VALUES.items():
                yield f"path {name}={label}", {**path, name: value}, query, raw, "application/json"
        for i, (name, _) in enumerate(query):
            for label, value in QUERY_VALUES.items():
                changed = [*query[:i], (name, value), *query[i + 1 :]]
                yield f"query {name}={label}", path, changed, raw, "application/json"
            if name not in LONG_POLLS:
                yield f"query {name} missing", path, query[:i] + query[i + 1 :], raw, "application/json"
            twice = [*query, (name, self.rng.choice(list(QUERY_VALUES.values())))]
            yield f"query {name} twice", path, twice, raw, "application/json"
        if body is None:
            if op.method in ("POST", "PUT", "PATCH", "DELETE"):
                yield "unexpected body", path, query, b"not json", "application/json"
            return
        for where in field_paths(body):
            name = ".".join(map(str, where))
            for label, value in FIELD_VALUES.items():
                yield f"body {name}={label}", path, query, to_json(replaced(body, where, value)), "application/json"
            if isinstance(where[-1], str):
                yield f"body {name} missing", path, query, to_json(without(body, where)), "application/json"
        for where in dict_paths(body):
            for label, key in EXTRA_KEYS.items():
                extra = replaced(body, (*where, key), 1) if where else {**body, key: 1}
                yield f"body extra field {label} in {'.'.join(map(str, where)) or 'body'}", path, query, to_json(
                    extra
                ), "application/json"
        for label, content, ctype in (
            ("empty body", b"", "application/json"),
            ("not JSON", b"not json", "application/json"),
            ("JSON list", b"[]", "application/json"),
            ("JSON null", b"null", "application/json"),
            ("not UTF-8", b"\xff\xfe{\x00}", "application/json"),
            ("wrong content type", raw, "text/plain"),
            ("form", b"a=1&b=2", "application/x-www-form-urlencoded"),
            ("no content type", raw, None),
        ):
            yield label, path, query, content, ctype


def test_every_operation_answers_hostile_requests_with_a_clear_4xx(fuzzed):
    spec = httpx.get(f"{fuzzed.net.url}/openapi.json").json()
    ops = operations(spec)
    fuzzer = Fuzzer(fuzzed, spec)
    started = time.monotonic()
    try:
        reached = {f"{op.method} {op.path}": fuzzer.fuzz(op) for op in ops}
        root = fuzzer.callers[-1]
        health = fuzzer.http.get("/api/health").status_code
        me = fuzzer.http.get("/api/users/me", headers=root.headers()).json()
    finally:
        fuzzer.http.close()
        fuzzer.fingerprint.close()
    took = time.monotonic() - started
    print(f"fuzzed {len(ops)} operations ({sum(s < 400 for s in reached.values())} succeeded unmutated) with "
          f"{fuzzer.sent} requests in {took:.1f} s; statuses {sorted(fuzzer.statuses.items())}")
    assert len(ops) >= 49  # the spec as of writing; more is fine
    assert not fuzzer.problems, f"{len(fuzzer.problems)} problems:\n" + "\n".join(fuzzer.problems[:60])
    assert fuzzer.sent <= MAX_REQUESTS
    assert fuzzer.writes > 0
    # every operation was reached past authentication by one caller (else its mutations tested only the 401)
    assert not [k for k, status in reached.items() if status == 401], reached
    assert (health, me["username"]) == (200, "root")  # still serving, and root's account intact


# ---------------------------------------------------------------------------------------------- the node channel
def _channel(url: str, token: str | None):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return connect(f"{url.replace('http://', 'ws://')}/api/runs/channel", additional_headers=headers, max_size=None)


def _frames(entry: dict) -> Iterator[tuple[str, str | bytes]]:
    """(label, frame) pairs: wrong types, unknown and malformed ops, mutated ledger entries, huge and binary frames."""
    for label, text in (
        ("empty", ""),
        ("null", "null"),
        ("list", "[]"),
        ("string", '"next"'),
        ("number", "42"),
        ("no op", "{}"),
        ("not JSON", "{op: next}"),
        ("deep", "[" * 100_000),
        ("5000 digits", '{"op": "ledger_head", "id": ' + "1" * 5000 + "}"),
        ("NaN id", '{"op": "ledger_head", "id": NaN}'),
    ):
        yield label, text
    yield "binary, not UTF-8", b"\xff\xfe\x00"
    yield "binary JSON", b'{"op": "ledger_head"}'
    yield "huge frame", json.dumps({"op": "ledger_head", "pad": "x" * 5_000_000})
    for label, value in FIELD_VALUES.items():
        yield f"op={label}", to_json({"op": value}).decode()
        yield f"id={label}", to_json({"op": "ledger_head", "id": value}).decode()
        yield f"next timeout={label}", to_json({"op": "next", "timeout": value}).decode()
        yield f"update run_id={label}", to_json({"op": "update", "run_id": value}).decode()
        for name in ("status", "progress", "log", "result"):
            yield f"update {name}={label}", to_json({"op": "update", "run_id": 999_999, name: value}).decode()
        yield f"ledger entries={label}", to_json({"op": "ledger", "entries": value}).decode()
        yield f"ledger entries=[{label}]", to_json({"op": "ledger", "entries": [value]}).decode()
        for name in entry:
            bad = {**entry, name: value}
            yield f"ledger entry {name}={label}", to_json({"op": "ledger", "entries": [bad]}).decode()
    yield "huge op", json.dumps({"op": "x" * 1_000_000})
    for label, key in EXTRA_KEYS.items():
        yield f"extra field {label}", to_json({"op": "ledger_head", key: 1}).decode()
        yield f"update extra field {label}", to_json({"op": "update", "run_id": 999_999, key: 1}).decode()
    for name in entry:
        yield f"ledger entry without {name}", to_json({"op": "ledger", "entries": [without(entry, (name,))]}).decode()
    yield "ledger 501 entries", to_json({"op": "ledger", "entries": [entry] * 501}).decode()
    yield "next, no wait", '{"op": "next", "timeout": 0}'


def test_channel_answers_fuzzed_frames_and_stays_open(fuzzed):
    net = fuzzed.net
    node = net.new_node("fuzz_channel")
    ident = Identity.generate()
    keys = {"encryption_key": ident.encryption_public, "signing_key": ident.signing_public}
    node.call("PUT", "/nodes/me/keys", json=keys)
    entry = make_entry(1, "run_completed", "node", {"run": 1}, GENESIS, ident).to_dict()
    token = node.http.headers["Authorization"].split(" ", 1)[1]
    problems: list[str] = []
    sent = 0
    with closing(Fingerprint(fuzzed.db)) as fingerprint, _channel(net.url, token) as ws:
        state = fingerprint()
        for label, frame in _frames(entry):
            ws.send(frame)
            sent += 1
            try:
                reply = json.loads(ws.recv(timeout=30))
            except Exception as exc:  # any failure is the finding
                problems.append(f"{label}: no reply ({type(exc).__name__}: {exc})")
                break
            after, before = fingerprint(), state
            state = after
            if reply.get("op") != "error":
                if reply.get("op") not in ("ledger_ok", "idle", "run", "updated"):
                    problems.append(f"{label}: unexpected reply {str(reply)[:200]}")
                continue
            status, detail = reply.get("status"), reply.get("detail")
            if not (isinstance(status, int) and 400 <= status < 500):
                problems.append(f"{label}: status {status}: {str(detail)[:200]}")
            if not (isinstance(detail, str) and 0 < len(detail) < 5000):
                problems.append(f"{label}: unclear detail ({len(str(detail))} chars): {str(detail)[:200]!r}")
            if after != before:
                problems.append(f"{label}: refused with {status}, yet changed the database")
        ws.send('{"op": "ledger_head"}')
        assert json.loads(ws.recv(timeout=10)) == {"op": "ledger_ok", "head": 0, "hash": None}  # still open
    print(f"sent {sent} fuzzed frames")
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:60])
    assert httpx.get(f"{net.url}/api/health").status_code == 200


@pytest.mark.parametrize(
    ("token", "status"),
    [(None, 403), ("", 403), ("forged", 403), ("x" * 5000, 403), ("user", 403), ("x" * 10_000, 431)],
    ids=["none", "empty", "forged", "long", "user token", "header line over 8 KiB"],
)
def test_channel_handshake_refuses_non_nodes(fuzzed, token, status):
    if token == "user":
        token = fuzzed.net.researcher_a.http.headers["Authorization"].split(" ", 1)[1]
    with pytest.raises(InvalidStatus) as refused:
        _channel(fuzzed.net.url, token).close()
    assert refused.value.response.status_code == status
