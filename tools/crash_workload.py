"""The writer both crash tests of the device store run, and what they check after a crash.

``tools/soak_storage.py`` SIGKILLs a process running :func:`write_events`; ``tools/powerloss.py``
makes one lose power (its unsynced writes) at a chosen write. Both collect what the writer
acknowledged (:class:`Acked`, one pipe line per call, written after the call returned) and then
:func:`inspect` the reopened file:

- ``PRAGMA integrity_check`` is ``ok``;
- every acknowledged event is present, in its acknowledged ``seq`` (the row's ``txn`` tag says it
  is the acknowledged call's event); sequence numbers only grow (never reused after a crash);
- no partial transaction is visible: each batch is there completely or not at all;
- acknowledged uploads are marked uploaded; the outbox totals (kept by triggers) equal the rows;
- the saved user state is at least as new as the last acknowledged save and bit-exact.

Ack lines: ``A <first seq> <last seq> <txn>`` (events logged), ``U <first> <last>`` (batch
marked uploaded), ``S <count>`` (state saved). Linux and macOS only (the callers ``fork``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pocketrec.storage import NewEvent, Store
from pocketrec.storage.connection import Connections, Durability, Handle

USER = "soak-user"
STATE_DIM = 16

Ack = tuple[str, ...]
"""One acknowledgement line, split: its kind (``A``, ``U``, ``S``) and its fields."""


def state_vector(count: int) -> npt.NDArray[np.float32]:
    """The state saved after ``count`` saves: distinct per count, exact in float32."""
    values = (np.arange(STATE_DIM, dtype=np.float32) + np.float32(count)) / np.float32(3.0)
    return np.asarray(values, dtype=np.float32)


@contextmanager
def forced_pragmas(pragmas: Sequence[str]) -> Iterator[None]:
    """Run ``PRAGMA <p>`` for each of ``pragmas`` (e.g. ``"synchronous = OFF"``) on every
    connection a store opens in this process inside the block, right after the store's own
    pragmas: the store is otherwise unchanged, and put back on the way out. The crash tools use it
    in their writer child: the audit's ``synchronous = OFF`` is a pragma, so that is the change."""
    if not pragmas:
        yield
        return
    connect = Connections._connect

    def connect_and_force(self: Connections) -> Handle:
        handle = connect(self)
        for pragma in pragmas:
            handle.conn.execute(f"PRAGMA {pragma}")
        return handle

    Connections._connect = connect_and_force
    try:
        yield
    finally:
        Connections._connect = connect


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The command-line options both crash tools share (:func:`run_options` reads them)."""
    parser.add_argument("--durability", choices=("full", "normal"), default="full")
    parser.add_argument("--dir", help="folder for the store files (default: a temporary one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds-per-file", type=int, default=25)
    parser.add_argument(
        "--pragma",
        action="append",
        default=[],
        help="forced on the writer's connections after the store's own, e.g. 'synchronous = OFF'",
    )


def run_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of ``soak()`` / ``powerloss()`` that :func:`add_run_options` set."""
    return {
        "durability": args.durability,
        "seed": args.seed,
        "rounds_per_file": args.rounds_per_file,
        "pragmas": args.pragma,
    }


