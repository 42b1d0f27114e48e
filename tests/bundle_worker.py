"""Opening bundles in a separate worker process, so that a crash or a hang in the interpreter is
reported as an outcome instead of killing the test run.

    with BundleOpener() as opener:
        outcome = opener.open(path)  # Outcome(kind="refused" | "loaded" | "untyped" | ..., ...)

The worker (``python -c ...`` running :func:`serve`, in a temporary working folder so that a
source tree's ``pocketrec/`` folder never shadows the installed package) reads one bundle path
per line, opens it with ``open_bundle`` and answers one JSON line. A bundle that opens is also
used for a few events (:func:`_exercise`), to see whether a bundle that passed the proof still
misbehaves later. When the worker dies or does not answer within ``timeout`` seconds, the outcome
says so and the next :meth:`BundleOpener.open` starts a new one. The worker's address space is
capped at :data:`WORKER_MEMORY_BYTES`, so a model that asks for gigabytes fails in the worker
instead of exhausting the machine. The lines ``!crash`` and ``!hang`` make the worker segfault or
sleep, to test this harness.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

HERE = Path(__file__).resolve().parent

WORKER_MEMORY_BYTES = 2 << 30
"""Address space of a worker (``RLIMIT_AS``); opening a small bundle takes about 170 MB."""

STARTUP_TIMEOUT = 300.0
"""Seconds a new worker may take to import pocketrec and the interpreter."""

KINDS = ("refused", "loaded", "untyped", "crashed", "hung")
"""``refused``: ``BundleError``; ``loaded``: ``open_bundle`` returned (the proof passed);
``untyped``: any other exception; ``crashed``: the worker process died; ``hung``: no answer
within the timeout (the worker is killed)."""


@dataclass(frozen=True)
class Outcome:
    """What opening one bundle did. ``detail``: the error (type and message), the exit status,
    or for ``loaded`` what went wrong when the bundle was used afterwards (``""``: nothing)."""

    kind: str
    detail: str = ""


class BundleOpener:
    """A worker process that opens bundles; restarted after a crash or hang."""

    def __init__(self, timeout: float = 120.0) -> None:
        self.timeout = timeout
        self._proc: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._cwd = tempfile.TemporaryDirectory(prefix="bundle-worker-")

    def __enter__(self) -> BundleOpener:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._stop()
        self._cwd.cleanup()

    def open(self, bundle_dir: Path | str) -> Outcome:
        """Open ``bundle_dir`` in the worker (started, or restarted, first when needed)."""
        proc = self._start()
        assert proc.stdin is not None
        proc.stdin.write(f"{bundle_dir}\n")
        proc.stdin.flush()
        answer = self._answer(self.timeout)
        if isinstance(answer, Outcome):
            return answer
        return Outcome(answer["kind"], answer["detail"])

    def _answer(self, timeout: float) -> dict[str, str] | Outcome:
        """The worker's next JSON line, or the outcome of its death or silence."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            self._stop()
            return Outcome("hung", f"no answer in {timeout:.0f} s")
        if line is None:  # the worker's stdout closed: it died
            assert self._proc is not None
            code = self._proc.wait()
            self._proc = None
            return Outcome("crashed", f"worker exited with status {code}")
        answer: dict[str, str] = json.loads(line)
        return answer

    def _start(self) -> subprocess.Popen[str]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        code = (
            f"import sys; sys.path.insert(0, {str(HERE)!r}); import bundle_worker as w; w.serve()"
        )
        self._proc = subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=self._cwd.name,
        )
        self._lines = queue.Queue()
        threading.Thread(target=_pump, args=(self._proc.stdout, self._lines), daemon=True).start()
        ready = self._answer(STARTUP_TIMEOUT)
        if isinstance(ready, Outcome):
            raise RuntimeError(f"the bundle worker did not start: {ready.kind}, {ready.detail}")
        return self._proc

    def _stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


# --------------------------------------------------------------------------- the worker side


def serve() -> None:
    """The worker's loop: a bundle path per line on stdin, a JSON outcome per line on stdout
    (the first line, ``{}``, says that it is ready)."""
    import faulthandler
    import resource
    import time

    from pocketrec.core.errors import BundleError
    from pocketrec.runtime.bundle import open_bundle

    resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_BYTES, WORKER_MEMORY_BYTES))
    print("{}", flush=True)
    for line in sys.stdin:
        path = line.rstrip("\n")
        if path == "!crash":
            faulthandler._sigsegv()
        elif path == "!hang":
            time.sleep(3600)
        try:
            bundle = open_bundle(path)
        except BundleError as exc:
            answer = {"kind": "refused", "detail": str(exc)}
        except Exception as exc:  # everything else is what the tests look for
            answer = {"kind": "untyped", "detail": f"{type(exc).__name__}: {exc}"}
        else:
            answer = {"kind": "loaded", "detail": _exercise(bundle)}
        print(json.dumps(answer), flush=True)


def _exercise(bundle: Any) -> str:
    """Use a bundle that opened as the runtime would: 20 events on items spread over the catalog,
    a top-k after each. Returns what went wrong (``""``: nothing)."""
    import numpy as np

    from pocketrec.native import topk

    n = bundle.num_items
    state = bundle.step.initial_state()
    events = len(bundle.manifest.event_types)
    for i, item in enumerate(np.linspace(0, n - 1, 20).astype(int).tolist()):
        try:
            state, user = bundle.step.step(item, i % events, state)
            if not (np.all(np.isfinite(state)) and np.all(np.isfinite(user))):
                return f"event {i} (item {item}): non-finite state or user vector"
            topk(bundle.catalog, user, 10)
        except Exception as exc:
            return f"event {i} (item {item}): {type(exc).__name__}: {exc}"
    return ""
