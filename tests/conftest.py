"""Shared pytest fixtures, and the ``slow`` split of the suite (the fast loop)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pocketrec.storage import Store

# --------------------------------------------------------------------------- the fast loop

SLOW_MODULES = frozenset(
    {
        # train or convert with TensorFlow, which they import at module level
        "test_converter.py",
        "test_lru.py",
        "test_sasrec.py",
        "test_training_batches.py",
        "test_weight_average.py",
        "test_training_stop.py",
        "test_converter_byom.py",
        "test_examples.py",
        "test_demo.py",  # the whole loop: trains twice, serves, syncs devices
        # crash and power-loss soaks, the benchmark harness, property-based fuzzing
        "test_storage_crash.py",
        "test_storage_powerloss.py",
        "test_storage_fuzz.py",
        "test_bench_server.py",
        "test_server_openapi.py",
        "test_sync_end_to_end.py",
        # wait on real transport timeouts, slow clients, kills and restarts, or an emulator:
        # hostile bodies and sockets, header/body/keep-alive deadlines, graceful shutdown,
        # retry backoff, a killed export, PostgreSQL restarts, the C checks under qemu-aarch64
        "test_server_hostile.py",
        "test_server_transport.py",
        "test_sync_keepalive.py",
        "test_server_ops.py",
        "test_sync_upload.py",
        "test_feedback_export.py",
        "test_server_postgres.py",
        "test_native_c.py",
    }
)
"""Test modules that are slow as a whole: they train with TensorFlow (and import it at module
level), run the demo or a benchmark, soak, or wait on real timeouts and restarts. Their tests
are marked ``slow`` here, and when ``-m`` deselects ``slow`` (``python -m pytest -m "not slow"``,
the fast loop) they are not even imported, so the fast loop never loads TensorFlow. A slow test
in another module carries ``@pytest.mark.slow`` itself. CI runs everything."""


def _deselects_slow(config: pytest.Config) -> bool:
    """Whether ``-m`` drops every test marked ``slow`` (as ``-m "not slow"`` or ``-m "not slow
    and not x"`` do): false for an expression it cannot read, so nothing is ever left out that
    ``-m`` would have kept."""
    text = config.option.markexpr
    if not text:
        return False
    try:
        from _pytest.mark.expression import Expression

        expression = Expression.compile(text)
        only_slow = expression.evaluate(lambda name, **_: name == "slow")
        every_mark = expression.evaluate(lambda name, **_: True)
    except Exception:  # pytest's expression API is internal: when it changes, collect all
        return False
    return not only_slow and not every_mark


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path.name in SLOW_MODULES and _deselects_slow(config):
        return True
    return None


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


def pytest_collection_finish(session: pytest.Session) -> None:
    """The fast loop must not import TensorFlow while collecting (it costs seconds)."""
    loaded = sorted(m for m in ("tensorflow", "keras") if m in sys.modules)
    if loaded and _deselects_slow(session.config):
        raise pytest.UsageError(
            f"collecting the fast loop imported {loaded}: import it inside the tests, or add the "
            "module to SLOW_MODULES in tests/conftest.py"
        )


@pytest.fixture(scope="session")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The compiled power-loss shim (``tools/powerloss.py``, ``tests/powerloss/crashvfs.c``): a
    build failure fails the test when ``CI=true``, else skips it."""
    from tool_modules import load_tool

    powerloss = load_tool("powerloss")
    try:
        return Path(powerloss.build_shim(tmp_path_factory.mktemp("crashvfs")))
    except powerloss.ShimUnavailable as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(str(exc))
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared datasets folder (``$POCKETREC_DATA`` or ``../shared/data`` from the project).

    Missing: skipped locally, a failure when ``CI=true``.
    """
    default = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    folder = Path(os.environ.get("POCKETREC_DATA", default))
    if not folder.is_dir():
        reason = f"shared datasets not found at {folder} (set POCKETREC_DATA)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return folder


# --------------------------------------------------------------------------- runtime bundles

RUNTIME_BUNDLES_ENV = "POCKETREC_TEST_BUNDLES"
"""A directory holding the runtime tests' bundles: read when complete, else built into it (so the
first CI leg, with TensorFlow, leaves them for the runtime leg that has no TensorFlow)."""


class ManualClock:
    """A clock for code that takes ``clock=``: it reads ``now`` (seconds), which tests move."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class RuntimeBundles:
    """Bundles exported by the converter for the runtime tests, under ``root``:

    - ``f32``, ``int8``: one tiny model trained on :attr:`data` (model version 1), float32 and
      int8 catalogs; their manifests hold the converter's offline test metrics.
    - ``v2``: another model (model version 2) trained on other data whose catalog lacks the items
      ``i00120`` and up, for ``replace_bundle``.
    - ``events.csv``: the synthetic data ``f32``/``int8`` were trained on (``pocketrec evaluate``).
    """

    NAMES = ("f32", "int8", "v2")

    def __init__(self, root: Path) -> None:
        self.root = root
        self.f32, self.int8, self.v2 = (root / name for name in self.NAMES)
        self.data = root / "events.csv"

    def complete(self) -> bool:
        return self.data.is_file() and all((p / "manifest.json").is_file() for p in self._dirs())

    def _dirs(self) -> tuple[Path, Path, Path]:
        return self.f32, self.int8, self.v2

    def build(self, work: Path) -> None:
        """Train and export the bundles (needs TensorFlow; about 10 s)."""
        from pocketrec.converter import model_dir
        from pocketrec.converter.model import ModelConfig
        from pocketrec.converter.pipeline import export_bundle
        from pocketrec.converter.training import train
        from pocketrec.core import leave_one_out, synthetic, write_csv

        tiny = {"embedding_dim": 16, "hidden_dim": 32, "user_dim": 16, "learning_rate": 5e-3}
        plans = [
            ("v1", synthetic.generate(num_users=1200, num_items=150, seed=3), 10, 0),
            ("v2", synthetic.generate(num_users=500, num_items=120, seed=11), 3, 1),
        ]
        for name, data, epochs, seed in plans:
            split = leave_one_out(data)
            # No refit (refit_share=1): the bundles keep validation metrics held out, for
            # `evaluate --stage valid` to match.
            config = ModelConfig(
                num_items=data.num_items, max_epochs=epochs, patience=3, seed=seed,
                refit_share=1.0, **tiny,
            )  # fmt: skip
            model, report = train(split, config, show_progress=False)
            model_dir.save(work / name, model, data, split, report)
        self.root.mkdir(parents=True, exist_ok=True)
        export_bundle(work / "v1", self.f32, model_version=1, overwrite=True)
        export_bundle(work / "v1", self.int8, model_version=1, catalog_dtype="int8", overwrite=True)
        export_bundle(work / "v2", self.v2, model_version=2, overwrite=True)
        write_csv(plans[0][1], self.data)


