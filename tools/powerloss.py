"""Power-loss test of the device store: a writer loses its unsynced writes at a chosen point.

A SIGKILL (``tools/soak_storage.py``) keeps everything the process handed to the OS, so it cannot
tell ``synchronous=FULL`` from ``OFF``. Here the writer runs with ``tests/powerloss/crashvfs.c`` as
SQLite's default VFS: the shim counts the writes, syncs and truncates of the database, ``-wal`` and
``-journal`` files and, at the N-th, puts every file back to what its last ``xSync`` made durable
(``drop``), or keeps a seeded random subset of the unsynced 512-byte sectors (``torn``), and ends
the process at once (the C file's header says exactly what it models).

Each crash point is one round: fork a child that loads the shim (ctypes; Python's ``_sqlite3`` uses
the shared ``libsqlite3``, so the VFS reaches every connection the child opens), runs
``crash_workload.write_events`` (appends, batches, uploads, state saves, each acknowledged on a
pipe after the call returned) until the shim crashes it at its point N (uniform in
``1..--max-ops``, seeded); then the parent checks a copy of the files the crash left with
``crash_workload.inspect`` (no shim: integrity, every acknowledged event in its seq, whole batches,
uploads, outbox totals, user state) and tallies what was lost. The next round's child recovers the
crashed files themselves, as a device does after a reboot; a file is replaced every
``--rounds-per-file`` rounds (so crashes also land in schema creation) and after damage that
persists (corruption, a partial batch).

Usage, from the repository root (Linux; needs a C compiler and ``sqlite3.h``, libsqlite3-dev)::

    python tools/powerloss.py [--points 1000] [--durability full|normal] [--seed 0]
                              [--pragma 'synchronous = OFF'] [--dir DIR]

It exits 1 when an acknowledged write was lost or the file was damaged (expected for
``--durability normal`` and ``--pragma 'synchronous = OFF'``: that is what the harness must see).
``tests/test_storage_powerloss.py`` runs it in CI (``POCKETREC_LONG_TESTS=1``: 10x the points).
"""

from __future__ import annotations

import argparse
import ctypes
import itertools
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import crash_workload as workload

from pocketrec.storage.connection import Durability

SHIM_SOURCE = Path(__file__).resolve().parents[1] / "tests" / "powerloss" / "crashvfs.c"
CRASH_EXIT = 86
"""Exit status of a child the shim crashed (anything else is a harness error)."""
MAX_OPS = 400
"""Crash points are drawn from the first this-many counted operations of a child: about 30 store
calls with durability full (each commit writes ~5 WAL frames, two writes each, and one sync)."""
MAX_CALLS = 100_000
"""A child that makes this many calls without reaching its crash point stops (a harness error)."""
PERSISTENT_DAMAGE = {"integrity", "unreadable", "partial batch", "outbox totals"}
"""Problems a new crash cannot undo: the next round starts a new file."""


class ShimUnavailable(RuntimeError):
    """The shim cannot be built or cannot reach Python's SQLite here (the message says why)."""


class HarnessError(RuntimeError):
    """A round went wrong in the harness itself (a child failed or never reached its point)."""


def sqlite_library() -> str:
    """The shared ``libsqlite3`` this Python's ``sqlite3`` module runs on (Linux)."""
    import sqlite3  # noqa: F401  (maps the library into this process)

    maps = Path("/proc/self/maps")
    if not maps.exists():
        raise ShimUnavailable("the power-loss shim needs Linux (/proc/self/maps)")
    for line in maps.read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and Path(parts[5]).name.startswith("libsqlite3."):
            return parts[5]
    raise ShimUnavailable(
        "Python's sqlite3 module is not linked to a shared libsqlite3 (built in statically?), "
        "so a VFS registered from outside would not reach its connections"
    )


