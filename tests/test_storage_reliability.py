"""A full disk, threads logging while one uploads, fork(), and several processes on one file."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pocketrec.core.errors import StorageFullError
from pocketrec.storage import CatalogItem, Event, NewEvent, Store

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
BIG = {"pad": "x" * 3000}


def fill_until_full(store: Store, context: dict[str, str] | None = BIG) -> list[Event]:
    """Append events (3 KB by default) until the size limit stops them; returns the acknowledged
    ones."""
    acked: list[Event] = []

    def append_until_full() -> None:
        for _ in range(10_000):
            event = store.append("u", "i", "view", context=context)
            assert event is not None
            acked.append(event)

    with pytest.raises(StorageFullError, match="no room left"):
        append_until_full()
    assert acked, "the limit was hit before a single event fit"
    return acked


def test_full_disk_raises_storage_full_error_and_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with Store.open(path, max_size_bytes=192 * 1024) as store:
        store.save_state("u", np.ones(8, np.float32), model_version=1, event_count=1)
        acked = fill_until_full(store)
        with pytest.raises(StorageFullError):
            store.append_many([NewEvent("u", "i", "view", context=BIG) for _ in range(3)])
        with pytest.raises(StorageFullError):
            store.update_catalog([CatalogItem(f"item-{n}", "t" * 2000) for n in range(50)])
        with pytest.raises(StorageFullError):
            store.save_state("v", np.ones(60_000, np.float32), model_version=1, event_count=1)
        # reads still work and show exactly what was acknowledged
        pending = store.pending(max_events=100_000, max_bytes=2**30)
        assert [e.event_id for e in pending] == [e.event_id for e in acked]
        assert store.stats().pending_events == len(acked)
        assert store.catalog_size() == 0
        assert store.load_state("v") is None
        assert store.integrity_check() == "ok"
        # uploading still works on a full disk (marking frees nothing, needs no new pages)
        store.mark_uploaded(store.pending(max_events=2))
        # space returns: logging resumes where it stopped, no sequence number burnt
        store.set_max_size(None)
        resumed = store.append("u", "i", "view", context=BIG)
        assert resumed is not None
        assert resumed.seq == acked[-1].seq + 1
        store.update_catalog([CatalogItem(f"item-{n}", "t" * 2000) for n in range(50)])
        assert store.catalog_size() == 50
    with Store.open(path) as reopened:
        assert reopened.stats().pending_events == len(acked) - 2 + 1
        assert reopened.integrity_check() == "ok"


def test_full_disk_inside_a_transaction_undoes_only_the_failed_call(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.sqlite", max_size_bytes=128 * 1024) as store:
        acked = fill_until_full(store)
        with store.transaction():
            before = store.append("u", "before", "view")
            partly_fitting = [NewEvent("u", f"s{n}", "view") for n in range(3)]
            with pytest.raises(StorageFullError):  # the small ones fit, the last one does not
                store.append_many([*partly_fitting, NewEvent("u", "big", "view", context=BIG)])
            small = store.append("u", "small", "view")
        assert before is not None
        assert small is not None
        assert small.seq == before.seq + 1 == acked[-1].seq + 2  # the failed batch left no trace
        tail = store.pending(max_events=100_000, max_bytes=2**30).events[-2:]
        assert tail == (before, small)


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs (a real full file system), where this user may mount one; else skipped."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root on Linux")
    mountpoint = tmp_path / "tmpfs"
    mountpoint.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mountpoint)]
    if subprocess.run(mount, capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs is not allowed here")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=True)


def test_a_real_full_file_system(small_tmpfs: Path) -> None:
    path = small_tmpfs / "s.sqlite"
    with Store.open(path) as store:
        acked = fill_until_full(store)
        acked += fill_until_full(store, context=None)  # then small ones, until none fits either
        with pytest.raises(StorageFullError):
            store.append("u", "small", "view")  # full stays full: not even the WAL can grow
        assert store.integrity_check() == "ok"
        resize = ["mount", "-o", "remount,size=4m", str(small_tmpfs)]
        subprocess.run(resize, check=True)  # space returns
        resumed = store.append("u", "i", "view", context=BIG)
        assert resumed is not None
        assert resumed.seq == acked[-1].seq + 1
    with Store.open(path) as reopened:
        assert reopened.stats().pending_events == len(acked) + 1
        assert reopened.integrity_check() == "ok"


def test_threads_logging_while_one_uploads_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    writers, per_writer = 4, 120
    with Store.open(tmp_path / "s.sqlite") as store:
        acknowledged: list[list[Event]] = [[] for _ in range(writers)]
        uploaded: list[Event] = []
        done = threading.Event()
        errors: list[BaseException] = []

        def writer(index: int) -> None:
            rng = random.Random(index)
            try:
                while len(acknowledged[index]) < per_writer:
                    if rng.random() < 0.5:
                        event = store.append(f"user-{index}", "item", "view")
                        assert event is not None
                        acknowledged[index].append(event)
                    else:
                        batch = [NewEvent(f"user-{index}", f"b{n}", "click") for n in range(5)]
                        acknowledged[index].extend(store.append_many(batch))
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        def uploader() -> None:
            rng = random.Random(99)
            try:
                while True:
                    finished = done.is_set()  # read before the batch: then nothing can follow it
                    batch = store.pending(max_events=rng.randint(1, 40))
                    if len(batch):
                        assert store.mark_uploaded(batch) == len(batch)
                        uploaded.extend(batch)
                    elif finished:
                        return
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
        reader = threading.Thread(target=uploader)
        reader.start()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        done.set()
        reader.join()
        assert not errors, errors

        all_acked = [event for events in acknowledged for event in events]
        seqs = [event.seq for event in uploaded]
        assert seqs == sorted(seqs)
        assert len(set(seqs)) == len(seqs)
        assert sorted(seqs) == sorted(event.seq for event in all_acked)  # none lost
        assert {e.event_id for e in uploaded} == {e.event_id for e in all_acked}
        for events in acknowledged:  # each thread's own events in the order it logged them
            own = [event.seq for event in events]
            assert own == sorted(own)
        stats = store.stats()
        assert (stats.pending_events, stats.uploaded_events) == (0, len(all_acked))


@needs_fork
def test_a_forked_child_reopens_instead_of_using_the_parents_connection(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.sqlite") as store:
        parent_conn = store._conns.handle().conn
        store.append("parent", "before-fork", "view")
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: the same Store object, used after fork()
            status = 1
            try:
                reconnected = store._conns.handle().conn is not parent_conn
                logged = store.append_many([NewEvent("child", f"i{n}", "view") for n in range(5)])
                os.write(
                    write_end, f"{int(reconnected)} {' '.join(str(e.seq) for e in logged)}".encode()
                )
                store.close()  # abandons the inherited connection, closes the child's own
                status = 0
            finally:
                os._exit(status)
        os.close(write_end)
        _, status = os.waitpid(pid, 0)
        with os.fdopen(read_end) as pipe:
            child_reconnected, *child_seqs = pipe.read().split()
        assert status == 0
        assert child_reconnected == "1"
        assert store._conns.handle().conn is parent_conn  # the parent keeps its connection
        after = store.append("parent", "after-fork", "view")
        assert after is not None
        assert [int(s) for s in child_seqs] == [2, 3, 4, 5, 6]
        assert after.seq == 7
        assert [e.user_id for e in store.pending()] == ["parent"] + ["child"] * 5 + ["parent"]
        assert store.integrity_check() == "ok"


@needs_fork
@pytest.mark.skipif(sys.platform == "win32", reason="fork")
def test_several_processes_appending_to_one_file(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"  # not created yet: the four processes race to create it
    # Each waits for the others' write locks as long as a loaded machine may need: this checks
    # what ends up stored, not how fast (the default 5 s was exceeded once at load 10 on 2 cores).
    patient = 120.0
    children = []
    for index in range(3):
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                with Store.open(path, busy_timeout=patient) as store:
                    for n in range(60):
                        store.append(f"process-{index}", f"i{n}", "view")
                status = 0
            except BaseException:
                traceback.print_exc()  # the child's failure, on the test's captured stderr
            finally:
                os._exit(status)
        children.append(pid)
    with Store.open(path, busy_timeout=patient) as store:
        for n in range(60):
            store.append("parent", f"i{n}", "view")
        statuses = [os.waitpid(pid, 0)[1] for pid in children]
        assert statuses == [0, 0, 0]
        pending = store.pending(max_events=1000)
        assert len(pending) == 240
        assert [e.seq for e in pending] == list(range(1, 241))
        for user in ["parent", "process-0", "process-1", "process-2"]:
            items = [e.item_id for e in pending if e.user_id == user]
            assert items == [f"i{n}" for n in range(60)]
