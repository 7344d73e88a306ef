"""The node's WebSocket to the hub (``/api/runs/channel``): claim the next run and report on runs, one JSON message
each way instead of one HTTP request per call; the node also pushes its ledger entries here (the hub copy,
:mod:`nordfed.hub.routers.ledger`). Outbound only, like the rest of the node; TLS verified as for HTTP.

>>> ch = HubChannel.open("https://hub.example.org", token)                # doctest: +SKIP
>>> run = ch.next(timeout=30)                                              # doctest: +SKIP
>>> ch.update(run["run_id"], status="completed", result=blob)              # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import ssl
from typing import Any

from websockets.exceptions import InvalidHandshake, WebSocketException
from websockets.sync.client import connect

MAX_MESSAGE = 256 * 1024 * 1024  # as the hub's body limit: a result may be large


class ChannelClosed(Exception):
    """The connection is gone (or was never made); the caller reconnects, as after a network error."""


class ChannelRefused(Exception):
    """The hub answered a request with an error (``status`` as HTTP would: 401, 403, 404, 409, 422, 503)."""

    def __init__(self, status: int, detail: str):
        super().__init__(f"{status} {detail}")
        self.status, self.detail = status, detail


class HubChannel:
    def __init__(self, ws: Any, stack: contextlib.ExitStack):
        self._ws, self._stack = ws, stack

    @classmethod
    def open(cls, hub_url: str, token: str, tls: ssl.SSLContext | None = None, timeout: float = 10.0) -> HubChannel:
        """Connect with the node's bearer token; an https hub is verified with ``tls`` (default: the system CAs)."""
        base = hub_url.rstrip("/")
        if base.startswith("https://"):
            tls = tls or ssl.create_default_context()
            url = "wss://" + base[len("https://"):]
        else:
            tls, url = None, "ws://" + base.removeprefix("http://")
        stack = contextlib.ExitStack()
        try:
            ws = stack.enter_context(connect(
                f"{url}/api/runs/channel", ssl=tls, additional_headers={"Authorization": f"Bearer {token}"},
                compression=None, open_timeout=timeout, max_size=MAX_MESSAGE))
        except InvalidHandshake as exc:  # 403: token refused at the handshake
            stack.close()
            raise ChannelRefused(401, f"hub refused the channel: {exc}") from exc
        except (OSError, TimeoutError, WebSocketException) as exc:
            stack.close()
            raise ChannelClosed(f"cannot open the run channel: {exc}") from exc
        return cls(ws, stack)

    def _ask(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        try:
            self._ws.send(json.dumps(request))
            reply = json.loads(self._ws.recv(timeout=timeout))
        except (OSError, TimeoutError, WebSocketException, ValueError) as exc:
            self.close()
            raise ChannelClosed(f"run channel lost: {exc}") from exc
        if reply.get("op") == "error":
            raise ChannelRefused(int(reply.get("status", 400)), str(reply.get("detail", "")))
        return reply

    def next(self, timeout: float) -> dict[str, Any] | None:
        """Claim this node's next run, waiting up to ``timeout`` seconds; None when there was none."""
        reply = self._ask({"op": "next", "timeout": timeout}, timeout + 15)
        return reply["run"] if reply.get("op") == "run" else None

    def update(self, run_id: int, **fields: Any) -> dict[str, Any]:
        """Report progress, log lines, the sealed result and/or the final status of an active run."""
        reply = self._ask({"op": "update", "run_id": run_id, **fields}, 60.0)
        return reply["state"]

    def ledger_head(self) -> tuple[int, str | None]:
        """(seq, entry_hash) of the last entry the hub holds of this node's ledger; (0, None) when none."""
        reply = self._ask({"op": "ledger_head"}, 30.0)
        return int(reply["head"]), reply.get("hash")

    def push_ledger(self, entries: list[dict[str, Any]]) -> int:
        """Send ledger entries (``Entry.to_dict()``, consecutive) for the hub copy; returns the hub's new head."""
        reply = self._ask({"op": "ledger", "entries": entries}, 60.0)
        return int(reply["head"])

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._stack.close()