def write_events(
    path: str,
    durability: Durability,
    ack: Callable[[str], None],
    seed: int,
    keep_going: Callable[[], bool],
) -> None:
    """Open the store and, while ``keep_going()``, log events one at a time or in batches,
    upload batches (``pending`` + ``mark_uploaded``) and save user state, calling ``ack`` with
    one line after each call returned. Never closes the store (the caller crashes or ``_exit``s).
    """
    rng = random.Random(seed)
    store = Store.open(path, durability=durability)
    saved = store.load_state(USER)
    count = saved.event_count if saved is not None else 0
    txn = 0
    while keep_going():
        txn += 1
        tag = f"{seed}-{txn}"
        action = rng.random()
        if action < 0.55:
            event = store.append(USER, f"item-{txn}", "click", context={"txn": tag, "n": 1})
            assert event is not None
            ack(f"A {event.seq} {event.seq} {tag}")
        elif action < 0.85:
            size = rng.randint(2, 20)
            batch = [
                NewEvent(USER, f"item-{txn}-{i}", "view", context={"txn": tag, "n": size})
                for i in range(size)
            ]
            logged = store.append_many(batch)
            ack(f"A {logged[0].seq} {logged[-1].seq} {tag}")
        elif action < 0.95:
            pending = store.pending(max_events=rng.randint(1, 40))
            if len(pending):
                store.mark_uploaded(pending)
                ack(f"U {pending.first_seq} {pending.last_seq}")
        else:
            count += 1
            store.save_state(USER, state_vector(count), model_version=1, event_count=count)
            ack(f"S {count}")


