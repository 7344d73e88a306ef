"""Run a hub with uvicorn: in the foreground (CLI) or in a background thread on a free loopback port (tests,
notebooks, the demo)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn
from fastapi import FastAPI

from nordfed.hub.app import MAX_BODY

try:  # what a recent uvicorn serves WebSockets with ("auto"), websockets being installed
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
except ImportError:  # an older uvicorn: left to its "auto" choice
    WebSocketsSansIOProtocol = None


if WebSocketsSansIOProtocol is not None:

    class AnsweringWebSocketProtocol(WebSocketsSansIOProtocol):
        """uvicorn's WebSocket protocol, but a handshake that websockets refuses before it is parsed (431 for a
        header line over 8 KiB or over 128 headers, 414 for a request line over 8 KiB) gets that answer and is
        closed: uvicorn never sent it, and the connection hung unanswered until the client gave up."""

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            # uvicorn's internals: read with defaults that switch this off (the fuzz test then fails) rather than
            # break every node's channel, should a later uvicorn rename them; after the handshake, every frame
            # stops at the first test
            if getattr(self, "handshake_initiated", True) or getattr(self, "close_sent", True):
                return
            if getattr(getattr(self, "conn", None), "handshake_exc", None) is not None:
                self.handshake_complete = self.close_sent = True  # nothing left to answer at shutdown
                self.transport.write(b"".join(self.conn.data_to_send()))
                self.transport.close()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def uvicorn_config(app: FastAPI, host: str, port: int, **kwargs: Any) -> uvicorn.Config:
    # One worker: long polls are coordinated in-process. uvloop and httptools (uvicorn[standard]) are used when
    # installed: they cut the per-request cost of the event loop and HTTP parsing; h11/asyncio otherwise.
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        workers=1,
        loop=kwargs.pop("loop", "auto"),
        http=kwargs.pop("http", "auto"),
        log_level=kwargs.pop("log_level", "warning"),
        access_log=kwargs.pop("access_log", False),
        timeout_graceful_shutdown=2,
        timeout_keep_alive=75,  # longer than a long-poll gap, so nodes keep their connections
        ws_max_size=kwargs.pop("ws_max_size", MAX_BODY),  # a node's result on its channel: as large as a PATCH body
        ws=kwargs.pop("ws", "auto" if WebSocketsSansIOProtocol is None else AnsweringWebSocketProtocol),
        **kwargs,
    )


class GracefulServer(uvicorn.Server):
    """uvicorn that first wakes the hub's long polls, so shutdown does not wait for (or cancel) them."""

    async def shutdown(self, sockets=None) -> None:
        state = getattr(getattr(self.config.app, "state", None), "hub", None)
        if state is not None:
            state.dispatcher.close()
        await super().shutdown(sockets=sockets)


class HubServer:
    """A uvicorn server for ``app`` in a daemon thread. Use as a context manager; ``url`` is the base URL."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int | None = None, **kwargs: Any):
        self.host, self.port = host, port or free_port(host)
        self.server = GracefulServer(uvicorn_config(app, self.host, self.port, **kwargs))
        self.thread = threading.Thread(target=self.server.run, name=f"hub:{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> HubServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"hub server did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
