"""What can go wrong talking to the hub, as the researcher client raises it."""

from __future__ import annotations

from collections.abc import Sequence

import httpx

__all__ = ["HubError", "HubUnreachable", "NodeOfflineError", "NotLoggedIn"]


class HubError(Exception):
    """A hub request failed: the hub answered with an error (``status`` is the HTTP status and the message its
    ``detail``), or, as :class:`HubUnreachable`, it could not be asked (``status`` None)."""

    def __init__(self, status: int | None, detail: str, message: str | None = None):
        super().__init__(message or f"hub error {status}: {detail}")
        self.status = status
        self.detail = detail


class HubUnreachable(HubError):
    """No answer from the hub: refused connection, unknown host, TLS failure, timeout."""

    def __init__(self, hub_url: str, exc: httpx.TransportError):
        reason = str(exc) or type(exc).__name__  # httpx timeouts often have no message
        super().__init__(None, reason, f"cannot reach the hub at {hub_url}: {reason}")


class NotLoggedIn(HubError):
    """The hub refused the session (HTTP 401 on the bearer token): never logged in, logged out, expired or revoked."""


class NodeOfflineError(ValueError):
    """A secure sum asked of nodes the hub lists as offline: it would wait for them until its timeout."""

    def __init__(self, names: Sequence[str]):
        self.names = list(names)
        super().__init__(f"{', '.join(names)} {'is' if len(names) == 1 else 'are'} offline, and a secure sum needs "
                         "every node's result (its masks cancel only in the full sum): start the node, or leave it "
                         "out (nordfed task create -n NODE_ID ..., nordfed study run --sites ...)")
