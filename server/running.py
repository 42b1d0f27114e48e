"""Running the server: in the foreground (``pocketrec serve``, one or several worker processes) or
in a background thread (tests, the demo).

``serve`` runs uvicorn with :class:`pocketrec.server.transport.ServerConfig` (header/body
timeouts, connection cap), JSON access logs on stdout and a graceful shutdown: on SIGTERM or
SIGINT the server stops accepting connections, lets the requests in flight finish (at most
``graceful_timeout`` seconds; batches being received or stored are stored and acknowledged),
then closes the database and returns. With ``workers > 1`` uvicorn's supervisor runs that many
processes on one listening socket, each building its application with :func:`worker_app`;
prometheus-client then keeps its values in a temporary folder (``PROMETHEUS_MULTIPROC_DIR``) so
``/metrics`` on any worker reports them all. SQLite has one writer at a time (one group
committer, ``pocketrec.server.group_commit``), so several workers need a ``postgresql://``
database and ``serve`` refuses them on a SQLite file: ``bench/bench_server.py`` measured 2
workers sharing the file's write lock at about the events/s of 1 (medians 12.1k vs 12.8k, commit
3630037, which allowed it).
"""

from __future__ import annotations

import copy
import errno
import json
import logging
import os
import resource
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from uvicorn.config import LOGGING_CONFIG
from uvicorn.supervisors import Multiprocess

from pocketrec.server.access_log import ACCESS_LOGGER
from pocketrec.server.admin import AdminToken
from pocketrec.server.app import create_app
from pocketrec.server.auth import AUTH_CACHE_SECONDS, TokenCache
from pocketrec.server.bundles import BundleRepository
from pocketrec.server.faults import FaultPlan
from pocketrec.server.metrics import MULTIPROC_ENV, worker_exited
from pocketrec.server.ratelimit import RateLimit
from pocketrec.server.storage import FeedbackStorage, is_postgres, open_storage
from pocketrec.server.transport import ServerConfig, TransportLimits

log = logging.getLogger("pocketrec.server")

WORKER_ENV = "POCKETREC_SERVER_WORKER"
"""Environment variable carrying a worker's settings (JSON) from ``serve`` to :func:`worker_app`."""


@dataclass(frozen=True)
class ServerOptions:
    """How the server runs (``pocketrec serve`` flags).

    - ``limits``: transport timeouts and connection cap (``pocketrec.server.transport``);
    - ``rate_limit``: per-device request budget, ``None`` for none (``pocketrec.server.ratelimit``);
    - ``graceful_timeout``: seconds a shutdown waits for requests in flight;
    - ``ssl_certfile``/``ssl_keyfile``: serve HTTPS with this PEM certificate chain and key;
    - ``access_log``: one JSON line per request on stdout (``pocketrec.server.access_log``);
    - ``admin_token_file``: the operator's token for the admin routes (``pocketrec.server.admin``);
    - ``retention_days``: drop events received longer ago than this, at start and then daily;
    - ``auth_cache_seconds``: how long a worker trusts a token it checked
      (``pocketrec.server.auth.TokenCache``; a revocation takes effect within this).
    """

    limits: TransportLimits = field(default_factory=TransportLimits)
    rate_limit: RateLimit | None = None
    graceful_timeout: float = 20.0
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    access_log: bool = True
    admin_token_file: str | None = None
    retention_days: float | None = None
    auth_cache_seconds: float = AUTH_CACHE_SECONDS

    def __post_init__(self) -> None:
        if not 0 < self.graceful_timeout < 3600:
            raise ValueError(f"graceful_timeout must be in (0, 3600) s: {self.graceful_timeout}")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("TLS needs both --ssl-certfile and --ssl-keyfile")
        for path in (self.ssl_certfile, self.ssl_keyfile):
            if path is not None and not Path(path).is_file():
                raise FileNotFoundError(f"no such TLS file: {path}")
        self.admin_token()  # refuse a missing or weak token file before serving
        if self.retention_days is not None and not 0 < self.retention_days < 1e6:
            raise ValueError(f"retention_days must be > 0, got {self.retention_days}")
        TokenCache(self.auth_cache_seconds)  # refuse an out-of-range value before serving

    def admin_token(self) -> AdminToken | None:
        """The admin token from ``admin_token_file`` (``None`` without one)."""
        if self.admin_token_file is None:
            return None
        return AdminToken.from_file(self.admin_token_file)

    @property
    def tls(self) -> bool:
        return self.ssl_certfile is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "limits": self.limits.as_dict(),
            "rate_limit": None if self.rate_limit is None else str(self.rate_limit),
            "graceful_timeout": self.graceful_timeout,
            "ssl_certfile": self.ssl_certfile,
            "ssl_keyfile": self.ssl_keyfile,
            "access_log": self.access_log,
            "admin_token_file": self.admin_token_file,
            "retention_days": self.retention_days,
            "auth_cache_seconds": self.auth_cache_seconds,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ServerOptions:
        rate = raw.get("rate_limit")
        return cls(
            limits=TransportLimits(**raw["limits"]),
            rate_limit=None if rate is None else RateLimit.parse(rate),
            graceful_timeout=raw["graceful_timeout"],
            ssl_certfile=raw["ssl_certfile"],
            ssl_keyfile=raw["ssl_keyfile"],
            access_log=raw["access_log"],
            admin_token_file=raw["admin_token_file"],
            retention_days=raw["retention_days"],
            auth_cache_seconds=raw["auth_cache_seconds"],
        )


