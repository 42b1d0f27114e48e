"""Crash soak of the device store: SIGKILL a writing child at random moments, then check the file.

Each round forks a child that runs ``crash_workload.write_events`` (the store, durability FULL by
default: events logged one at a time or in batches, batches uploaded, user state saved, each call
acknowledged on a pipe after it returned) until it is killed. The parent kills it with SIGKILL
after a random delay (sometimes before the store is even open), reopens the store as a device would
after a crash and checks it with ``crash_workload.inspect`` (integrity, every acknowledged event in
its seq, whole batches, uploads, outbox totals, user state; see there).

A fresh file is started every ``--rounds-per-file`` rounds, so kills also land during schema
creation. ``tests/test_storage_crash.py`` runs 200 rounds of this in CI. A SIGKILL keeps all the
process wrote to the OS, so this proves the store survives an app crash, not a power loss
(``tools/powerloss.py`` tests that). Linux and macOS only (``fork``). Usage, from the repository
root:

    python tools/soak_storage.py [--rounds 1000] [--durability full] [--dir DIR] [--seed 0]
                                 [--pragma 'synchronous = OFF']
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

import crash_workload as workload

from pocketrec.storage.connection import Durability

CHILD_LIFETIME = 5.0  # seconds: a child that is never killed stops by itself


class SoakFailure(AssertionError):
    """A check failed after a kill (the message names the round's seed and the check)."""


def run_child_and_kill(
    path: str,
    durability: Durability,
    seed: int,
    delay: float,
    pragmas: Sequence[str] = (),
    *,
    after_ack: bool = False,
) -> list[workload.Ack]:
    """Fork a writer, SIGKILL it after ``delay`` seconds (counted from its first acknowledged
    call when ``after_ack``: that round then has one, however slow the machine); returns its
    acknowledged lines. The writer always makes its first call, then stops by itself after
    ``CHILD_LIFETIME`` seconds if it was not killed."""

    def write(out: int) -> None:
        deadline = time.monotonic() + CHILD_LIFETIME
        calls = 0

        def keep_going() -> bool:
            nonlocal calls
            calls += 1
            return calls == 1 or time.monotonic() < deadline

        with workload.forced_pragmas(pragmas):
            workload.write_events(path, durability, workload.pipe_writer(out), seed, keep_going)

    pid, read_end = workload.start_child(write)
    early = _read_first_line(read_end) if after_ack else b""
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    acks, _ = workload.finish_child(pid, read_end, early)
    return acks


def _read_first_line(fd: int) -> bytes:
    """Read from the pipe ``fd`` until a whole line arrived or the writer closed it."""
    data = b""
    while b"\n" not in data:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data


def record(acked: workload.Acked, acks: Sequence[workload.Ack], seed: int) -> None:
    """Fold one round's acknowledgements into ``acked`` (checking seqs only grow)."""
    problems = acked.record(acks)
    if problems:
        raise SoakFailure(f"seed {seed}: {problems[0]}")


def verify(path: str, durability: Durability, acked: workload.Acked, seed: int) -> int:
    """Reopen the store after a kill and check everything (``crash_workload.inspect``);
    returns the number of events in the file."""
    damage = workload.inspect(path, durability, acked)
    if damage.problems:
        raise SoakFailure(f"seed {seed}: {damage.problems[0][1]}")
    return len(damage.present)


@dataclass
class SoakReport:
    """``acknowledged``: calls acknowledged over all rounds (each checked present after its
    kill); at least one in each of the ``rounds_after_ack`` rounds killed after an ack."""

    rounds: int
    files: int
    acknowledged: int
    rounds_after_ack: int
    events_in_last_file: int
    seconds: float


def soak(
    folder: str,
    *,
    rounds: int,
    durability: Durability = "full",
    seed: int = 0,
    max_delay: float = 0.05,
    rounds_per_file: int = 25,
    pragmas: Sequence[str] = (),
    ack_every: int = 10,
) -> SoakReport:
    """Run ``rounds`` kill-and-check rounds in ``folder``; raises :class:`SoakFailure`.
    ``pragmas`` are forced on the children's connections (``crash_workload.forced_pragmas``).
    Every ``ack_every``-th round kills its writer only after its first acknowledged call (the
    others at a random moment, maybe before the store is open), so the check always has
    acknowledged writes to find, however loaded the machine."""
    rng = random.Random(seed)
    start = time.perf_counter()
    acked = workload.Acked()
    path = ""
    files = acknowledged = events = gated = 0
    for round_ in range(rounds):
        if round_ % rounds_per_file == 0:
            files += 1
            path = os.path.join(folder, f"soak-{seed}-{files}.sqlite")
            acked = workload.Acked()
        child_seed = rng.randrange(2**31)
        delay = rng.uniform(0.0, max_delay) if rng.random() < 0.9 else rng.uniform(0, 0.004)
        after_ack = round_ % ack_every == ack_every - 1
        acks = run_child_and_kill(path, durability, child_seed, delay, pragmas, after_ack=after_ack)
        if after_ack and not acks:
            raise SoakFailure(f"seed {child_seed}: the writer died before its first call returned")
        record(acked, acks, child_seed)
        acknowledged += len(acks)
        gated += after_ack
        events = verify(path, durability, acked, child_seed)
    return SoakReport(rounds, files, acknowledged, gated, events, time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--max-delay", type=float, default=0.05, help="seconds before the kill")
    workload.add_run_options(parser)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        try:
            report = soak(
                folder,
                rounds=args.rounds,
                max_delay=args.max_delay,
                **workload.run_options(args),
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
