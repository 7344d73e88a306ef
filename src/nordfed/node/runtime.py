"""The node loop: log in to the hub (outbound only), recover after a crash, wait for runs on its channel (a
WebSocket, :mod:`nordfed.node.channel`), check the node's own policy, run the partial in the warm worker, protect,
sign, encrypt and report the result. Every run and every policy it starts with goes on the node's ledger (see
:mod:`nordfed.node.audit`), which it pushes to the hub between runs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from nordfed.node import masking
from nordfed.node.audit import PUSH_IDLE_S, HubReplica, NodeLedger
from nordfed.node.budget import PrivacyBudget
from nordfed.node.channel import ChannelClosed, ChannelRefused, HubChannel
from nordfed.node.worker import WarmWorker, WorkerSpec, WorkResult
from nordfed.policy.node import NodeConfig, PolicyError, stale_pins
from nordfed.privacy.crypto import Identity, VerificationError, open_task_input, seal_result, unb64, unseal
from nordfed.privacy.secure_sum import SecureSumError

log = logging.getLogger("nordfed.node")
#: seconds a node reuses the hub's listing of peer keys for secure aggregation (a key it lacks is looked up anew)
PEER_LISTING_S = 60.0


class Stop(Exception):
    """Raised from the signal handler to leave a blocking long-poll promptly."""


@dataclass
class Session:
    token: str
    node_id: int
    name: str
    organization_id: int
    collaboration_id: int


class NonceLog:
    """Task nonces this node has executed, so the hub cannot replay a signed input into another task.

    Append-only JSON lines (``{"nonce": task_id}``), one short write per claim through a handle kept open,
    instead of rewriting the whole map per run; a torn last line (crash mid-write) is skipped on reading. The
    ``.json`` map of older versions is still read, never written.
    """

    def __init__(self, path: Path):
        self.path = path
        legacy = path.with_suffix(".json")
        self._seen: dict[str, int] = json.loads(legacy.read_text()) if legacy.exists() else {}
        if path.exists():
            for line in path.read_text().splitlines():
                with contextlib.suppress(ValueError, AttributeError):
                    for nonce, task_id in json.loads(line).items():
                        self._seen.setdefault(str(nonce), int(task_id))
        self._fh = path.open("a", encoding="utf-8")

    def claim(self, nonce: str, task_id: int) -> bool:
        """Record ``nonce`` for ``task_id``; False when it was already used by a different task."""
        prev = self._seen.get(nonce)
        if prev is not None:
            return prev == task_id
        self._seen[nonce] = task_id
        # flushed to the OS: survives a crash of this process (the ledger's task_received precedes it)
        self._fh.write(json.dumps({nonce: task_id}) + "\n")
        self._fh.flush()
        return True

    def close(self) -> None:
        self._fh.close()


def check_cdm(config: NodeConfig) -> None:
    """Refuse a ``cdm_url`` that names no OMOP CDM (:class:`PolicyError`), before the node goes online.

    Open, look, close: the worker opens the CDM only for its tasks, so a typo would otherwise surface as a
    failure of every run."""
    if not config.cdm_url:
        return
    from nordfed.omop.store import CDMError, open_cdm, redacted

    where = f"{config.source[0] if config.source else 'node config'}: field cdm_url"
    try:
        cdm = open_cdm(config.cdm_url)
    except CDMError as exc:
        raise PolicyError(f"{where}: {exc}") from None
    try:
        tables = cdm.table_names()
    except Exception as exc:  # the engine's own error types; the node must not start either way
        raise PolicyError(f"{where}: cannot list the tables of {redacted(config.cdm_url)}: {exc}") from None
    finally:
        cdm.close()
    if "person" not in tables:
        raise PolicyError(f"{where}: {redacted(config.cdm_url)} is not an OMOP CDM (no person table)")


class NodeRuntime:
    def __init__(self, config: NodeConfig, identity: Identity | None = None):
        check_cdm(config)  # before the node writes keys, state or ledger entries, and before it meets the hub
        self.config = config
        self.identity = identity or Identity.load_or_create(config.key_dir)
        state = config.state_path
        state.mkdir(parents=True, exist_ok=True)
        self.nonces = NonceLog(state / "seen_nonces.jsonl")
        self.ledger = NodeLedger(config, self.identity)
        self.replica = HubReplica(self.ledger)
        self.budget = PrivacyBudget(self.ledger, config.policy.privacy_budget)
        self._idle = True  # the last claim found no run
        try:
            self.ledger.check_intact()
            self.ledger.record_policy(config)
        except BaseException:
            self.ledger.close()
            self.nonces.close()
            raise
        # TLS is always verified when used: against the system CAs or the CA file the node pins
        self.tls: ssl.SSLContext | None = None
        if config.hub_url.startswith("https"):
            self.tls = ssl.create_default_context(cafile=str(config.tls_ca_file) if config.tls_ca_file else None)
        self.http = httpx.Client(base_url=config.hub_url.rstrip("/"), verify=self.tls or False,
                                 timeout=httpx.Timeout(10.0))
        self.channel: HubChannel | None = None
        self.session: Session | None = None
        self.worker: WarmWorker | None = None
        self.local_hashes: dict[str, tuple[str, str]] = {}
        self._stopping = False
        self._ledger_state = "new"  # of the run being handled: new → open → sealed | done
        self._peers_seen: tuple[float, list[dict[str, Any]]] | None = None  # (when, hub's node listing)

    # ------------------------------------------------------------------ hub calls
    def _headers(self) -> dict[str, str]:
        assert self.session is not None
        return {"Authorization": f"Bearer {self.session.token}"}

    def login(self) -> Session:
        r = self.http.post("/api/token/node", json={"api_key": self.config.api_key})
        if r.status_code != 200:
            raise RuntimeError(f"hub refused the node api key: {r.status_code} {_detail(r)}")
        d = r.json()
        self.session = Session(d["access_token"], d["node_id"], d["name"], d["organization_id"], d["collaboration_id"])
        keys = {"encryption_key": self.identity.encryption_public, "signing_key": self.identity.signing_public}
        before = self._call("GET", "/api/nodes/me").json()
        if before.get("signing_key") and {k: before.get(k) for k in keys} != keys:
            self._announce_new_keys(before)
        self._call("PUT", "/api/nodes/me/keys", json=keys)
        return self.session

    def _announce_new_keys(self, before: Mapping[str, Any]) -> None:
        """The node's keys differ from those it registered before (key_dir wiped, restored or replaced):
        researchers' clients pinned the earlier ones and refuse to send it tasks until they pin these, which they
        must learn from the site, not from the hub."""
        assert self.session is not None
        ident, s = self.identity, self.session
        log.warning(
            "node %s: its keys differ from those it registered before (signing key %s, now %s); researchers' "
            "clients refuse to send it tasks until they pin the new keys. Give them these, out of band: "
            "nordfed node trust %s -c %s --signing-key %s --encryption-key %s",
            s.name, before.get("signing_key"), ident.signing_public, s.name, s.collaboration_id,
            ident.signing_public, ident.encryption_public)

    def _call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """One hub call; logs in again once on 401 (expired token), retries twice on a dropped connection."""
        for attempt in range(3):
            try:
                r = self.http.request(method, path, headers=self._headers(), **kw)
                break
            except (httpx.ConnectError, httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError):
                if attempt == 2:
                    raise
                time.sleep(0.2 * (attempt + 1))
        if r.status_code == 401:
            self.login()
            r = self.http.request(method, path, headers=self._headers(), **kw)
        if r.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {r.status_code} {_detail(r)}")
        return r

    def _channel(self) -> HubChannel:
        if self.channel is None:
            assert self.session is not None
            try:
                self.channel = HubChannel.open(self.config.hub_url, self.session.token, self.tls)
            except ChannelRefused:  # token expired or revoked: log in again once
                self.login()
                self.channel = HubChannel.open(self.config.hub_url, self.session.token, self.tls)
        return self.channel

    def _close_channel(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None

    def patch(self, run_id: int, **fields: Any) -> None:
        fields = {k: v for k, v in fields.items() if v is not None}
        try:
            self._channel().update(run_id, **fields)
        except ChannelRefused as exc:
            if exc.status != 401:
                raise RuntimeError(f"update of run {run_id}: {exc}") from exc
            self._close_channel()
            self.login()
            try:
                self._channel().update(run_id, **fields)
            except ChannelRefused as again:
                raise RuntimeError(f"update of run {run_id}: {again}") from again

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        pol = self.config.policy
        if self.worker is None:
            self.worker = WarmWorker(WorkerSpec.from_config(self.config))
        s = self.login()  # while the worker warms up
        if s.collaboration_id not in pol.collaborations:
            log.warning("node %s is registered in collaboration %s, which its policy does not allow: every run "
                        "will be refused", s.name, s.collaboration_id)
        rec = self._call("POST", "/api/nodes/me/session").json()
        log.info("node %s (id %s) online at %s; requeued %s, failed %s after crashes", s.name, s.node_id,
                 self.config.hub_url, rec.get("requeued", 0), rec.get("failed", 0))
        self.replica.hub_head = None  # (re)connected: ask the hub what it holds, then push the rest
        self.push_ledger()
        self._warn_stale_pins()  # last: it waits for the worker, which must not hold the node back from going online

    def _warn_stale_pins(self) -> None:
        """After an upgrade of nordfed without re-pinning, every run of the changed algorithms is refused: say so
        once at start, naming them, rather than only in each refusal."""
        if self.local_hashes or self.worker is None:
            return  # checked at the first start; a reconnect changes neither
        try:
            self.worker.wait_ready()
        except RuntimeError:
            return  # the worker did not start: the first run reports it, as before
        self.local_hashes = self.worker.hashes
        stale = stale_pins(self.config.policy, self.local_hashes)
        if stale:
            log.warning("%d pinned algorithm(s) do not match the code of this nordfed and will be refused until "
                        "node.yaml pins it again (`nordfed algorithms --json` or a fresh `nordfed node init`): %s",
                        len(stale), "; ".join(stale))

    def push_ledger(self, batches: int | None = None) -> None:
        try:
            self.replica.push(self._channel(), batches)
        except ChannelRefused:  # 401: token expired or revoked; the next push catches up
            self._close_channel()
            self.login()

    def stop(self) -> None:
        self._close_channel()
        if self.worker is not None:
            self.worker.stop()
            self.worker = None
        self.http.close()
        self.ledger.close()
        self.nonces.close()

    def serve_forever(self, max_runs: int | None = None) -> None:
        """Poll until SIGTERM/SIGINT (or ``max_runs`` runs); network errors back off up to 10 s and retry."""

        def _on_signal(signum: int, _frame: Any) -> None:
            self._stopping = True
            raise Stop()

        old = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        done, backoff, online = 0, 0.5, False
        try:
            while not self._stopping and (max_runs is None or done < max_runs):
                try:
                    if not online:
                        self.start()  # again after the hub was unreachable: crash recovery is idempotent
                        online = True
                    run = self.next_run()
                    backoff = 0.5
                except (httpx.TransportError, ChannelClosed) as exc:
                    online = False
                    self._close_channel()
                    log.warning("hub unreachable (%s); retrying in %.1f s", exc, backoff)
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 10.0)
                    continue
                if run is not None:
                    self._handle_safely(run)
                    done += 1
        except Stop:
            log.info("node %s stopping", self.config.name)
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            self.stop()

    def _handle_safely(self, run: Mapping[str, Any]) -> None:
        """One bad run (or a run cancelled meanwhile: the hub answers 409) must not stop the node."""
        self._ledger_state = "new"
        try:
            self.handle(run)
        except (RuntimeError, httpx.HTTPError, ChannelClosed, KeyError, ValueError, TypeError) as exc:
            log.error("run %s: %s", run.get("run_id"), exc)
            with contextlib.suppress(KeyError, ValueError, TypeError):  # a run without ids cannot be recorded
                if self._ledger_state == "open":
                    self.ledger.run_failed(run, f"node error: {type(exc).__name__}: {exc}")
                elif self._ledger_state == "sealed":
                    self.ledger.result_not_posted(run, f"{type(exc).__name__}: {exc}")
            # the run may be cancelled or finished already; then there is nothing left to report
            with contextlib.suppress(RuntimeError, httpx.HTTPError, ChannelClosed, KeyError, ValueError):
                self.patch(int(run["run_id"]), status="failed", log=f"[{self.config.name}] node error: {exc}")

    def next_run(self) -> dict[str, Any] | None:
        """Claim the next run; ledger entries go to the hub before waiting, never between a claim and its answer:
        all of them when idle, one batch at most every PUSH_EVERY_S while busy (the hub checks every signature)."""
        if self.replica.due(self._idle):
            self.push_ledger(None if self._idle else 1)
        wait = self.config.poll_timeout_s
        if self.replica.pending():
            wait = min(wait, PUSH_IDLE_S)  # no run by then: idle, push at the next call
        try:
            run = self._channel().next(wait)
            self._idle = run is None
            return run
        except ChannelRefused as exc:
            if exc.status != 401:
                raise RuntimeError(f"claiming the next run: {exc}") from exc
            self._close_channel()  # expired or revoked: the next call logs in again
            self.login()
            return None

    # ------------------------------------------------------------------ one run
    def handle(self, run: Mapping[str, Any]) -> str:
        """Check, execute and answer one claimed run; returns the final status.

        Ledger: ``task_received`` first, then exactly one of ``run_refused``, ``run_completed`` (before the
        result is posted) or ``run_failed``; ``_ledger_state`` tells the caller which is still owed on an error.
        """
        run_id = int(run["run_id"])
        ref = f"{run['algorithm']}@{run['version']}"
        me = f"[{self.config.name}]"
        signed, reason = self._open_input(run)
        self.ledger.task_received(run, signed.get("username") if signed else None,
                                  str(signed["params"]) if signed else None)
        self._ledger_state = "open"
        if reason is None and signed is not None:
            assert self.worker is not None
            self.worker.wait_ready()  # the first run may arrive while the worker is still importing
            self.local_hashes = self.worker.hashes
            reason = self._admit(run, signed) or self.budget.admit(run, signed, self.config.policy.dp_required,
                                                                    self.worker.dp_algorithms)
        if reason is not None or signed is None:
            log.warning("run %s (%s) refused: %s", run_id, ref, reason)
            self.ledger.run_refused(run, str(reason))
            self._ledger_state = "done"
            self.patch(run_id, status="refused", progress=1.0, log=f"{me} refused: {reason}")
            return "refused"
        started = f"{me} policy ok; running {ref} for {signed['username']}"
        lines = [started]

        def report_running() -> None:
            lines.clear()  # already reported; the final patch appends only what follows
            self.patch(run_id, progress=0.1, log=started)

        assert self.worker is not None
        t0 = time.perf_counter()
        out = self.worker.run(run["algorithm"], unb64(signed["params"], "params"), self.config.policy.time_limit_s,
                              on_slow=report_running)
        took = f"{(time.perf_counter() - t0) * 1000:.0f} ms"
        peers = masking.peers_of(signed)  # checked when the run was admitted
        if out.status == "completed" and out.result is not None and peers is not None:
            out = self._mask(out, peers, signed)
        if out.status == "completed" and out.result is not None:
            blob = seal_result(self.identity, run_id, int(run["task_id"]), out.result, signed["encryption_key"])
            self.ledger.run_completed(run, blob, secure_sum=peers is not None)
            self._ledger_state = "sealed"
            lines.append(f"{me} completed in {took}")
            self.patch(run_id, status="completed", progress=1.0, result=blob, log="\n".join(lines))
            log.info("run %s (%s) completed in %s", run_id, ref, took)
        else:
            # disclosure-control messages start with "refused: " themselves; say it once
            said = out.message.removeprefix(f"{out.status}: ")
            log.warning("run %s (%s) %s: %s", run_id, ref, out.status, said)
            message = out.message
            if out.status == "failed" and not self.config.policy.share_error_details:
                message = f"{out.reason or 'the algorithm failed'}; details withheld by this site " \
                          "(share_error_details: false; the node's log has them)"
            record = self.ledger.run_refused if out.status == "refused" else self.ledger.run_failed
            record(run, out.reason or out.status, message)
            self._ledger_state = "done"
            lines.append(f"{me} {out.status}: {message.removeprefix(f'{out.status}: ')}")
            self.patch(run_id, status=out.status, progress=1.0, log="\n".join(lines))
        self._ledger_state = "done"
        return out.status

    def _open_input(self, run: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
        """Decrypt the task input and verify the researcher's signature against this node's pinned keys."""
        keys = self.config.policy.researcher_keys()
        try:
            return open_task_input(self.identity, str(run["input"]), keys), None
        except VerificationError as exc:
            return None, f"task input rejected: {exc}{self._signer_hint(run, keys)}"

    def _signer_hint(self, run: Mapping[str, Any], keys: Mapping[str, str]) -> str:
        """What the site does about a researcher whose signature fails or who is not pinned: most often she has new
        keys (``nordfed login`` on another machine) or is new, and only node.yaml can say she may run here."""
        try:
            _, body = unseal(self.identity, str(run["input"]))
            username = str(json.loads(body)["username"])
        except (VerificationError, ValueError, KeyError, TypeError):
            return ""  # not for this node's key, or not a task payload: nothing to add
        if username in keys:
            return (f" under the signing key this node pins for researcher {username!r} ({keys[username][:12]}…): "
                    "if her keys changed (`nordfed login` on another machine or key folder), the site pins her new "
                    "signing key in node.yaml (policy.researchers) and restarts the node")
        return (f"; to allow {username!r}, the site adds her signing key (printed by her `nordfed login`) to node.yaml "
                "(policy.researchers) and restarts the node")

    def _admit(self, run: Mapping[str, Any], signed: Mapping[str, Any]) -> str | None:
        """Apply the policy to a verified input: why it may not run here, or None."""
        pol = self.config.policy
        assert self.session is not None
        reason = pol.check(run, signed, self.session.collaboration_id, self.local_hashes)
        if reason is None and (signed["algorithm"] not in self.local_hashes
                               or self.local_hashes[signed["algorithm"]] != (signed["version"], signed["code_hash"])):
            reason = f"local code of {signed['algorithm']} does not match the pinned version/code hash"
        if reason is None and time.time() - float(signed["created_at"]) > pol.max_task_age_s:
            reason = f"task input is older than this node's limit ({pol.max_task_age_s:g} s)"
        if reason is None:
            reason = self._check_secure_sum(signed)
        if reason is None and not self.nonces.claim(str(signed["nonce"]), int(run["task_id"])):
            reason = "task input was already used in another task (replay)"
        return reason

    def _check_secure_sum(self, signed: Mapping[str, Any]) -> str | None:
        """Why the task's secure aggregation (or its absence) is not acceptable here, or None."""
        pol = self.config.policy
        required = signed["algorithm"] in pol.secure_aggregation
        try:
            peers = masking.peers_of(signed)
            if peers is None:
                return (f"this node releases {signed['algorithm']} only under secure aggregation, as a sum over "
                        "nodes (nordfed task create --secure-sum; in code Federation.aggregate)") if required else None
            assert self.session is not None
            min_sites = pol.secure_aggregation_min_sites if required else 1
            try:  # the listing a moment ago serves a fit's rounds; any key it lacks is looked up afresh
                masking.check_peers(peers, self.session.node_id, self.identity, self._peer_listing(fresh=False),
                                    min_sites)
            except VerificationError:
                masking.check_peers(peers, self.session.node_id, self.identity, self._peer_listing(fresh=True),
                                    min_sites)
        except VerificationError as exc:
            return str(exc)
        except (RuntimeError, httpx.HTTPError) as exc:  # the hub could not be asked: no sum without checked keys
            return f"secure aggregation: could not check the peer keys with the hub ({exc})"
        return None

    def _peer_listing(self, fresh: bool) -> list[dict[str, Any]]:
        """The collaboration's nodes as the hub lists them to this node (kept for :data:`PEER_LISTING_S`)."""
        assert self.session is not None
        cached = self._peers_seen
        if fresh or cached is None or time.monotonic() - cached[0] > PEER_LISTING_S:
            listing = self._call("GET", f"/api/collaborations/{self.session.collaboration_id}/nodes").json()
            self._peers_seen = cached = (time.monotonic(), listing)
        return cached[1]

    def _mask(self, out: WorkResult, peers: Mapping[str, str], signed: Mapping[str, Any]) -> WorkResult:
        assert self.session is not None
        try:
            return WorkResult("completed", masking.masked(out.result or b"", peers, self.session.node_id,
                                                          self.identity, signed))
        except (SecureSumError, VerificationError) as exc:
            return WorkResult("failed", message=f"secure aggregation: {exc}",
                              reason="the result could not be masked for secure aggregation")


def _detail(r: httpx.Response) -> str:
    try:
        return str(r.json().get("detail"))
    except (ValueError, AttributeError):
        return r.text[:200]