def log_config(access_log: bool) -> dict[str, Any]:
    """uvicorn's logging configuration plus the JSON access log on stdout (uvicorn's own
    access log is off: it would log raw paths)."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["json_lines"] = {"format": "%(message)s"}
    config["handlers"]["json_access"] = {
        "class": "logging.StreamHandler",
        "formatter": "json_lines",
        "stream": "ext://sys.stdout",
    }
    config["loggers"][ACCESS_LOGGER] = {
        "handlers": ["json_access"],
        "level": "INFO" if access_log else "WARNING",
        "propagate": False,
    }
    config["loggers"]["pocketrec.server"] = {"handlers": ["default"], "level": "INFO"}
    return config


def build_app(db: str, bundles_dir: str, options: ServerOptions) -> Starlette:
    """The application of one server process: opens ``db``; closes it at shutdown."""
    storage = open_storage(db)

    def shutdown() -> None:
        storage.close()
        worker_exited()

    return create_app(
        storage,
        BundleRepository(bundles_dir, storage),
        rate_limit=options.rate_limit,
        limits=options.limits,
        on_shutdown=shutdown,
        admin=options.admin_token(),
        retention_days=options.retention_days,
        auth_cache_seconds=options.auth_cache_seconds,
    )


def worker_app() -> Starlette:
    """The application factory of a worker process (settings from :data:`WORKER_ENV`)."""
    raw = json.loads(os.environ[WORKER_ENV])
    return build_app(raw["db"], raw["bundles"], ServerOptions.from_json(raw["options"]))


def serve(
    db: str | os.PathLike[str],
    bundles_dir: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: int = 1,
    options: ServerOptions | None = None,
) -> None:
    """Serve the database ``db`` and the bundles in ``bundles_dir`` until SIGTERM/SIGINT, then
    shut down gracefully (module docstring), with ``workers`` processes. ``workers > 1`` needs
    a ``postgresql://`` ``db`` (``ValueError`` for a SQLite file: one writer at a time)."""
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if workers > 1 and not is_postgres(db):
        raise ValueError(
            f"--workers {workers} needs a postgresql:// database: SQLite ({db}) allows one "
            "writer at a time, so extra workers would only wait on its lock; run one worker, "
            "or use PostgreSQL"
        )
    if not Path(bundles_dir).is_dir():
        what = "is a file" if Path(bundles_dir).exists() else "no such folder"
        raise FileNotFoundError(
            f"--bundles {bundles_dir}: {what}; create the folder, or publish a bundle into it "
            "first (pocketrec publish BUNDLE_DIR --server-dir FOLDER)"
        )
    _check_can_listen(host, port)
    _run(str(db), str(bundles_dir), host=host, port=port, workers=workers,
         options=options or ServerOptions())  # fmt: skip


def _run(
    db: str, bundles_dir: str, *, host: str, port: int, workers: int, options: ServerOptions
) -> None:
    """:func:`serve` without the check of the database kind against ``workers``."""
    _warn_about_file_limit(options.limits.max_connections)
    common: dict[str, Any] = {
        "limits": options.limits,
        "host": host,
        "port": port,
        "log_config": log_config(options.access_log),
        "access_log": False,
        "server_header": False,
        "timeout_graceful_shutdown": options.graceful_timeout,
        "ssl_certfile": options.ssl_certfile,
        "ssl_keyfile": options.ssl_keyfile,
    }
    if workers == 1:
        config = ServerConfig(build_app(db, bundles_dir, options), lifespan="on", **common)
        with _signals_end_quietly():
            uvicorn.Server(config).run()
        return
    settings = {"db": db, "bundles": bundles_dir, "options": options.to_json()}
    own_dir = None if os.environ.get(MULTIPROC_ENV) else tempfile.mkdtemp(prefix="pocketrec-prom-")
    saved = {name: os.environ.get(name) for name in (WORKER_ENV, MULTIPROC_ENV)}
    os.environ[WORKER_ENV] = json.dumps(settings)
    if own_dir is not None:
        os.environ[MULTIPROC_ENV] = own_dir
    try:
        config = ServerConfig(
            f"{__name__}:worker_app", factory=True, workers=workers, lifespan="on", **common
        )
        Multiprocess(config, sockets=[config.bind_socket()]).run()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)


