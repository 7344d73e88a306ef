"""Researcher SDK: log in, manage keys, create end-to-end encrypted tasks, wait, fetch and verify results.

>>> c = Client("http://127.0.0.1:8000").login("alice", "secret")     # doctest: +SKIP
>>> c.ensure_keys()                                                   # doctest: +SKIP
>>> task = c.create_task(1, "nordfed.count", {})                      # doctest: +SKIP
>>> c.wait(task["id"]); c.results(task["id"])                         # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import httpx

import nordfed.node.builtin  # noqa: F401  (built-in algorithms must be known to the client too)
from nordfed.client.errors import HubError, HubUnreachable, NodeOfflineError, NotLoggedIn
from nordfed.fed import wire
from nordfed.fed.protocol import get_algorithm
from nordfed.privacy.crypto import Identity, VerificationError, b64, open_result, seal_task_input

FINISHED = frozenset({"completed", "failed", "refused", "cancelled"})


def hub_base_url(url: str) -> str:
    """The hub's base URL as the client keeps it: ``http(s)://host[:port]`` without a trailing ``/`` or ``/api``
    (the hub's startup banner and API paths name the ``/api`` URL, so both forms are accepted).

    Raises ValueError naming the URL when it has no http:// or https:// scheme or no host.
    """
    base = url.strip().rstrip("/").removesuffix("/api").rstrip("/")
    try:
        parsed = httpx.URL(base)
    except httpx.InvalidURL as exc:
        raise ValueError(f"hub URL {url!r} is not a valid URL: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        hint = "http:// or https://" if "://" in base else f"a scheme: use http://{base} (https:// with TLS)"
        raise ValueError(f"hub URL {url!r} needs {hint}")
    if not parsed.host:
        raise ValueError(f"hub URL {url!r} names no host")
    return base


def nordfed_home() -> Path:
    """Where client state lives: ``$NORDFED_HOME`` or ``~/.nordfed``."""
    return Path(os.environ.get("NORDFED_HOME") or Path.home() / ".nordfed")


@lru_cache(maxsize=256)
def _algorithm_ref(name: str) -> tuple[str, str, str]:
    """(name, version, code hash) of a registered algorithm; hashing reads the module source, so cache it."""
    algo = get_algorithm(name)
    return algo.name, algo.version, algo.code_hash


@dataclass(frozen=True)
class RunResult:
    run_id: int
    node_id: int
    node_name: str
    status: str
    log: str
    value: Any = None


class Client:
    """A researcher's connection to one hub. State (token, key paths, pinned node keys) lives in ``home``."""

    def __init__(self, hub_url: str, token: str | None = None, key_dir: str | Path | None = None,
                 home: str | Path | None = None, node_keys: Mapping[str, str] | None = None):
        self.hub_url = hub_base_url(hub_url)
        self.home = Path(home) if home is not None else nordfed_home()
        self.token = token
        self.key_dir = Path(key_dir) if key_dir is not None else None
        #: node name → base64 signing key given explicitly (instead of trust on first use)
        self.explicit_node_keys = dict(node_keys or {})
        self.user: dict[str, Any] = {}
        self._identity: Identity | None = None
        self._nodes_cache: dict[int, tuple[float, list[dict[str, Any]]]] = {}
        self.http = httpx.Client(base_url=self.hub_url, timeout=httpx.Timeout(30.0),
                                 verify=self.hub_url.startswith("https"))

    # ------------------------------------------------------------------ state
    @classmethod
    def from_state(cls, home: str | Path | None = None) -> Client:
        """The client saved by ``nordfed login``."""
        h = Path(home) if home is not None else nordfed_home()
        path = h / "config.json"
        if not path.exists():
            raise FileNotFoundError(f"{path} not found; run `nordfed login` first")
        try:
            cfg = json.loads(path.read_text())
            c = cls(cfg["hub_url"], token=cfg.get("token"), key_dir=cfg.get("key_dir"), home=h)
        except (ValueError, KeyError, TypeError) as exc:  # edited by hand or cut short
            raise ValueError(f"{path}: unusable ({exc}); run `nordfed login` again") from None
        c.user = cfg.get("user", {})
        return c

    def save_state(self) -> Path:
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.home / "config.json"
        data = {"hub_url": self.hub_url, "token": self.token, "user": self.user,
                "key_dir": str(self.key_dir) if self.key_dir else None}
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2)
        tmp.replace(path)
        return path

    # ------------------------------------------------------------------ http
    def request(self, method: str, path: str, **kw: Any) -> Any:
        """One API call; every failure is a :class:`HubError` (unreachable hub and refused session included)."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            r = self.http.request(method, path, headers=headers, **kw)
        except httpx.TransportError as exc:
            raise HubUnreachable(self.hub_url, exc) from exc
        if r.status_code < 400:
            return r.json() if r.content else None
        try:
            detail = str(r.json().get("detail"))
        except (ValueError, AttributeError):
            detail = r.text[:200]
        # A 401 about the bearer token carries WWW-Authenticate (RFC 6750); a wrong password does not.
        if r.status_code == 401 and r.headers.get("www-authenticate", "").lower().startswith("bearer"):
            raise NotLoggedIn(401, detail, self._login_hint())
        raise HubError(r.status_code, detail)

    def _login_hint(self) -> str:
        again = f"run `nordfed login --hub {self.hub_url} -u {self.user.get('username') or 'USER'}`"
        if self.token is None:
            return f"not logged in: {again}"
        return f"your login at {self.hub_url} expired or was revoked: {again}"

    def login(self, username: str, password: str) -> Client:
        d = self.request("POST", "/api/token", json={"username": username, "password": password})
        self.token = d["access_token"]
        self.user = {"username": username, "id": d["user_id"], "organization_id": d["organization_id"],
                     "roles": d.get("roles", [])}
        if self.key_dir is None:
            self.key_dir = self.home / "keys" / username
        return self

    # ------------------------------------------------------------------ keys
    @property
    def identity(self) -> Identity:
        if self._identity is None:
            if self.key_dir is None:
                raise RuntimeError("no key directory; log in first or pass key_dir")
            self._identity = Identity.load(self.key_dir)
        return self._identity

    def ensure_keys(self, upload: bool = True) -> Identity:
        """Load this researcher's key pairs (creating them on first use) and publish the public halves."""
        if self.key_dir is None:
            raise RuntimeError("no key directory; log in first or pass key_dir")
        self._identity = Identity.load_or_create(self.key_dir)
        if upload:
            self.request("PUT", "/api/users/me/keys", json={"encryption_key": self._identity.encryption_public,
                                                            "signing_key": self._identity.signing_public})
        return self._identity

    def _pins_path(self) -> Path:
        return self.home / "known_nodes.json"

    def pinned_nodes(self) -> dict[str, dict[str, Any]]:
        """Node id → ``{name, signing_key, encryption_key}`` pinned for this hub (on first use or by
        :meth:`trust_node`)."""
        path = self._pins_path()
        return json.loads(path.read_text()).get(self.hub_url, {}) if path.exists() else {}

    def nodes(self, collaboration_id: int, max_age_s: float = 0.0) -> list[dict[str, Any]]:
        """The collaboration's nodes, with their keys checked against the pins (trust on first use).

        ``max_age_s`` allows reusing a listing fetched that recently (saves a round trip per task).
        """
        cached = self._nodes_cache.get(collaboration_id)
        if cached is not None and time.monotonic() - cached[0] <= max_age_s:
            return cached[1]
        nodes = self.request("GET", f"/api/collaborations/{collaboration_id}/nodes")
        path = self._pins_path()
        pins: dict[str, dict[str, Any]] = json.loads(path.read_text()) if path.exists() else {}
        hub_pins = pins.setdefault(self.hub_url, {})
        changed = False
        for n in nodes:
            if not n.get("signing_key") or not n.get("encryption_key"):
                continue
            keys = {"signing_key": n["signing_key"], "encryption_key": n["encryption_key"]}
            explicit = self.explicit_node_keys.get(n["name"])
            if explicit is not None and explicit != n["signing_key"]:
                raise VerificationError(f"node {n['name']}: the hub publishes a signing key that differs from "
                                        "the one given explicitly")
            pinned = hub_pins.get(str(n["id"]))
            if pinned is None:
                hub_pins[str(n["id"])] = {"name": n["name"], **keys}
                changed = True
            elif {k: pinned.get(k) for k in keys} != keys:
                raise VerificationError(
                    f"node {n['name']} (id {n['id']}): the hub publishes keys that differ from those pinned on first "
                    f"use in {path} (signing key {pinned.get('signing_key')} then, {n['signing_key']} now); nothing "
                    "was sent. Ask the site whether it replaced them; if it confirms the new key, pin it with "
                    f"`nordfed node trust {n['name']} -c {collaboration_id} --signing-key KEY_FROM_THE_SITE` (and "
                    "--encryption-key when that changed too)")
        if changed:
            self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
            path.write_text(json.dumps(pins, indent=2))
        self._nodes_cache[collaboration_id] = (time.monotonic(), nodes)
        return nodes

    def trust_node(self, collaboration_id: int, node: str | int, signing_key: str,
                   encryption_key: str | None = None) -> dict[str, Any]:
        """Re-pin a node whose keys changed (its operator replaced them) to the keys the hub now publishes, but only
        if they are the ones given here, learnt from the site out of band: the hub alone could be lying. The
        encryption key must be given too when it changed. Returns the node as listed."""
        self._nodes_cache.pop(collaboration_id, None)
        listing = self.request("GET", f"/api/collaborations/{collaboration_id}/nodes")
        found = [n for n in listing if str(n["id"]) == str(node) or n["name"] == str(node)]
        if len(found) != 1:
            raise ValueError(f"no single node {node!r} in collaboration {collaboration_id}")
        n = found[0]
        if n.get("signing_key") != signing_key:
            raise VerificationError(f"node {n['name']}: the hub publishes signing key {n.get('signing_key')}, not "
                                    "the one given; nothing was pinned")
        path = self._pins_path()
        pins: dict[str, dict[str, Any]] = json.loads(path.read_text()) if path.exists() else {}
        hub_pins = pins.setdefault(self.hub_url, {})
        old = hub_pins.get(str(n["id"]), {})
        if old.get("encryption_key") not in (None, n["encryption_key"]) and encryption_key != n["encryption_key"]:
            raise VerificationError(f"node {n['name']}: its encryption key changed too; give the new one (from the "
                                    "site) to pin it; nothing was pinned")
        hub_pins[str(n["id"])] = {"name": n["name"], "signing_key": n["signing_key"],
                                  "encryption_key": n["encryption_key"]}
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.write_text(json.dumps(pins, indent=2))
        return n

    # ------------------------------------------------------------------ tasks
    def create_task(self, collaboration_id: int, algorithm: str, params: Mapping[str, Any],
                    node_ids: Sequence[int] | None = None, description: str | None = None,
                    study_id: int | None = None, secure_sum: bool = False) -> dict[str, Any]:
        """Sign the input once, seal it to each node's key and submit the task; with ``secure_sum`` the nodes
        mask their results for a sum over all of them (:mod:`nordfed.privacy.secure_sum`), named by node id with
        the encryption keys pinned here."""
        name, version, code_hash = _algorithm_ref(algorithm)
        me = self.identity
        # a secure sum needs every node's answer: their status must be recent, the keys may be older
        listing = self.nodes(collaboration_id, max_age_s=5.0 if secure_sum else 60.0)
        if node_ids is not None and not set(node_ids) <= {n["id"] for n in listing if n.get("encryption_key")}:
            listing = self.nodes(collaboration_id)  # a node we have not seen (or without keys yet): refresh
        nodes = [n for n in listing if node_ids is None or n["id"] in node_ids]
        if not nodes:
            raise ValueError(f"collaboration {collaboration_id} has no matching nodes")
        offline = [n["name"] for n in nodes if n.get("status") == "offline"]
        if secure_sum and offline:
            raise NodeOfflineError(offline)
        payload = {"nonce": secrets.token_hex(16), "algorithm": name, "version": version, "code_hash": code_hash,
                   "params": b64(wire.encode(dict(params))),
                   "username": self.user.get("username"), "organization_id": self.user.get("organization_id"),
                   "encryption_key": me.encryption_public, "created_at": time.time()}
        if secure_sum:
            payload["secure_sum"] = {"peers": {str(n["id"]): n["encryption_key"] for n in nodes}}
        runs = []
        for n in nodes:
            if not n.get("encryption_key"):
                raise ValueError(f"node {n['name']} has not published keys yet (has it ever started?)")
            runs.append({"node_id": n["id"], "input": seal_task_input(me, payload, n["encryption_key"])})
        body = {"collaboration_id": collaboration_id, "algorithm": name, "version": version,
                "code_hash": code_hash, "description": description, "study_id": study_id, "runs": runs}
        return self.request("POST", "/api/tasks", json=body)

    def task(self, task_id: int) -> dict[str, Any]:
        return self.request("GET", f"/api/tasks/{task_id}")

    def cancel(self, task_id: int) -> dict[str, Any]:
        return self.request("POST", f"/api/tasks/{task_id}/cancel")

    def wait(self, task_id: int, timeout: float = 300.0, poll: float = 30.0,
             on_update: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Long-poll the hub until every run finished; ``on_update`` sees the task after each poll."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            t = min(poll, max(left, 0.0))
            task = self.request("GET", f"/api/tasks/{task_id}/wait", params={"timeout": t}, timeout=t + 15)
            if on_update is not None:
                on_update(task)
            if all(r["status"] in FINISHED for r in task["runs"]):
                return task
            if time.monotonic() >= deadline:
                raise TimeoutError(f"task {task_id} did not finish within {timeout:g} s")

    def results(self, task_id: int, collaboration_id: int | None = None, wait: float = 0.0) -> list[RunResult]:
        """Fetch, verify (node signature over run, task and result) and decrypt every finished run.

        ``wait`` > 0 lets the hub long-poll that many seconds until every run finished (one request instead of
        :meth:`wait` then this); runs still going then come back with their current status.
        """
        if wait > 0:
            rows = self.request("GET", f"/api/tasks/{task_id}/results", params={"wait": wait}, timeout=wait + 15)
        else:
            rows = self.request("GET", f"/api/tasks/{task_id}/results")
        if collaboration_id is None:
            collaboration_id = self.task(task_id)["collaboration_id"]
        pins = self.pinned_nodes()
        if any(str(r["node_id"]) not in pins for r in rows):
            self.nodes(collaboration_id)
            pins = self.pinned_nodes()
        out = []
        for r in rows:
            value = None
            if r["status"] == "completed":
                if r.get("result") is None:
                    raise VerificationError(f"run {r['run_id']} at {r['node_name']} is completed without a result")
                pin = pins.get(str(r["node_id"]))
                key = self.explicit_node_keys.get(r["node_name"]) or (pin or {}).get("signing_key")
                if key is None:
                    raise VerificationError(f"no signing key known for node {r['node_name']}")
                try:
                    raw = open_result(self.identity, r["result"], key, r["run_id"], task_id)
                except VerificationError as exc:
                    raise VerificationError(f"result of {r['node_name']} (run {r['run_id']}): {exc}") from exc
                value = wire.decode(raw)
            out.append(RunResult(r["run_id"], r["node_id"], r["node_name"], r["status"], r.get("log") or "", value))
        return out

    # ------------------------------------------------------------------ studies
    def create_study(self, collaboration_id: int, name: str, description: str | None = None,
                     organization_ids: Sequence[int] | None = None) -> dict[str, Any]:
        """A study: a subset of the collaboration's organizations (default: all) that tasks can belong to."""
        body = {"collaboration_id": collaboration_id, "name": name, "description": description,
                "organization_ids": list(organization_ids) if organization_ids is not None else None}
        return self.request("POST", "/api/studies", json=body)

    def studies(self, collaboration_id: int | None = None) -> list[dict[str, Any]]:
        params = {"collaboration_id": collaboration_id} if collaboration_id is not None else {}
        return self.request("GET", "/api/studies", params=params)

    def study(self, study_id: int) -> dict[str, Any]:
        """A study with its task count and tasks by status."""
        return self.request("GET", f"/api/studies/{study_id}")

    def ensure_study(self, collaboration_id: int, name: str, description: str | None = None,
                     organization_ids: Sequence[int] | None = None) -> dict[str, Any]:
        """The collaboration's study called ``name``, created when missing with ``organization_ids`` (default: all of
        the collaboration's). A study found by name is returned as it is, whatever its organizations: the caller
        compares them."""
        def find() -> dict[str, Any] | None:
            return next((st for st in self.studies(collaboration_id) if st["name"] == name), None)

        found = find()
        if found is not None:
            return found
        try:
            return self.create_study(collaboration_id, name, description, organization_ids)
        except HubError as exc:  # created meanwhile by someone else
            found = find() if exc.status == 409 else None
            if found is None:
                raise
            return found

    def update_study(self, study_id: int, **changes: Any) -> dict[str, Any]:
        """Change ``name``, ``description`` or ``organization_ids``."""
        return self.request("PATCH", f"/api/studies/{study_id}", json=changes)

    def delete_study(self, study_id: int) -> dict[str, Any]:
        return self.request("DELETE", f"/api/studies/{study_id}")

    def tasks(self, collaboration_id: int | None = None, study_id: int | None = None, status: str | None = None,
              limit: int = 100) -> list[dict[str, Any]]:
        params = {k: v for k, v in (("collaboration_id", collaboration_id), ("study_id", study_id),
                                    ("status", status), ("limit", limit)) if v is not None}
        return self.request("GET", "/api/tasks", params=params)

    # ------------------------------------------------------------------ session and administration
    def logout(self) -> None:
        """Revoke this client's token at the hub (it stops working at once) and forget it."""
        if self.token:
            try:
                self.request("POST", "/api/token/revoke")
            except HubError as exc:
                if exc.status != 401:  # already expired or revoked: nothing left to revoke
                    raise
        self.token = None

    def organizations(self) -> list[dict[str, Any]]:
        """Every organization on the hub (any principal may list them)."""
        return self.request("GET", "/api/organizations")

    def collaborations(self) -> list[dict[str, Any]]:
        """The collaborations the caller can see."""
        return self.request("GET", "/api/collaborations")

    def list_nodes(self, collaboration_id: int | None = None,
                   organization_id: int | None = None) -> list[dict[str, Any]]:
        """The nodes the caller can see, disabled ones included; unlike :meth:`nodes`, pins no keys."""
        params = {k: v for k, v in (("collaboration_id", collaboration_id), ("organization_id", organization_id))
                  if v is not None}
        return self.request("GET", "/api/nodes", params=params)

    def users(self, organization_id: int | None = None) -> list[dict[str, Any]]:
        params = {"organization_id": organization_id} if organization_id is not None else {}
        return self.request("GET", "/api/users", params=params)

    def update_user(self, user_id: int, **changes: Any) -> dict[str, Any]:
        """Change ``roles``, ``password`` (own: with ``current_password``) or ``disabled``."""
        return self.request("PATCH", f"/api/users/{user_id}", json=changes)

    def delete_user(self, user_id: int) -> dict[str, Any]:
        return self.request("DELETE", f"/api/users/{user_id}")

    def revoke_user_tokens(self, user_id: int) -> int:
        return self.request("DELETE", f"/api/users/{user_id}/tokens")["revoked"]

    def update_collaboration(self, collaboration_id: int, name: str | None = None,
                             add_organization_ids: Sequence[int] = (),
                             remove_organization_ids: Sequence[int] = ()) -> dict[str, Any]:
        body = {"name": name, "add_organization_ids": list(add_organization_ids) or None,
                "remove_organization_ids": list(remove_organization_ids) or None}
        return self.request("PATCH", f"/api/collaborations/{collaboration_id}", json=body)

    def delete_collaboration(self, collaboration_id: int) -> dict[str, Any]:
        return self.request("DELETE", f"/api/collaborations/{collaboration_id}")

    def update_node(self, node_id: int, **changes: Any) -> dict[str, Any]:
        """Change ``name`` or ``disabled``."""
        return self.request("PATCH", f"/api/nodes/{node_id}", json=changes)

    def delete_node(self, node_id: int) -> dict[str, Any]:
        return self.request("DELETE", f"/api/nodes/{node_id}")

    def rotate_node_key(self, node_id: int) -> str:
        """A new api key for the node (shown only now); the old key and the node's tokens stop working."""
        return self.request("POST", f"/api/nodes/{node_id}/api-key")["api_key"]

    def revoke_node_tokens(self, node_id: int) -> int:
        return self.request("DELETE", f"/api/nodes/{node_id}/tokens")["revoked"]

    def update_organization(self, organization_id: int, **changes: Any) -> dict[str, Any]:
        """Change ``name`` or ``country``."""
        return self.request("PATCH", f"/api/organizations/{organization_id}", json=changes)

    def node_ledger_copy(self, node_id: int, epoch: int | None = None, after: int = 0,
                         page: int = 1000) -> dict[str, Any]:
        """The hub copy of a node's ledger in one epoch (default: the current one) after entry ``after``, fetched
        ``page`` entries at a time: ``{node_id, epoch, epochs, signing_keys, restarts, entries}``."""
        params: dict[str, Any] = {"after": after, "limit": page}
        if epoch is not None:
            params["epoch"] = epoch
        copy = self.request("GET", f"/api/nodes/{node_id}/ledger", params=params)
        batch = copy["entries"]
        params["epoch"] = copy["epoch"]  # later pages from the same epoch, even if it is closed meanwhile
        while len(batch) == page:
            params["after"] = int(batch[-1]["seq"])
            batch = self.request("GET", f"/api/nodes/{node_id}/ledger", params=params)["entries"]
            copy["entries"].extend(batch)
        return copy

    def node_ledger(self, node_id: int, after: int = 0, page: int = 1000,
                    epoch: int | None = None) -> list[dict[str, Any]]:
        """The entries of :meth:`node_ledger_copy`."""
        return self.node_ledger_copy(node_id, epoch, after, page)["entries"]

    def restart_node_ledger(self, node_id: int) -> dict[str, Any]:
        """Close the current epoch of the node's hub ledger copy (root or an admin of its organization), so a node
        reinstalled with a fresh ledger can push it; returns the restart record."""
        return self.request("POST", f"/api/nodes/{node_id}/ledger/restart")

    def close(self) -> None:
        self.http.close()
