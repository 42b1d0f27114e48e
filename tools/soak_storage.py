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
    path: str, durability: Durability, seed: int, delay: float, pragmas: Sequence[str] = ()
) -> list[workload.Ack]:
    """Fork a writer, SIGKILL it after ``delay`` seconds; returns its acknowledged lines."""

    def write(out: int) -> None:
        deadline = time.monotonic() + CHILD_LIFETIME
        with workload.forced_pragmas(pragmas):
            workload.write_events(
                path,
                durability,
                workload.pipe_writer(out),
                seed,
                lambda: time.monotonic() < deadline,
            )

    pid, read_end = workload.start_child(write)
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    acks, _ = workload.finish_child(pid, read_end)
    return acks


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
    rounds: int
    files: int
    acknowledged: int
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
) -> SoakReport:
    """Run ``rounds`` kill-and-check rounds in ``folder``; raises :class:`SoakFailure`.
    ``pragmas`` are forced on the children's connections (``crash_workload.forced_pragmas``)."""
    rng = random.Random(seed)
    start = time.perf_counter()
    acked = workload.Acked()
    path = ""
    files = acknowledged = events = 0
    for round_ in range(rounds):
        if round_ % rounds_per_file == 0:
            files += 1
            path = os.path.join(folder, f"soak-{seed}-{files}.sqlite")
            acked = workload.Acked()
        child_seed = rng.randrange(2**31)
        delay = rng.uniform(0.0, max_delay) if rng.random() < 0.9 else rng.uniform(0, 0.004)
        acks = run_child_and_kill(path, durability, child_seed, delay, pragmas)
        record(acked, acks, child_seed)
        acknowledged += len(acks)
        events = verify(path, durability, acked, child_seed)
    return SoakReport(rounds, files, acknowledged, events, time.perf_counter() - start)


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