@contextmanager
def _signals_end_quietly() -> Iterator[None]:
    """uvicorn re-raises the SIGTERM/SIGINT it shut down for once it is done; with these
    handlers in place that re-raise only notes it, so ``serve`` returns normally (exit 0)."""

    def note(sig: int, _frame: FrameType | None) -> None:
        log.info("stopped by %s", signal.Signals(sig).name)

    saved = {sig: signal.signal(sig, note) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _check_can_listen(host: str, port: int) -> None:
    """Bind ``host:port`` once and let go (``SO_REUSEADDR``, as uvicorn binds), so that a port
    already in use is said before the server starts, with the flag to change;
    ``ValueError`` otherwise. Another process may still take the port in between: uvicorn's own
    error then."""
    try:
        family, kind, proto, _name, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ValueError(
                f"port {port} on {host} is already in use (another server?): stop it, or choose "
                "another port with --port"
            ) from None
        reason = exc.strerror or str(exc)
        raise ValueError(
            f"cannot listen on {host} port {port}: {reason} (see --host, --port)"
        ) from None


def _warn_about_file_limit(max_connections: int) -> None:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and max_connections + 64 > soft:
        log.warning(
            "--max-connections %d is close to or above this process's open-file limit %d "
            "(ulimit -n): connections beyond it fail at accept instead of getting a 503",
            max_connections,
            soft,
        )


class ServerThread:
    """The server on ``host:port`` in a daemon thread (``port=0``: a free port is chosen and
    kept across :meth:`stop`/:meth:`start`, so a restarted server has the same URL). The
    database ``db`` (a path or ``postgresql://…``) is opened by :meth:`start` and closed by
    :meth:`stop`.

    ``options``: as for :func:`serve` (timeouts, rate limit, TLS; the access log goes to the
    ``pocketrec.server.access`` logger as configured by the caller).
    """

    def __init__(
        self,
        db: str | os.PathLike[str],
        bundles_dir: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: FaultPlan | None = None,
        options: ServerOptions | None = None,
    ) -> None:
        self.db = db
        self.bundles_dir = bundles_dir
        self.faults = faults
        self.options = options or ServerOptions()
        self.host = host
        self.port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._storage: FeedbackStorage | None = None
        self._bundles: BundleRepository | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.options.tls else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def storage(self) -> FeedbackStorage:
        """The running server's storage (``RuntimeError`` when stopped)."""
        if self._storage is None:
            raise RuntimeError("the server is not running")
        return self._storage

    @property
    def bundles(self) -> BundleRepository:
        """The running server's bundle repository (``RuntimeError`` when stopped)."""
        if self._bundles is None:
            raise RuntimeError("the server is not running")
        return self._bundles

    def start(self, *, timeout: float = 10.0) -> ServerThread:
        """Start serving; returns once the server accepts connections (``timeout`` seconds)."""
        if self._thread is not None:
            raise RuntimeError("the server is already running")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self._socket = sock
        try:
            self._storage = open_storage(self.db)
            self._bundles = BundleRepository(self.bundles_dir, self._storage)
            options = self.options
            app = create_app(
                self._storage,
                self._bundles,
                faults=self.faults,
                rate_limit=options.rate_limit,
                limits=options.limits,
                admin=options.admin_token(),
                auth_cache_seconds=options.auth_cache_seconds,
            )
            config = ServerConfig(
                app,
                limits=options.limits,
                log_level="warning",
                lifespan="off",
                access_log=False,
                timeout_graceful_shutdown=1,
                ssl_certfile=options.ssl_certfile,
                ssl_keyfile=options.ssl_keyfile,
            )
            server = uvicorn.Server(config)
            thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
            thread.start()
            self._server, self._thread = server, thread
            deadline = time.monotonic() + timeout
            while not server.started:
                if not thread.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not start on {self.url}")
                time.sleep(0.01)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, *, timeout: float = 10.0) -> None:
        """Stop serving (connections are refused afterwards) and close the database."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout)
        if self._socket is not None:
            self._socket.close()
        if self._storage is not None:
            self._storage.close()
        self._server = self._thread = self._storage = self._bundles = self._socket = None

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
