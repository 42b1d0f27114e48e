"""Helpers for tests of the sync server as an operator runs it: a real ``pocketrec serve`` process
on loopback, raw sockets, the metrics it serves, and a throwaway TLS certificate authority."""

from __future__ import annotations

import datetime as dt
import http.client
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from pocketrec.server.storage_sqlite import SqliteFeedbackStorage


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str, path: str, *, timeout: float = 10.0) -> tuple[int, bytes]:
    """``GET url+path`` (plain HTTP): status and body."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", path)
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, sorted labels): value}`` of a Prometheus text exposition."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def metric(url: str, name: str, **labels: str) -> float:
    """The value of one sample scraped from ``url``/metrics (0.0 if absent)."""
    status, body = get(url, "/metrics")
    assert status == 200
    key = (name, tuple(sorted(labels.items())))
    return metric_samples(body.decode()).get(key, 0.0)


class ServerProcess:
    """``pocketrec serve`` (or ``command``) in a child process on a free loopback port, its
    stdout and stderr in files under ``root``."""

    def __init__(self, root: Path, *flags: str, command: list[str] | None = None) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.db = root / "server.sqlite"
        self.bundles = root / "published"
        self.bundles.mkdir(exist_ok=True)  # serve refuses a --bundles folder that does not exist
        self.port = free_port()
        self.flags = list(flags)
        self.command = command
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add_device(self, device_id: str) -> str:
        storage = SqliteFeedbackStorage(self.db)
        try:
            return storage.add_device(device_id)
        finally:
            storage.close()

    def event_ids(self) -> list[str]:
        storage = SqliteFeedbackStorage(self.db)
        try:
            return [event.event_id for event in storage.iter_events()]
        finally:
            storage.close()

    def start(self, *, timeout: float = 60.0) -> ServerProcess:
        command = self.command or [
            sys.executable, "-m", "pocketrec", "serve", "--db", str(self.db),
            "--bundles", str(self.bundles), "--port", str(self.port), *self.flags,
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command,
            cwd=self.root,
            stdout=(self.root / "stdout.log").open("wb"),
            stderr=(self.root / "stderr.log").open("wb"),
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n"
                                   f"{self.output()}")  # fmt: skip
            try:
                if get(self.url, "/healthz", timeout=2)[0] == 200:
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start:\n{self.output()}")
            time.sleep(0.05)

    def send(self, sig: int) -> None:
        """Send the signal ``sig`` to the server process."""
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout: float = 60.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stdout(self) -> str:
        path = self.root / "stdout.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def output(self) -> str:
        path = self.root / "stderr.log"
        err = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
        return self.stdout() + err

    def access_lines(self) -> list[dict[str, Any]]:
        """The JSON access-log lines on stdout."""
        lines = [line for line in self.stdout().splitlines() if line.startswith("{")]
        return [json.loads(line) for line in lines]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def connect(url: str, *, timeout: float = 10.0) -> socket.socket:
    """A raw TCP connection to the server of ``url`` (``http://host:port``)."""
    host, port = url.split("://", 1)[1].split(":")
    return socket.create_connection((host, int(port)), timeout=timeout)


def read_reply(sock: socket.socket, *, limit: float = 30.0) -> bytes:
    """Everything the server sends until it closes the connection (or ``limit`` seconds)."""
    sock.settimeout(limit)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return data


def status_of(reply: bytes) -> int:
    """The status code of a raw HTTP/1.1 reply (0 if there is none)."""
    if not reply.startswith(b"HTTP/1.1 "):
        return 0
    return int(reply[9:12])


def write_tls_files(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost signed by it: returns
    ``(ca.pem, server-cert.pem, server-key.pem)``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("pocketrec test CA"))
        .issuer_name(name("pocketrec test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.pem", folder / "server-cert.pem", folder / "server-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chmod(paths[2], 0o600)
    return paths
