"""Third-party log lines stay off stderr: LiteRT's native "Created TensorFlow Lite XNNPACK
delegate" notice when a bundle opens (a real interpreter in a child process, its stderr captured)
unless ``POCKETREC_VERBOSE=1``; and the filter never swallows anything else written meanwhile."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from typing import Any

from pocketrec.core.third_party_logs import VERBOSE_ENV

OPEN_AND_RECOMMEND = """
import sys
from pocketrec.runtime import Recommender
for _ in range(2):
    with Recommender.open(sys.argv[1]) as rec:
        rec.observe("i00001", "view", user="u")
        rec.recommend(k=3, user="u")
print("opened twice", file=sys.stderr)
"""


def _stderr_of(code: str, *args: str, verbose: bool) -> str:
    """The stderr of ``python -c code args`` (run outside the work tree, whose ``pocketrec/``
    folder would shadow the installed package in the runtime CI leg)."""
    env = {k: v for k, v in os.environ.items() if k != VERBOSE_ENV}
    if verbose:
        env[VERBOSE_ENV] = "1"
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tempfile.gettempdir(),
    )
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_opening_a_bundle_writes_nothing_to_stderr(runtime_bundles: Any) -> None:
    assert _stderr_of(OPEN_AND_RECOMMEND, str(runtime_bundles.f32), verbose=False) == (
        "opened twice\n"
    )


def test_verbose_shows_the_interpreters_notice(runtime_bundles: Any) -> None:
    """The notice is there to hide: the first test would fail if the filter did nothing."""
    err = _stderr_of(OPEN_AND_RECOMMEND, str(runtime_bundles.f32), verbose=True)
    assert "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." in err
    assert err.endswith("opened twice\n")


FILTERED_WRITES = """
import os, sys
from pocketrec.core.third_party_logs import XNNPACK_NOTICE, without_xnnpack_notice
print("before", file=sys.stderr, end="\\n")
with without_xnnpack_notice():
    os.write(2, b"native error 1\\n" + XNNPACK_NOTICE + b"\\nnative error 2 (no newline)")
    print("python line", file=sys.stderr)
with without_xnnpack_notice():  # LiteRT prints it once a process: not filtered any more
    os.write(2, b"after\\n")
print("end", file=sys.stderr)
"""


def test_the_filter_keeps_every_other_line_in_order() -> None:
    err = _stderr_of(FILTERED_WRITES, verbose=False)
    assert err == "before\nnative error 1\nnative error 2 (no newline)python line\nafter\nend\n"
