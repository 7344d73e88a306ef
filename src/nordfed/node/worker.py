"""A warm worker process that runs partials with a time and memory limit.

The worker is started ahead of time (imports done, algorithms registered), so a trivial task costs a pipe
round trip, not a fresh interpreter. On timeout the worker is killed and a new one is started.
The site's CDM is opened for the first task and closed after :data:`CDM_IDLE_S` without one (see
:class:`SiteCDM`). The node's plain tables (``tables:`` in node.yaml) are read on first use and kept in memory
for later runs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from nordfed.policy.node import NodeConfig

if TYPE_CHECKING:
    import pandas as pd

    from nordfed.omop.store import CDM

Outcome = Literal["completed", "refused", "failed"]

#: seconds the worker keeps the CDM open after a task: node.yaml's ``cdm_idle_s`` default
CDM_IDLE_S: float = NodeConfig.model_fields["cdm_idle_s"].default
#: how long a task waits for a DuckDB file another process holds at that moment (say `nordfed omop summary`)
CDM_LOCK_WAIT_S = 10.0


@dataclass(frozen=True)
class WorkerSpec:
    site: str
    cdm_url: str | None
    min_cell_count: int
    memory_limit_mb: int
    exact_event_times: bool = False
    #: table name → absolute path of a CSV/Parquet file (NodeConfig.tables)
    tables: dict[str, str] = field(default_factory=dict)
    event_time_noise: float = 0.0
    #: the node's site secret (hex; see DisclosurePolicy.secret), passed to the worker over the local pipe
    secret: str = field(default="", repr=False)
    #: seconds without a task after which the worker closes the CDM
    cdm_idle_s: float = CDM_IDLE_S

    @classmethod
    def from_config(cls, config: NodeConfig) -> WorkerSpec:
        """The spec of a node's worker from its :class:`~nordfed.policy.node.NodeConfig`."""
        from nordfed.privacy.crypto import site_secret

        pol = config.policy
        return cls(config.name, config.cdm_url, pol.min_cell_count, pol.memory_limit_mb, pol.exact_event_times,
                   {name: str(path) for name, path in config.tables.items()}, pol.event_time_noise,
                   site_secret(config.key_dir).hex(), config.cdm_idle_s)


class LazyTables(Mapping[str, "pd.DataFrame"]):
    """A node's named tables, each read on first access and then kept: runs after the first cost no I/O."""

    def __init__(self, paths: Mapping[str, str | Path]):
        self._paths = {name: Path(p) for name, p in paths.items()}
        self._frames: dict[str, pd.DataFrame] = {}

    def __getitem__(self, name: str) -> pd.DataFrame:
        if name not in self._frames:
            from nordfed.policy.node import read_table

            path = self._paths[name]  # KeyError for an unknown name, as a dict would
            try:
                self._frames[name] = read_table(path)
            except (OSError, ValueError) as exc:  # the file changed since the node checked it at start
                raise ValueError(f"table {name!r} ({path}) could not be read: {exc}") from None
        return self._frames[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)

    def loaded(self) -> list[str]:
        """Names of the tables already in memory."""
        return list(self._frames)


FileStamp = tuple[tuple[int, int, int] | None, ...]


def _file_stamp(url: str) -> FileStamp | None:
    """What a DuckDB CDM's files look like now (inode, size, mtime of the file and its WAL); None for others."""
    from nordfed.omop.store import CDMUrl

    loc = CDMUrl.parse(url)
    if loc.engine != "duckdb" or loc.target == ":memory:":
        return None
    path = Path(loc.target)
    stamps: list[tuple[int, int, int] | None] = []
    for p in (path, path.with_name(path.name + ".wal")):
        try:
            st = p.stat()
        except FileNotFoundError:
            stamps.append(None)
        else:
            stamps.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(stamps)


def _open_cdm(url: str, lock_wait_s: float) -> CDM:
    """Open the CDM, waiting up to ``lock_wait_s`` while another process holds a DuckDB file's lock."""
    from nordfed.omop.store import CDMError, open_cdm

    deadline = time.monotonic() + lock_wait_s
    while True:
        try:
            return open_cdm(url)
        except CDMError as exc:
            if "lock" not in str(exc).lower() or time.monotonic() >= deadline:
                raise
        time.sleep(0.2)