@pytest.fixture(scope="session")
def runtime_bundles(tmp_path_factory: pytest.TempPathFactory) -> RuntimeBundles:
    """The runtime tests' bundles: from ``$POCKETREC_TEST_BUNDLES`` when it holds them, else built
    with the converter (into that directory when it is set)."""
    import importlib.util

    where = os.environ.get(RUNTIME_BUNDLES_ENV)
    bundles = RuntimeBundles(Path(where) if where else tmp_path_factory.mktemp("bundles"))
    if not bundles.complete():
        if importlib.util.find_spec("tensorflow") is None:
            pytest.fail(
                f"no runtime test bundles in {bundles.root} and no TensorFlow to build them: run "
                f"the runtime tests once with TensorFlow and {RUNTIME_BUNDLES_ENV}={bundles.root}"
            )
        bundles.build(tmp_path_factory.mktemp("models"))
    return bundles


@pytest.fixture(scope="session")
def replay_vector() -> Any:
    """``replay_vector(bundle_dir, events)``: the user vector float32 ``[D + 1]`` after replaying
    ``events`` (``(item_id, event_name)`` pairs; items not in the catalog skipped) through the
    bundle's step model directly, or its ``initial_user`` when none is left."""
    from pocketrec.core.events import event_code
    from pocketrec.runtime.bundle import open_bundle

    def replay(bundle_dir: Path, events: list[tuple[str, str]]) -> Any:
        bundle = open_bundle(bundle_dir)
        known = [(bundle.items.get(i, None), event_code(e)) for i, e in events]
        known = [(i, e) for i, e in known if i is not None]
        _state, user = bundle.step.replay([i for i, _ in known], [e for _, e in known])
        return bundle.initial_user if user is None else user

    return replay


