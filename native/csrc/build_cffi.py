"""cffi build script for the C top-k kernel (``pocketrec.native._ctopk``).

Used by ``setup.py`` through ``cffi_modules``. The cdefs are read from ``topk.h`` beside this
file (its preprocessor lines other than integer ``#define`` constants are dropped), so the header
is the one place that declares the C interface.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from cffi import FFI

CSRC = Path(__file__).resolve().parent
_INT_DEFINE = re.compile(r"^#define\s+\w+\s+-?\d+\s*$")


def read_cdefs(header: Path) -> str:
    """Return the header's declarations in a form ``FFI.cdef`` accepts."""
    lines = header.read_text(encoding="utf-8").splitlines()
    return "\n".join(line for line in lines if not line.startswith("#") or _INT_DEFINE.match(line))


def _compile_args() -> list[str]:
    if sys.platform == "win32":
        return ["/O2"]
    # No -ffast-math: the kernel relies on IEEE NaN checks and on a fixed rounding of the scores.
    return ["-O3", "-std=gnu11", "-fno-math-errno", "-fvisibility=hidden"]


def _source_path(path: Path) -> str:
    # setuptools wants sources relative to setup.py's folder (the working directory of a build).
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


ffibuilder = FFI()
ffibuilder.cdef(read_cdefs(CSRC / "topk.h"))
ffibuilder.set_source(
    "pocketrec.native._ctopk",
    '#include "topk.h"',
    sources=[_source_path(CSRC / "topk.c")],
    include_dirs=[str(CSRC)],
    extra_compile_args=_compile_args(),
    optional=True,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