class SiteCDM:
    """The site's CDM as partials see it: connected on first use, disconnected by the worker when idle.

    The same object stands for the CDM across reconnects, so the study caches keyed by ``id(cdm)`` and
    ``cdm.url`` (:mod:`nordfed.features.design`, :mod:`nordfed.studies.partials`) still serve a study's later
    rounds; they hold materialised frames, nothing tied to a connection. When a DuckDB file was written by
    another process while it was closed, :meth:`changed` says so and the worker puts a new object in its place.
    """

    def __init__(self, url: str, lock_wait_s: float = CDM_LOCK_WAIT_S):
        self.url = url
        self.lock_wait_s = lock_wait_s
        self._cdm: CDM | None = None
        self._stamp: FileStamp | None = None  # the files as this object's last connection left them

    def __getattr__(self, name: str) -> Any:
        # only what the instance lacks (everything but url): dialect, location, query, raw_connection, …
        if name.startswith("__") or name in ("_cdm", "_stamp"):  # copy/pickle probe before __init__ ran
            raise AttributeError(name)
        return getattr(self.connect(), name)

    @property
    def is_open(self) -> bool:
        return self._cdm is not None

    def connect(self) -> CDM:
        """The open CDM, opened now if it is not."""
        if self._cdm is None:
            self._cdm = _open_cdm(self.url, self.lock_wait_s)
        return self._cdm

    def close(self) -> None:
        """Disconnect (a DuckDB file is free for other processes after this); the next use reconnects."""
        if self._cdm is not None:
            cdm, self._cdm = self._cdm, None
            cdm.close()
            self._stamp = _file_stamp(self.url)  # after close: DuckDB checkpoints its own writes then

    def changed(self) -> bool:
        """Whether someone else wrote the DuckDB file since this object closed it (PostgreSQL: cannot tell)."""
        return self._cdm is None and self._stamp is not None and _file_stamp(self.url) != self._stamp


@dataclass(frozen=True)
class WorkResult:
    status: Outcome
    result: bytes | None = None
    #: for the requester's log; may quote what algorithm code said about the data
    message: str = ""
    #: the node's own words for why it did not complete, never text from algorithm code (ledger-safe)
    reason: str = ""


def _die_with_parent() -> None:
    # a SIGKILLed node must not leave its worker behind holding the CDM open
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _worker_main(inbox: Connection, conn: Connection, spec: WorkerSpec) -> None:
    import resource

    limit = spec.memory_limit_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from nordfed.fed.protocol import SiteData, algorithms, get_algorithm, run_partial
    from nordfed.privacy.disclosure import DisclosureError, DisclosurePolicy

    # import every algorithm module now, not during the first task; report what this code base really is
    hashes = {a.name: (a.version, a.code_hash) for a in algorithms().values()}
    private = sorted(a.name for a in algorithms().values() if a.dp)
    cdm = SiteCDM(spec.cdm_url) if spec.cdm_url else None
    retired: list[SiteCDM] = []  # see _fresh
    policy = DisclosurePolicy(min_cell_count=spec.min_cell_count, exact_event_times=spec.exact_event_times,
                              event_time_noise=spec.event_time_noise, secret=bytes.fromhex(spec.secret))
    # SiteData reads frames only through the Mapping interface, so lazy loading is invisible to partials; it
    # uses the CDM only through attributes, which SiteCDM hands on to a live connection
    data = SiteData(site=spec.site, cdm=cdm, frames=LazyTables(spec.tables), policy=policy)  # type: ignore[arg-type]
    conn.send(("ready", hashes, private))
    try:
        while True:
            try:
                msg = _next_task(inbox, cdm, spec.cdm_idle_s)
            except (EOFError, OSError):
                return
            if msg is None:
                return
            if cdm is not None:
                cdm = data.cdm = _fresh(cdm, retired)  # type: ignore[assignment]
            seq, name, params_wire = msg
            try:
                out: tuple[str, Any, str] = ("completed", run_partial(get_algorithm(name), data, params_wire), "")
            except DisclosureError as exc:
                out = ("refused", str(exc), "disclosure control refused the result")
            except MemoryError:
                out = ("failed", *[f"memory limit of {spec.memory_limit_mb} MB exceeded"] * 2)
            except Exception as exc:  # any algorithm error goes to the requester's log
                out = ("failed", f"{type(exc).__name__}: {exc}", f"algorithm raised {type(exc).__name__}")
            try:
                conn.send((seq, *out))
            except (BrokenPipeError, OSError):
                return
    finally:
        if cdm is not None:  # a clean close: DuckDB checkpoints rather than replaying its log at the next open
            cdm.close()


def _fresh(cdm: SiteCDM, retired: list[SiteCDM]) -> SiteCDM:
    """``cdm``, or a new :class:`SiteCDM` when another process wrote its file while it was closed: caches keyed
    by the old object must not serve the new data. The old one goes to ``retired``, kept alive so that no new
    object can reuse its id."""
    if not cdm.changed():
        return cdm
    retired.append(cdm)
    return SiteCDM(cdm.url, cdm.lock_wait_s)


def _next_task(inbox: Connection, cdm: SiteCDM | None, idle_s: float) -> Any:
    """The next message; the CDM is closed when none comes within ``idle_s``."""
    if cdm is not None and cdm.is_open and not inbox.poll(idle_s):
        cdm.close()
    return inbox.recv()