# --------------------------------------------------------------------------- storage


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A fresh device store (durability FULL) in a real SQLite file, closed after the test."""
    with Store.open(tmp_path / "store.sqlite") as opened:
        yield opened


# --------------------------------------------------------------------------- sync server

BUNDLE_FIXTURE = Path(__file__).resolve().parent / "fixtures" / "bundle_v1"


def bundle_version(source: Path, target: Path, model_version: int) -> Path:
    """A copy of the bundle ``source`` whose manifest says ``model_version`` (same files)."""
    import json
    import shutil

    shutil.copytree(source, target)
    manifest = json.loads((target / "manifest.json").read_text(encoding="utf-8"))
    manifest["model_version"] = model_version
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return target


POSTGRES_ENV = "POCKETREC_TEST_POSTGRES"
"""A PostgreSQL URI for the server tests (``tools/with_postgres.sh`` sets it); each test gets a
schema of its own in that database."""

SERVER_BACKENDS = ("sqlite", "postgres")


def postgres_base() -> str:
    """``$POCKETREC_TEST_POSTGRES``; missing: skipped locally, a failure when ``CI=true``."""
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        reason = (
            f"{POSTGRES_ENV} is not set: run the tests under tools/with_postgres.sh for the "
            "PostgreSQL cases"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return base


def _child(target: Any, args: tuple[Any, ...], barrier: Any, out: Any) -> None:
    try:
        out.put(("ok", target(*args, barrier)))
    except BaseException as exc:
        barrier.abort()  # the others stop waiting for this one
        out.put(("error", repr(exc)))


def run_in_processes(
    target: Any, argsets: list[tuple[Any, ...]], *, timeout: float = 120.0
) -> list[Any]:
    """Run ``target(*args, barrier)`` in one spawned process per ``args`` (``barrier``: a
    ``multiprocessing.Barrier`` of them all, to start a race together: ``barrier.wait(60)``);
    returns what the calls returned, in the order they finished. A call that raised fails the
    test with its error; a process still running after ``timeout`` seconds is killed."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    barrier, out = context.Barrier(len(argsets)), context.Queue()
    children = [
        context.Process(target=_child, args=(target, args, barrier, out)) for args in argsets
    ]
    for child in children:
        child.start()
    try:
        results = [out.get(timeout=timeout) for _ in children]
    finally:
        for child in children:
            child.join(10)
            if child.is_alive():
                child.kill()
                child.join()
    errors = [value for kind, value in results if kind == "error"]
    assert not errors, errors
    return [value for _kind, value in results]


class PostgresSchemas:
    """Fresh schemas in the test database, each named by a URI whose ``search_path`` is that
    schema; all dropped by :meth:`drop_all`."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.names: list[str] = []

    def new(self) -> str:
        import uuid

        import psycopg

        name = f"test_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.base, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}".encode())
        self.names.append(name)
        sep = "&" if "?" in self.base else "?"
        return f"{self.base}{sep}options=-csearch_path%3D{name}"

    def drop_all(self) -> None:
        import psycopg

        with psycopg.connect(self.base, autocommit=True) as conn:
            conn.execute("SET lock_timeout = '30s'")
            for name in self.names:
                conn.execute(f"DROP SCHEMA {name} CASCADE".encode())
        self.names.clear()


@pytest.fixture
def postgres_schemas() -> Iterator[PostgresSchemas]:
    """Makes fresh PostgreSQL schemas (skipped or failed as :func:`postgres_base` says)."""
    schemas = PostgresSchemas(postgres_base())
    try:
        yield schemas
    finally:
        schemas.drop_all()


@pytest.fixture
def server_backend() -> str:
    """The sync server's database backend; modules that test both override this fixture with
    ``params=SERVER_BACKENDS``."""
    return "sqlite"


@pytest.fixture
def server_db(server_backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh server database for ``server_backend``: a SQLite path or a PostgreSQL URI."""
    if server_backend == "sqlite":
        return str(tmp_path / "server.sqlite")
    assert server_backend == "postgres", server_backend
    schemas: PostgresSchemas = request.getfixturevalue("postgres_schemas")
    return schemas.new()


