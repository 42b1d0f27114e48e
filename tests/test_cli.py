"""The ``pocketrec`` command line: every command and option is documented (README, ``--help``
with defaults), arguments are checked before TensorFlow is imported, a missing extra is named,
and errors are one line without a traceback."""

from __future__ import annotations

import argparse
import re
import shutil
import socket
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


def _parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    """Every command's parser, named as typed (``pocketrec data export``), the top one first."""
    found: list[tuple[str, argparse.ArgumentParser]] = []

    def walk(name: str, parser: argparse.ArgumentParser) -> None:
        found.append((name, parser))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, child in action.choices.items():
                    walk(f"{name} {sub}", child)

    walk("pocketrec", build_parser())
    return found


def _subcommand_entries() -> list[tuple[str, argparse.Action]]:
    """The ``(command, entry)`` lines that ``--help`` lists under COMMAND or ACTION."""
    return [
        (f"{name} {entry.dest}", entry)
        for name, parser in _parsers()
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for entry in action._choices_actions
    ]


def test_every_command_has_a_one_line_description() -> None:
    entries = _subcommand_entries()
    assert len(entries) >= len(_commands()) + 5  # the commands, device's and data's actions
    for name, entry in entries:
        assert entry.help, name
        assert "\n" not in entry.help, name
    for name, parser in _parsers()[1:]:
        assert parser.description, f"{name} --help has no description"


def test_every_option_is_documented_and_shows_its_default() -> None:
    """sqlite-utils style: every option of every command has help text; every option that
    takes a value and is not required says its default (the formatter adds it, or the help says
    what happens without it)."""
    checked = 0
    for name, parser in _parsers():
        formatter = parser._get_formatter()
        for action in parser._actions:
            skip = (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)
            if isinstance(action, skip):  # sub-commands: test_every_command_has_a_one_line_…
                continue
            assert action.help, f"{name} {action.dest}: no help text"
            if not action.option_strings or action.required or action.nargs == 0:
                continue  # positionals, required options and flags have no default to show
            text = formatter._expand_help(action)
            assert "default" in text, f"{name} {action.option_strings[0]}: {text!r}"
            checked += 1
    assert checked > 40


def test_help_text_has_no_rest_markup() -> None:
    for name, parser in _parsers():
        text = parser.format_help()
        assert "`" not in text, f"{name} --help: {text}"
        assert ":class:" not in text, name


def test_dtype_options_are_explained() -> None:
    convert = dict(_parsers())["pocketrec convert"].format_help()
    squeezed = " ".join(convert.split())
    assert "float16 (stored in half precision" in squeezed
    assert "int8 codes with one float32 scale per item" in squeezed


def _run_python(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


BLOCKING_MAIN = """
import sys
BLOCKED = set(sys.argv[1].split(","))
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Blocker())
from pocketrec.cli import main
sys.exit(main(sys.argv[2:]))
"""
"""``python -c BLOCKING_MAIN MODULES ARGS...``: the CLI with the comma-separated top-level
``MODULES`` unimportable, as when an extra is not installed."""


@pytest.mark.parametrize(
    ("blocked", "args", "says"),
    [
        (
            "tensorflow",
            ["train", "--data", "d.csv", "--out", "m"],
            "pocketrec train needs tensorflow",
        ),
        ("tensorflow", ["convert", "m", "--out", "b"], "pocketrec convert needs tensorflow"),
        ("matplotlib", ["demo", "--fast"], "pocketrec demo needs matplotlib"),
        (
            "starlette,uvicorn,prometheus_client",
            ["serve", "--bundles", "b"],
            "pocketrec serve needs",
        ),
        # a dependency of starlette: find_spec finds the extra's modules, their import fails
        ("anyio", ["serve", "--bundles", "b"], "pocketrec serve needs anyio"),
    ],
)
def test_a_command_without_its_extra_names_the_extra(
    tmp_path: Path, blocked: str, args: list[str], says: str
) -> None:
    (tmp_path / "d.csv").write_text("user,item,timestamp\nu,i,1\nu,j,2\nu,k,3\n")
    (tmp_path / "m").mkdir()
    (tmp_path / "b").mkdir()
    extra = {"train": "convert", "convert": "convert", "demo": "demo", "serve": "server"}
    code = "import os; os.chdir(" + repr(str(tmp_path)) + ")\n" + BLOCKING_MAIN
    done = _run_python(code, blocked, *args)
    assert done.returncode == 2, done.stderr
    assert says in done.stderr
    assert f"pip install 'pocketrec[{extra[args[0]]}]'" in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "pocketrec-demo").exists()


CHECKS_WITHOUT_TENSORFLOW = """
import sys
from pocketrec.cli import main
codes = [main(args.split("|")) for args in sys.argv[1:]]
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
print(codes, loaded)
"""


def test_train_and_convert_check_their_arguments_before_importing_tensorflow(
    tmp_path: Path,
) -> None:
    data, afile, full, model = (tmp_path / n for n in ("d.csv", "afile", "full", "model"))
    data.write_text("user,item,timestamp\nu,i,1\nu,j,2\nu,k,3\n")
    afile.write_text("x")
    full.mkdir()
    (full / "old.txt").write_text("keep me")
    model.mkdir()
    cases = {
        f"train|--data|{tmp_path / 'nope.csv'}|--out|{tmp_path / 'm'}": "--data "
        f"{tmp_path / 'nope.csv'}: no such file or folder",
        f"train|--data|{data}|--out|{afile}": f"--out {afile}: exists and is a file",
        f"train|--data|{data}|--out|{full}": f"--out {full}: the folder is not empty; pass --force",
        f"train|--data|{data}|--out|{tmp_path / 'm'}|--ema|1.5": "ema must be in [0, 1)",
        f"convert|{afile}|--out|{tmp_path / 'b'}": f"MODEL_DIR {afile}: is a file",
        f"convert|{model}|--out|{full}": f"--out {full}: the folder is not empty; pass --force",
    }
    done = _run_python(CHECKS_WITHOUT_TENSORFLOW, *cases)
    assert done.stdout.strip() == f"{[2] * len(cases)} []", done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == len(cases), done.stderr
    for line, expected in zip(lines, cases.values(), strict=True):
        assert expected in line, (line, expected)
    assert (full / "old.txt").read_text() == "keep me"
    assert not (tmp_path / "m").exists()


def test_serve_refuses_a_missing_bundles_folder_and_a_busy_port(tmp_path: Path) -> None:
    serve = [sys.executable, "-m", "pocketrec", "serve", "--db", str(tmp_path / "s.sqlite")]
    done = subprocess.run(
        [*serve, "--bundles", str(tmp_path / "nope")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert f"--bundles {tmp_path / 'nope'}: no such folder" in done.stderr
    assert "Traceback" not in done.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [*serve, "--bundles", str(tmp_path), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2, done.stderr
    assert f"port {port} on 127.0.0.1 is already in use" in done.stderr
    assert "another port with --port" in done.stderr
    assert "Traceback" not in done.stderr