class WarmWorker:
    """One pre-started worker process; ``run`` is synchronous and enforces the time limit."""

    def __init__(self, spec: WorkerSpec, start_timeout_s: float = 60.0):
        self.spec = spec
        self.start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        #: name → (version, code hash) of the algorithms the worker actually loaded
        self.hashes: dict[str, tuple[str, str]] = {}
        #: the algorithms that release under differential privacy when a task asks
        self.dp_algorithms: frozenset[str] = frozenset()
        self._seq = 0
        self._conn: Connection | None = None
        self._out: Connection | None = None
        self.start()

    def start(self) -> None:
        """Spawn the worker; it imports the algorithms while the caller goes on (see :meth:`wait_ready`)."""
        # a plain subprocess (not multiprocessing spawn): independent of how the node's __main__ was started
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        cmd = [sys.executable, "-m", "nordfed.node.worker", str(to_child_r), str(from_child_w)]
        proc = subprocess.Popen(cmd, pass_fds=(to_child_r, from_child_w), stdin=subprocess.DEVNULL)
        os.close(to_child_r)
        os.close(from_child_w)
        self._proc = proc
        self._out = Connection(to_child_w, readable=False)
        self._conn = Connection(from_child_r, writable=False)
        # the spec goes down the pipe, not on the command line: it holds the site secret, and any local user
        # can read a process's arguments
        self._out.send(asdict(self.spec))
        self._ready = False

    def wait_ready(self) -> None:
        """Block until the worker finished its imports (start() does not wait)."""
        if self._ready:
            return
        assert self._conn is not None and self._proc is not None
        if not self._conn.poll(self.start_timeout_s):
            self.stop()
            raise RuntimeError(f"node worker did not start within {self.start_timeout_s:g} s")
        try:
            _, self.hashes, private = self._conn.recv()
            self.dp_algorithms = frozenset(private)
        except EOFError:
            code = self._proc.wait()
            self.stop()
            raise RuntimeError(f"node worker failed to start (exit code {code}); check policy.memory_limit_mb") \
                from None
        self._ready = True

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _close_pipes(self) -> None:
        for c in (self._out, self._conn):
            if c is not None:
                c.close()
        self._out = self._conn = None

    def stop(self) -> None:
        """Ask the worker to exit; kill it if it does not within two seconds."""
        if self._out is not None:
            with contextlib.suppress(BrokenPipeError, OSError):
                self._out.send(None)
        self._close_pipes()
        if self._proc is not None:
            try:
                self._proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def _restart(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._close_pipes()
        self._proc = None
        self.start()
        self.wait_ready()

    def run(self, name: str, params_wire: bytes, time_limit_s: float,
            on_slow: Callable[[], None] | None = None, slow_after_s: float = 0.25) -> WorkResult:
        """Run algorithm ``name``; kill and replace the worker when it exceeds ``time_limit_s`` or dies.

        ``on_slow`` is called once if the run takes longer than ``slow_after_s`` (progress reports cost a hub
        round trip, which trivial runs should not pay).
        """
        self.wait_ready()
        assert self._conn is not None and self._out is not None
        self._seq += 1
        try:
            self._out.send((self._seq, name, params_wire))
            t0 = time.monotonic()
            if on_slow is not None and not self._conn.poll(min(slow_after_s, time_limit_s)):
                with contextlib.suppress(Exception):  # a progress report must never desynchronise the pipe
                    on_slow()
            while True:
                if not self._conn.poll(max(time_limit_s - (time.monotonic() - t0), 0.0)):
                    self._restart()
                    why = f"time limit of {time_limit_s:g} s exceeded; worker killed"
                    return WorkResult("failed", message=why, reason=why)
                seq, status, payload, reason = self._conn.recv()
                if seq == self._seq:  # an answer to an abandoned job is dropped
                    break
        except (EOFError, BrokenPipeError, OSError):
            code = self._proc.wait() if self._proc is not None else None
            self._restart()
            why = "memory limit exceeded?" if code in (-signal.SIGKILL, -signal.SIGSEGV, 1) else "crashed"
            msg = f"worker exited with code {code} ({why})"
            return WorkResult("failed", message=msg, reason=msg)
        if status == "completed":
            return WorkResult("completed", result=payload)
        return WorkResult(status, message=payload, reason=reason)


def main(argv: list[str]) -> None:
    """Entry point of the worker subprocess: ``python -m nordfed.node.worker IN_FD OUT_FD``; the first message
    on IN_FD is the :class:`WorkerSpec`."""
    _die_with_parent()
    inbox = Connection(int(argv[0]), writable=False)
    outbox = Connection(int(argv[1]), readable=False)
    _worker_main(inbox, outbox, WorkerSpec(**inbox.recv()))


if __name__ == "__main__":
    main(sys.argv[1:])