def database_bytes(db: str) -> bytes:
    """Everything a server database holds, as bytes to search (a SQLite file and its WAL, or a
    text dump of every table in the PostgreSQL schema)."""
    if not db.startswith("postgresql://"):
        return b"".join(Path(p).read_bytes() for p in (db, f"{db}-wal") if Path(p).exists())
    import psycopg

    dump = []
    with psycopg.connect(db, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        ).fetchall()
        for (table,) in tables:
            rows = conn.execute(f"SELECT t::text FROM {table} t".encode()).fetchall()
            dump.extend(str(row[0]) for row in rows)
    return "\n".join(dump).encode()


class SyncHarness:
    """A real sync server (uvicorn on 127.0.0.1, a free port) on the database ``db`` (a SQLite
    path or a PostgreSQL URI) with fault injection, its signing key, and helpers to register
    devices and publish bundles; ``options``: a ``pocketrec.server.running.ServerOptions``
    (timeouts, limits, rate limit, TLS)."""

    def __init__(self, root: Path, db: str | None = None, options: Any = None) -> None:
        from pocketrec.server import FaultPlan
        from pocketrec.server.running import ServerThread
        from pocketrec.server.signing import generate_key, load_private_key

        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.faults = FaultPlan()
        self.public_key = generate_key(root / "key")
        self.private_key = load_private_key(root / "key")
        self.db = db if db is not None else str(root / "server.sqlite")
        self.published = root / "published"
        self.server = ServerThread(self.db, self.published, faults=self.faults, options=options)
        self._copies = 0

    @property
    def url(self) -> str:
        return self.server.url

    def storage(self) -> Any:
        from pocketrec.server import open_storage

        return open_storage(self.db)

    def add_device(self, device_id: str) -> str:
        storage = self.storage()
        try:
            return str(storage.add_device(device_id))
        finally:
            storage.close()

    def event_ids(self) -> list[str]:
        storage = self.storage()
        try:
            return [event.event_id for event in storage.iter_events()]
        finally:
            storage.close()

    def publish(self, model_version: int, source: Path = BUNDLE_FIXTURE) -> Path:
        """Publish a copy of ``source`` as ``model_version``; returns the published directory."""
        from pocketrec.server import BundleRepository

        self._copies += 1
        bundle = bundle_version(source, self.root / f"src{self._copies}", model_version)
        storage = self.storage()
        try:
            repository = BundleRepository(self.published, storage)
            return Path(repository.publish(bundle, self.private_key).path)
        finally:
            storage.close()

    def bundle_record(self, model_version: int) -> Any:
        storage = self.storage()
        try:
            return storage.bundle(model_version)
        finally:
            storage.close()

    def compromise_bundle(
        self, model_version: int, *, manifest: bytes | None = None, signature: bytes | None = None
    ) -> None:
        """Act as a compromised server: replace the published version's manifest (on disk and
        its recorded SHA-256) and/or its recorded signature, so devices must catch it."""
        import hashlib
        import sqlite3

        import psycopg

        record = self.bundle_record(model_version)
        sha256, sig = record.manifest_sha256, record.signature
        if manifest is not None:
            (self.published / "versions" / str(model_version) / "manifest.json").write_bytes(
                manifest
            )
            sha256 = hashlib.sha256(manifest).hexdigest()
        if signature is not None:
            sig = signature
        update = (
            "UPDATE bundles SET manifest_sha256 = {p}, signature = {p} WHERE model_version = {p}"
        )
        if self.db.startswith("postgresql://"):
            with psycopg.connect(self.db, autocommit=True) as conn:
                conn.execute(update.format(p="%s").encode(), (sha256, sig, model_version))
        else:
            conn = sqlite3.connect(self.db)
            with conn:
                conn.execute(update.format(p="?"), (sha256, sig, model_version))
            conn.close()


@pytest.fixture
def sync_server(tmp_path: Path, server_db: str) -> Iterator[SyncHarness]:
    """A started :class:`SyncHarness` on ``server_db`` (stopped after the test)."""
    harness = SyncHarness(tmp_path / "server", server_db)
    harness.server.start()
    try:
        yield harness
    finally:
        harness.server.stop()
