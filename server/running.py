"""Running the server: in the foreground (``pocketrec serve``) or in a background thread."""

from __future__ import annotations

import os
import socket
import threading
import time

import uvicorn

from pocketrec.server.app import create_app
from pocketrec.server.bundles import BundleRepository
from pocketrec.server.faults import FaultPlan
from pocketrec.server.storage import FeedbackStorage, open_storage


def serve(
    db: str | os.PathLike[str],
    bundles_dir: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
) -> None:
    """Serve the database ``db`` (a SQLite path or a ``postgresql://…`` URI, see
    ``open_storage``) and the bundles in ``bundles_dir`` until interrupted."""
    storage = open_storage(db)
    try:
        app = create_app(storage, BundleRepository(bundles_dir, storage))
        uvicorn.run(app, host=host, port=port, log_level="info")
    finally:
        storage.close()


class ServerThread:
    """The server on ``host:port`` in a daemon thread (``port=0``: a free port is chosen and
    kept across :meth:`stop`/:meth:`start`, so a restarted server has the same URL). The
    database ``db`` (a path or ``postgresql://…``) is opened by :meth:`start` and closed by
    :meth:`stop`."""

    def __init__(
        self,
        db: str | os.PathLike[str],
        bundles_dir: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: FaultPlan | None = None,
    ) -> None:
        self.db = db
        self.bundles_dir = bundles_dir
        self.faults = faults
        self.host = host
        self.port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._storage: FeedbackStorage | None = None
        self._bundles: BundleRepository | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

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
            app = create_app(self._storage, self._bundles, faults=self.faults)
            config = uvicorn.Config(
                app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1
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
