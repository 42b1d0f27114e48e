"""The C kernels checked in C (``tests/native_c/check_topk.c``), natively on every instruction-set
path this CPU has, and for aarch64 (the portable path, as phones run it) cross-compiled with
Debian's ``gcc-aarch64-linux-gnu`` and run under ``qemu-aarch64`` (``qemu-user``).

A missing compiler, cross compiler or qemu skips the test with the reason, or fails it when
``CI=true`` (``.ci/run`` installs them). The driver is compiled with the flags the extension is
built with (``native/csrc/build_cffi.py``), and is shown to reject broken kernels.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import NoReturn

import pytest

from pocketrec.native import backends

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "native" / "csrc"
DRIVER = ROOT / "tests" / "native_c" / "check_topk.c"
MUTANT = ROOT / "tests" / "native_c" / "mutant_topk.c"
MUTANTS = ["ties", "exclude", "nan", "padding", "int8"]


def unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def kernel_flags() -> list[str]:
    """The C flags the extension is built with (``build_cffi._compile_args``)."""
    spec = importlib.util.spec_from_file_location("build_cffi", CSRC / "build_cffi.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    flags: list[str] = module._compile_args()
    return flags


def compile_driver(compiler: str, out: Path, *extra: str) -> Path:
    command = [compiler, *kernel_flags(), "-Wall", "-Wextra", f"-I{CSRC}", *extra]
    command += [str(CSRC / "topk.c"), str(DRIVER), "-lm", "-o", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stderr}"
    return out


def run_driver(command: list[str], timeout: float = 600) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    return result.stdout


def passed_isas(stdout: str, min_cases: int = 500) -> list[str]:
    """The ISA paths the driver reports as passed, after checking it ran every one up to best
    with at least ``min_cases`` cases each."""
    best = re.search(r"^best isa (\d+)", stdout, re.MULTILINE)
    assert best is not None, stdout
    passed = re.findall(r"^isa (\d+) \((\w+)\): (\d+) cases passed$", stdout, re.MULTILINE)
    assert [int(isa) for isa, _, _ in passed] == list(range(int(best.group(1)) + 1)), stdout
    assert all(int(cases) >= min_cases for _, _, cases in passed), stdout
    return [name for _, name, _ in passed]


@pytest.fixture(scope="module")
def native_cc() -> str:
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None:
        unavailable("no C compiler (cc or gcc) to build tests/native_c/check_topk.c")
    return compiler


def test_c_kernels_on_every_isa_of_this_cpu(native_cc: str, tmp_path: Path) -> None:
    stdout = run_driver([str(compile_driver(native_cc, tmp_path / "check_topk"))])
    names = passed_isas(stdout)
    print(stdout)
    if "c" in backends():
        # the driver sees the same CPU paths as the installed extension
        from pocketrec.native import c_backend

        assert names == c_backend.available_isas()


def test_c_kernels_on_aarch64_under_qemu(tmp_path: Path) -> None:
    cross = shutil.which("aarch64-linux-gnu-gcc")
    qemu = shutil.which("qemu-aarch64") or shutil.which("qemu-aarch64-static")
    if cross is None or qemu is None:
        unavailable(
            "aarch64 check needs aarch64-linux-gnu-gcc and qemu-aarch64 "
            "(apt-get install gcc-aarch64-linux-gnu qemu-user)"
        )
    # static: qemu then needs no aarch64 libc on this machine
    binary = compile_driver(cross, tmp_path / "check_topk_aarch64", "-static")
    stdout = run_driver([qemu, str(binary)])
    print(stdout)
    assert passed_isas(stdout) == ["portable"]


@pytest.fixture(scope="module")
def mutant_driver(native_cc: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The driver linked to ``mutant_topk.c``, which wraps the real kernels."""
    folder = tmp_path_factory.mktemp("mutant")
    renames = [
        "-Dpr_topk_f32=real_pr_topk_f32",
        "-Dpr_topk_i8=real_pr_topk_i8",
        "-Dpr_topk_screened=real_pr_topk_screened",
    ]
    flags = [*kernel_flags(), f"-I{CSRC}"]
    real = folder / "topk_real.o"
    commands = [
        [native_cc, *flags, *renames, "-c", str(CSRC / "topk.c"), "-o", str(real)],
        [native_cc, *flags, str(real), str(MUTANT), str(DRIVER), "-lm", "-o", str(folder / "m")],
    ]
    for command in commands:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        assert result.returncode == 0, f"{' '.join(command)}\n{result.stderr}"
    return folder / "m"


def test_mutant_wrapper_unset_passes(mutant_driver: Path) -> None:
    passed_isas(run_driver([str(mutant_driver), "1", "100"]), min_cases=200)


@pytest.mark.parametrize("mutant", MUTANTS)
def test_driver_rejects_a_broken_kernel(mutant_driver: Path, mutant: str) -> None:
    result = subprocess.run(
        [str(mutant_driver), "1", "100"],
        env={**os.environ, "PR_MUTANT": mutant},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL isa 0" in result.stderr