def start_child(body: Callable[[int], None]) -> tuple[int, int]:
    """Fork a child that runs ``body(fd)`` with ``fd`` the write end of a pipe, then ``_exit``s:
    0 when ``body`` returns, 1 (its traceback on stderr) when it raises; it never runs the
    parent's cleanup. Returns the child's pid and the pipe's read end (:func:`finish_child`)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read_end)
            body(write_end)
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(write_end)
    return pid, read_end


def finish_child(pid: int, read_end: int, already: bytes = b"") -> tuple[list[Ack], int]:
    """Read what the child of :func:`start_child` writes until it ends (after ``already``, what
    was read from the pipe before); its complete lines (:func:`read_lines`) and its exit status
    (negative: killed by that signal)."""
    with os.fdopen(read_end, "rb") as pipe:
        output = already + pipe.read()
    _, status = os.waitpid(pid, 0)
    return read_lines(output), os.waitstatus_to_exitcode(status)


def pipe_writer(fd: int) -> Callable[[str], None]:
    """An ``ack`` for :func:`write_events`: one atomic ``write`` per line (< ``PIPE_BUF``)."""

    def ack(line: str) -> None:
        os.write(fd, (line + "\n").encode())

    return ack


def read_lines(output: bytes) -> list[Ack]:
    """The complete lines a child wrote, split into fields; a line cut off by the crash was not
    acknowledged and is left out."""
    lines = []
    for line in output.decode().splitlines(keepends=True):
        if not line.endswith("\n"):
            break
        if line.strip():
            lines.append(tuple(line.split()))
    return lines


@dataclass
class Damage:
    """What :func:`inspect` found: ``problems`` are ``(kind, message)`` pairs, empty when the
    file keeps everything acknowledged; ``lost_events`` counts acknowledged events that are
    missing (or whose ``seq`` holds another event)."""

    problems: list[tuple[str, str]] = field(default_factory=list)
    lost_events: int = 0
    integrity: str | None = "ok"  # integrity_check's answer; None: no file to check
    present: dict[int, str] = field(default_factory=dict)  # seq -> txn tag of every row
    uploaded: set[int] = field(default_factory=set)  # seqs marked uploaded
    state_count: int = 0  # event_count of the saved state (0: none)

    def add(self, kind: str, message: str) -> None:
        self.problems.append((kind, message))


@dataclass
class Acked:
    """What the children writing one file acknowledged, accumulated over its rounds."""

    seqs: dict[int, str] = field(default_factory=dict)  # seq -> txn tag of its call
    uploaded: set[int] = field(default_factory=set)
    state_count: int = 0
    max_seq: int = 0

    def record(self, acks: Sequence[Ack]) -> list[str]:
        """Fold one child's acknowledgements in; returns the reused sequence numbers found
        (each as a message; seqs must only grow across crashes). Other lines are ignored."""
        problems = []
        for kind, *fields in acks:
            if kind == "A":
                first, last, tag = int(fields[0]), int(fields[1]), fields[2]
                if first <= self.max_seq:
                    problems.append(f"seq {first} reused (max before: {self.max_seq})")
                self.seqs.update(dict.fromkeys(range(first, last + 1), tag))
                self.max_seq = max(self.max_seq, last)
            elif kind == "U":
                self.uploaded.update(range(int(fields[0]), int(fields[1]) + 1))
            elif kind == "S":
                self.state_count = max(self.state_count, int(fields[0]))
        return problems

    def rebase(self, damage: Damage) -> None:
        """Accept the file as ``damage`` found it (after counting what it lost), so the next
        crash is judged on its own: forget lost events, uploads and saves."""
        self.seqs = {seq: tag for seq, tag in self.seqs.items() if damage.present.get(seq) == tag}
        self.uploaded &= damage.uploaded
        self.state_count = min(self.state_count, damage.state_count)
        self.max_seq = max(damage.present, default=0)


def inspect(path: str, durability: Durability, acked: Acked) -> Damage:
    """Reopen the store after a crash (as a device would; this may write to the file) and check
    it against ``acked`` (module docstring). Never raises for a damaged file: a file the store
    cannot open or read counts every acknowledged event as lost."""
    damage = Damage()
    if not os.path.exists(path):
        damage.integrity = None
        if acked.seqs:
            damage.add("missing file", "the store file disappeared")
            damage.lost_events = len(acked.seqs)
        return damage
    try:
        _inspect(path, durability, acked, damage)
    except Exception as exc:  # a damaged file: StorageError, sqlite3.DatabaseError, bad JSON
        damage.integrity = f"unreadable: {exc}"
        damage.add("unreadable", f"cannot read the reopened store: {exc}")
        damage.lost_events = len(acked.seqs)
    return damage


def _inspect(path: str, durability: Durability, acked: Acked, damage: Damage) -> None:
    with Store.open(path, durability=durability) as store:
        damage.integrity = store.integrity_check()
        stats = store.stats()
        saved = store.load_state(USER)
    if damage.integrity != "ok":
        damage.add("integrity", f"integrity_check: {damage.integrity}")
    conn = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT seq, size, uploaded_at, context FROM events").fetchall()
    finally:
        conn.close()
    members: dict[str, list[int]] = {}
    expected: dict[str, int] = {}
    for seq, _size, uploaded_at, context in rows:
        info = json.loads(context)
        damage.present[seq] = info["txn"]
        members.setdefault(info["txn"], []).append(seq)
        expected[info["txn"]] = info["n"]
        if uploaded_at is not None:
            damage.uploaded.add(seq)
    damage.state_count = saved.event_count if saved is not None else 0

    lost = sorted(seq for seq, tag in acked.seqs.items() if damage.present.get(seq) != tag)
    if lost:
        damage.lost_events = len(lost)
        damage.add("lost events", f"{len(lost)} acknowledged events lost: seq {lost[0]}")
    for txn, seqs in members.items():
        size = expected[txn]
        if len(seqs) != size or max(seqs) - min(seqs) != size - 1:
            damage.add("partial batch", f"batch {txn} has {len(seqs)} of {size} events")
    not_uploaded = sorted(acked.uploaded & (damage.present.keys() - damage.uploaded))
    if not_uploaded:
        damage.add("lost upload", f"acknowledged upload of seq {not_uploaded[0]} lost")
    pending = [row for row in rows if row[2] is None]
    totals = (len(pending), sum(row[1] for row in pending))
    if (stats.pending_events, stats.pending_bytes) != totals:
        damage.add("outbox totals", f"outbox totals {stats} but the rows give {totals}")
    if acked.state_count:
        if saved is None or saved.event_count < acked.state_count:
            damage.add("lost state", f"state save {acked.state_count} lost ({saved})")
        elif not np.array_equal(saved.state, state_vector(saved.event_count)):
            damage.add("lost state", f"state vector of save {saved.event_count} changed")