def build_shim(folder: Path) -> Path:
    """Compile ``crashvfs.c`` into ``folder/crashvfs.so``, linked to the ``libsqlite3`` Python
    uses; raises :class:`ShimUnavailable` naming what is missing."""
    library = sqlite_library()
    compiler = shutil.which(os.environ.get("CC", "gcc")) or shutil.which("cc")
    if compiler is None:
        raise ShimUnavailable("no C compiler (gcc or cc) to build the power-loss shim")
    target = folder / "crashvfs.so"
    command = [compiler, "-O2", "-Wall", "-shared", "-fPIC", "-o", str(target)]
    result = subprocess.run(
        [*command, str(SHIM_SOURCE), library, "-lpthread"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        hint = " (sqlite3.h: install libsqlite3-dev)" if "sqlite3.h" in result.stderr else ""
        raise ShimUnavailable(f"building {SHIM_SOURCE.name} failed{hint}: {result.stderr[-2000:]}")
    return target


class Shim:
    """The compiled shim, loaded into this process: from now on SQLite's default VFS."""

    def __init__(self, path: Path) -> None:
        # RTLD_DEEPBIND: the shim binds to the libsqlite3 it was linked to (the one `_sqlite3`
        # uses) even when a library loaded earlier exports its own SQLite globally (TensorFlow
        # does: without it the VFS would be registered in that copy and never used).
        lib = ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL | getattr(os, "RTLD_DEEPBIND", 0))
        lib.crashvfs_register.restype = ctypes.c_int
        lib.crashvfs_arm.argtypes = [
            ctypes.c_int64,
            ctypes.c_uint64,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
        ]
        lib.crashvfs_arm.restype = None
        lib.crashvfs_ops.restype = ctypes.c_int64
        code = lib.crashvfs_register()
        if code != 0:
            raise HarnessError(f"sqlite3_vfs_register failed with code {code}")
        self._lib = lib

    def arm(self, at: int, *, seed: int, torn: bool, report_fd: int) -> None:
        """Lose power at the ``at``-th counted operation from now (0: never); the crash writes
        ``C <op> <write|sync|truncate> <db|wal|journal> <drop|torn>`` to ``report_fd``."""
        self._lib.crashvfs_arm(at, seed, int(torn), report_fd, CRASH_EXIT)

    def ops(self) -> int:
        """Writes, syncs and truncates counted so far."""
        return int(self._lib.crashvfs_ops())


@dataclass(frozen=True)
class CrashPlan:
    """One round: the writer's seed, the counted operation at which power fails (1-based), and
    whether unsynced sectors are torn (a ``tear_seed``-ed subset kept) or all dropped."""

    seed: int
    crash_at: int
    torn: bool
    tear_seed: int


def crash_round(
    shim_path: Path,
    path: str,
    durability: Durability,
    plan: CrashPlan,
    pragmas: Sequence[str] = (),
) -> tuple[list[workload.Ack], str]:
    """Run one writer under the shim until it loses power; returns its acknowledgements and
    where the crash landed (``"write wal"``, ``"sync db"``, ...)."""

    def write(out: int) -> None:
        shim = Shim(shim_path)
        seed_event_ids(plan.seed)
        shim.arm(plan.crash_at, seed=plan.tear_seed, torn=plan.torn, report_fd=out)
        calls = itertools.count()
        with workload.forced_pragmas(pragmas):
            ack = workload.pipe_writer(out)
            workload.write_events(path, durability, ack, plan.seed, lambda: next(calls) < MAX_CALLS)
        ack(f"F {shim.ops()}")  # never reached its crash point

    lines, code = workload.finish_child(*workload.start_child(write))
    crashes = [line for line in lines if line[0] == "C"]
    if code != CRASH_EXIT or len(crashes) != 1:
        done = [line for line in lines if line[0] == "F"]
        detail = f" after {done[0][1]} operations" if done else ""
        raise HarnessError(
            f"writer {plan} ended with status {code}{detail} instead of losing power at "
            f"operation {plan.crash_at} (its traceback, if any, is on stderr)"
        )
    _, _, op, kind, _ = crashes[0]
    return [line for line in lines if line[0] in ("A", "U", "S")], f"{op} {kind}"


def seed_event_ids(seed: int) -> None:
    """Draw this process's ``uuid4`` (the store's event ids) from a seeded generator: where the
    unique index on ``event_id`` splits its pages, and so which writes a call makes and where the
    crash point lands, is then the same on every run. For a writer child only."""
    rng = random.Random(seed)
    uuid.uuid4 = lambda: uuid.UUID(int=rng.getrandbits(128), version=4)


def inspect_copy(
    path: str, durability: Durability, acked: workload.Acked, scratch: Path
) -> workload.Damage:
    """:func:`crash_workload.inspect` on a copy of the database and ``-wal`` the crash left (not
    the ``-shm``: SQLite rebuilds it), so the next round recovers the crashed files themselves."""
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    copy = scratch / Path(path).name
    for suffix in ("", "-wal", "-journal"):
        if os.path.exists(path + suffix):
            shutil.copyfile(path + suffix, str(copy) + suffix)
    return workload.inspect(str(copy) if os.path.exists(path) else path, durability, acked)


@dataclass
class PowerLossReport:
    """What the crash points of one mode lost. ``problems`` counts crash points per kind of
    problem (``crash_workload.Damage``); ``sites`` where the crashes landed."""

    mode: str
    points: int = 0
    torn: int = 0
    files: int = 0
    acknowledged: int = 0  # acknowledged calls
    lost_events: int = 0  # acknowledged events missing after a crash, summed over crash points
    points_with_loss: int = 0
    integrity_checked: int = 0  # crash points that left a store file
    integrity_ok: int = 0  # ... and after which integrity_check said ok
    problems: Counter[str] = field(default_factory=Counter)
    sites: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Nothing acknowledged was lost and every file was intact."""
        return not self.problems and self.lost_events == 0

    def add(self, plan: CrashPlan, site: str, acknowledged: int, damage: workload.Damage) -> None:
        """Count one crash point."""
        self.points += 1
        self.torn += plan.torn
        self.sites[site] += 1
        self.acknowledged += acknowledged
        self.integrity_checked += damage.integrity is not None
        self.integrity_ok += damage.integrity == "ok"
        self.lost_events += damage.lost_events
        self.points_with_loss += damage.lost_events > 0
        for kind in {kind for kind, _ in damage.problems}:
            self.problems[kind] += 1

    def summary(self) -> str:
        sites = ", ".join(f"{site} {n}" for site, n in self.sites.most_common())
        problems = ", ".join(f"{kind} {n}" for kind, n in sorted(self.problems.items()))
        return (
            f"{self.mode}: {self.points} crash points ({self.torn} torn, the rest dropped) in "
            f"{self.files} files, {self.acknowledged} acknowledged calls; "
            f"{self.lost_events} acknowledged events lost ({self.points_with_loss} crash points "
            f"with a loss); integrity_check ok {self.integrity_ok}/{self.integrity_checked} "
            f"(crash points that left a file); "
            f"problems: {problems or 'none'}; crashed at: {sites}; {self.seconds:.1f} s"
        )


def mode_name(durability: Durability, pragmas: Sequence[str]) -> str:
    return " + ".join([f"durability {durability}", *(f"PRAGMA {p}" for p in pragmas)])


def scratch_folder(folder: str) -> str:
    """A new folder for the throwaway copies :func:`inspect_copy` checks: on the RAM disk when
    there is one (reopening a copy fsyncs, which on a busy disk costs more than the crash round
    itself), else in ``folder``."""
    ram = "/dev/shm"
    return tempfile.mkdtemp(prefix="powerloss-", dir=ram if os.access(ram, os.W_OK) else folder)


def powerloss(
    folder: str,
    *,
    shim: Path,
    points: int,
    durability: Durability = "full",
    pragmas: Sequence[str] = (),
    seed: int = 0,
    rounds_per_file: int = 25,
    max_ops: int = MAX_OPS,
) -> PowerLossReport:
    """Run ``points`` crash rounds in ``folder`` (created if needed; module docstring) and tally
    the damage; ``pragmas`` are forced on the writers' connections
    (``crash_workload.forced_pragmas``). Raises :class:`HarnessError` only for a failure of the
    harness itself."""
    os.makedirs(folder, exist_ok=True)
    rng = random.Random(seed)
    report = PowerLossReport(mode_name(durability, pragmas))
    start = time.perf_counter()
    scratch = Path(scratch_folder(folder))
    acked = workload.Acked()
    path = ""
    try:
        for round_ in range(points):
            if round_ % rounds_per_file == 0 or not path:
                report.files += 1
                path = os.path.join(folder, f"powerloss-{seed}-{report.files}.sqlite")
                acked = workload.Acked()
            plan = CrashPlan(
                seed=rng.randrange(2**31),
                crash_at=rng.randint(1, max_ops),
                torn=rng.random() < 0.5,
                tear_seed=rng.randrange(2**63),
            )
            acks, site = crash_round(shim, path, durability, plan, pragmas)
            reused = acked.record(acks)
            damage = inspect_copy(path, durability, acked, scratch / "copy")
            for message in reused:
                damage.add("seq reused", message)
            report.add(plan, site, len(acks), damage)
            if any(kind in PERSISTENT_DAMAGE for kind, _ in damage.problems):
                path = ""  # start over on a new file
            else:
                acked.rebase(damage)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report.seconds = time.perf_counter() - start
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1000, help="crash points (rounds)")
    parser.add_argument("--max-ops", type=int, default=MAX_OPS, help="crash points: 1..this")
    workload.add_run_options(parser)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        try:
            shim = build_shim(Path(folder))
        except ShimUnavailable as exc:
            print(f"cannot run: {exc}", file=sys.stderr)
            return 2
        report = powerloss(
            folder,
            shim=shim,
            points=args.points,
            max_ops=args.max_ops,
            **workload.run_options(args),
        )
    print(("ok: " if report.ok else "LOST: ") + report.summary())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
