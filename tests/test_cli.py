"""The ``pocketrec`` command line: every command works and is documented in the README."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pocketrec.cli import build_parser, main

README = Path(__file__).resolve().parents[1] / "README.md"


def _commands() -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(sub.choices)


def test_every_command_is_documented_in_the_readme() -> None:
    text = README.read_text(encoding="utf-8")
    missing = [name for name in _commands() if f"`pocketrec {name}" not in text]
    assert missing == [], f"commands missing from README.md: {missing}"


def test_readme_starts_with_the_two_newcomer_commands() -> None:
    head = README.read_text(encoding="utf-8").splitlines()[:15]
    block = "\n".join(head)
    assert "pip install '.[demo]' && .venv/bin/pocketrec demo" in block
    assert "pip install -e '.[dev]' && tools/with_postgres.sh .venv/bin/python -m pytest" in block


def test_bad_arguments_exit_2_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--devices", "0"]) == 2
    assert "--devices >= 1" in capsys.readouterr().err


def test_python_dash_m_runs_the_cli() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pocketrec", "backends"], capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("available: ")
    assert "numpy" in out


def test_readme_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    assert blocks, "README.md has no python example"
    catalog = np.random.default_rng(1).standard_normal((500, 32)).astype(np.float32)
    np.save(tmp_path / "catalog.npy", catalog)
    # The embedding example opens the demo's version 2: the committed format fixture stands in
    # for it (test_demo.py runs the example on the demo's own bundle).
    fixture = README.parent / "tests" / "fixtures" / "bundle_v1"
    shutil.copytree(fixture, tmp_path / "pocketrec-demo" / "v2" / "bundle-int8")
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
