"""Crash soak of the device store: SIGKILL a writing child at random moments, then check the file.

Each round forks a child that opens the store (durability FULL by default) and, until it is
killed, logs events one at a time or in batches, uploads batches (``pending`` + ``mark_uploaded``)
and saves user state, writing one line to a pipe after each call returns (the acknowledgement).
The parent kills it with SIGKILL after a random delay (sometimes before the store is even open),
reopens the store as a device would after a crash and checks:

- ``PRAGMA integrity_check`` is ``ok``;
- every acknowledged event is present, in its acknowledged ``seq``; sequence numbers only grow
  across rounds (never reused after a crash);
- no partial transaction is visible: each batch is there completely or not at all;
- acknowledged uploads are marked uploaded; the outbox totals (kept by triggers) equal the rows;
- the saved user state is at least as new as the last acknowledged save and bit-exact.

A fresh file is started every ``--rounds-per-file`` rounds, so kills also land during schema
creation. ``tests/test_storage_crash.py`` runs 200 rounds of this in CI. Linux and macOS only
(``fork``). Usage, from the repository root:

    python tools/soak_storage.py [--rounds 1000] [--durability full] [--dir DIR] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from pocketrec.storage import NewEvent, Store

USER = "soak-user"
STATE_DIM = 16
CHILD_LIFETIME = 5.0  # seconds: a child that is never killed stops by itself


class SoakFailure(AssertionError):
    """A check failed after a kill (the message names the round's seed and the check)."""


def state_vector(count: int) -> npt.NDArray[np.float32]:
    """The state saved after ``count`` saves: distinct per count, exact in float32."""
    return (np.arange(STATE_DIM, dtype=np.float32) + np.float32(count)) / np.float32(3.0)


@dataclass
class Acked:
    """What the children of one file acknowledged, accumulated over its rounds."""

    seqs: set[int] = field(default_factory=set)
    uploaded: set[int] = field(default_factory=set)
    state_count: int = 0
    max_seq: int = 0


def _child(path: str, durability: str, out: int, seed: int) -> None:
    rng = random.Random(seed)

    def ack(line: str) -> None:
        os.write(out, (line + "\n").encode())  # < PIPE_BUF: one atomic write

    store = Store.open(path, durability="normal" if durability == "normal" else "full")
    saved = store.load_state(USER)
    count = saved.event_count if saved is not None else 0
    deadline = time.monotonic() + CHILD_LIFETIME
    txn = 0
    while time.monotonic() < deadline:
        txn += 1
        tag = f"{seed}-{txn}"
        action = rng.random()
        if action < 0.55:
            event = store.append(USER, f"item-{txn}", "click", context={"txn": tag, "n": 1})
            assert event is not None
            ack(f"A {event.seq} {event.seq}")
        elif action < 0.85:
            size = rng.randint(2, 20)
            batch = [
                NewEvent(USER, f"item-{txn}-{i}", "view", context={"txn": tag, "n": size})
                for i in range(size)
            ]
            logged = store.append_many(batch)
            ack(f"A {logged[0].seq} {logged[-1].seq}")
        elif action < 0.95:
            pending = store.pending(max_events=rng.randint(1, 40))
            if len(pending):
                store.mark_uploaded(pending)
                ack(f"U {pending.first_seq} {pending.last_seq}")
        else:
            count += 1
            store.save_state(USER, state_vector(count), model_version=1, event_count=count)
            ack(f"S {count}")


def run_child_and_kill(
    path: str, durability: str, seed: int, delay: float
) -> list[tuple[str, int, int]]:
    """Fork a writer, SIGKILL it after ``delay`` seconds; returns its acknowledged lines."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns, never runs the parent's cleanup
        code = 0
        try:
            os.close(read_end)
            _child(path, durability, write_end, seed)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    with os.fdopen(read_end, "rb") as pipe:
        output = pipe.read()
    acks = []
    for line in output.decode().splitlines(keepends=True):
        if not line.endswith("\n"):
            break  # cut off by the kill: not acknowledged
        kind, *numbers = line.split()
        first = int(numbers[0])
        acks.append((kind, first, int(numbers[1]) if len(numbers) > 1 else first))
    return acks


def record(acked: Acked, acks: list[tuple[str, int, int]], seed: int) -> None:
    """Fold one round's acknowledgements into ``acked`` (checking seqs only grow)."""
    for kind, first, last in acks:
        if kind == "A":
            if first <= acked.max_seq:
                raise SoakFailure(f"seed {seed}: seq {first} reused (max before: {acked.max_seq})")
            acked.seqs.update(range(first, last + 1))
            acked.max_seq = last
        elif kind == "U":
            acked.uploaded.update(range(first, last + 1))
        else:
            acked.state_count = max(acked.state_count, first)


def verify(path: str, durability: str, acked: Acked, seed: int) -> int:
    """Reopen the store after a kill and check everything (module docstring); returns the
    number of events in the file."""
    if not os.path.exists(path):
        if acked.seqs:
            raise SoakFailure(f"seed {seed}: the store file disappeared")
        return 0
    with Store.open(path, durability="normal" if durability == "normal" else "full") as store:
        integrity = store.integrity_check()
        if integrity != "ok":
            raise SoakFailure(f"seed {seed}: integrity_check: {integrity}")
        stats = store.stats()
        saved = store.load_state(USER)
    conn = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT seq, size, uploaded_at, context FROM events").fetchall()
    finally:
        conn.close()
    present = {row[0] for row in rows}
    missing = acked.seqs - present
    if missing:
        raise SoakFailure(f"seed {seed}: {len(missing)} acknowledged events lost: {min(missing)}")
    members: dict[str, list[int]] = {}
    expected: dict[str, int] = {}
    for seq, _size, _uploaded, context in rows:
        info = json.loads(context)
        members.setdefault(info["txn"], []).append(seq)
        expected[info["txn"]] = info["n"]
    for txn, seqs in members.items():
        size = expected[txn]
        if len(seqs) != size or max(seqs) - min(seqs) != size - 1:
            raise SoakFailure(f"seed {seed}: batch {txn} has {len(seqs)} of {size} events")
    not_uploaded = [row[0] for row in rows if row[0] in acked.uploaded and row[2] is None]
    if not_uploaded:
        raise SoakFailure(f"seed {seed}: acknowledged upload of seq {not_uploaded[0]} lost")
    pending = [row for row in rows if row[2] is None]
    totals = (len(pending), sum(row[1] for row in pending))
    if (stats.pending_events, stats.pending_bytes) != totals:
        raise SoakFailure(f"seed {seed}: outbox totals {stats} but the rows give {totals}")
    if acked.state_count:
        if saved is None or saved.event_count < acked.state_count:
            raise SoakFailure(f"seed {seed}: state save {acked.state_count} lost ({saved})")
        if not np.array_equal(saved.state, state_vector(saved.event_count)):
            raise SoakFailure(f"seed {seed}: state vector of save {saved.event_count} changed")
    return len(rows)


@dataclass
class SoakReport:
    rounds: int
    files: int
    acknowledged: int
    events_in_last_file: int
    seconds: float


def soak(
    folder: str,
    *,
    rounds: int,
    durability: str = "full",
    seed: int = 0,
    max_delay: float = 0.05,
    rounds_per_file: int = 25,
) -> SoakReport:
    """Run ``rounds`` kill-and-check rounds in ``folder``; raises :class:`SoakFailure`."""
    rng = random.Random(seed)
    start = time.perf_counter()
    acked = Acked()
    path = ""
    files = acknowledged = events = 0
    for round_ in range(rounds):
        if round_ % rounds_per_file == 0:
            files += 1
            path = os.path.join(folder, f"soak-{seed}-{files}.sqlite")
            acked = Acked()
        child_seed = rng.randrange(2**31)
        delay = rng.uniform(0.0, max_delay) if rng.random() < 0.9 else rng.uniform(0, 0.004)
        acks = run_child_and_kill(path, durability, child_seed, delay)
        record(acked, acks, child_seed)
        acknowledged += len(acks)
        events = verify(path, durability, acked, child_seed)
    return SoakReport(rounds, files, acknowledged, events, time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--durability", choices=("full", "normal"), default="full")
    parser.add_argument("--dir", help="folder for the store files (default: a temporary one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-delay", type=float, default=0.05, help="seconds before the kill")
    parser.add_argument("--rounds-per-file", type=int, default=25)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        try:
            report = soak(
                folder,
                rounds=args.rounds,
                durability=args.durability,
                seed=args.seed,
                max_delay=args.max_delay,
                rounds_per_file=args.rounds_per_file,
            )
        except SoakFailure as failure:
            print(f"FAIL: {failure}", file=sys.stderr)
            return 1
    print(
        f"ok: {report.rounds} rounds ({args.durability}), {report.files} files, "
        f"{report.acknowledged} acknowledged calls, all present; {report.seconds:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
