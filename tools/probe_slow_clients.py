"""Slow-client probe of the sync server: N sockets that send their request headers one byte per
second (a slowloris), held for a while, and a control client that keeps asking ``/healthz``.

Starts ``pocketrec serve`` from this checkout on loopback (a fresh SQLite database in a temporary
folder), with the extra ``serve`` flags given after ``--``, and prints how many slow sockets the
server closed, after how long, and whether the control client was served meanwhile::

    python tools/probe_slow_clients.py --sockets 500 --hold 30
    python tools/probe_slow_clients.py --sockets 500 --hold 30 -- --header-timeout 5

Loopback only; every loop is bounded by ``--hold``.
"""

from __future__ import annotations

import argparse
import http.client
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def start_server(folder: Path, port: int, extra: list[str]) -> subprocess.Popen[bytes]:
    (folder / "bundles").mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "pocketrec", "serve", "--db", str(folder / "server.sqlite"),
        "--bundles", str(folder / "bundles"), "--port", str(port), *extra,
    ]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit("the server did not start")


def control_request(port: int, path: str) -> float | None:
    """Seconds for one GET, or ``None`` if it failed or was not a 2xx within 5 s."""
    start = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        reply = conn.getresponse()
        reply.read()
        return time.monotonic() - start if 200 <= reply.status < 300 else None
    except OSError:
        return None
    finally:
        conn.close()


def probe(port: int, sockets: int, hold: float, path: str) -> None:
    selector = selectors.DefaultSelector()
    opened_at: dict[socket.socket, float] = {}
    closed_after: list[float] = []
    refused = 0
    for _ in range(sockets):
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n".encode())
        except OSError:
            refused += 1
            continue
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        opened_at[sock] = time.monotonic()
    start = time.monotonic()
    latencies: list[float | None] = []
    next_tick = start
    while time.monotonic() - start < hold:
        for key, _ in selector.select(timeout=0.05):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(4096)
            except OSError:
                data = b""
            if not data:  # the server closed it (or answered and closed)
                closed_after.append(time.monotonic() - opened_at.pop(sock))
                selector.unregister(sock)
                sock.close()
        if time.monotonic() >= next_tick:
            next_tick += 1.0
            for sock in list(opened_at):
                try:
                    sock.send(b"X")  # one more byte of a header that never ends
                except OSError:
                    closed_after.append(time.monotonic() - opened_at.pop(sock))
                    selector.unregister(sock)
                    sock.close()
            latencies.append(control_request(port, path))
    still_open = len(opened_at)
    for sock in opened_at:
        sock.close()
    ok = [t for t in latencies if t is not None]
    print(f"slow sockets: {sockets} opened ({refused} refused at connect), held {hold:.0f} s")
    if closed_after:
        print(
            f"closed by the server: {len(closed_after)} (after {min(closed_after):.1f} s .. "
            f"{max(closed_after):.1f} s, median {statistics.median(closed_after):.1f} s)"
        )
    else:
        print("closed by the server: 0")
    print(f"still open at the end: {still_open}")
    median = f", median {statistics.median(ok) * 1000:.0f} ms" if ok else ""
    print(f"control GET {path} meanwhile: {len(ok)}/{len(latencies)} answered 2xx{median}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=500)
    parser.add_argument("--hold", type=float, default=30.0, help="seconds")
    parser.add_argument("--port", type=int, default=18765)
    parser.add_argument("--path", default="/v1/health", help="path the slow requests ask for")
    parser.add_argument("serve_flags", nargs="*", help="extra `pocketrec serve` flags after --")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        server = start_server(Path(folder), args.port, args.serve_flags)
        try:
            probe(args.port, args.sockets, args.hold, args.path)
        finally:
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    main()
