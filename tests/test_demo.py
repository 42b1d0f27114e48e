"""``pocketrec demo --fast``: the whole loop runs and its report holds what the issue asks for."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path
from typing import Any

import pytest

from pocketrec.cli import main

pytest.importorskip("tensorflow", reason="the demo trains models (the `convert` extra)")
pytest.importorskip("uvicorn", reason="the demo runs the sync server (the `server` extra)")
pytest.importorskip("matplotlib", reason="the demo draws plots (the `demo` extra)")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MODELS = ("version 1, float32 catalog", "version 1, int8 catalog", "version 2, int8 catalog")
BASELINE = "popularity (v1 training data)"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    """The output folder, ``report.json`` and the printed output of one fast run."""
    out = tmp_path_factory.mktemp("demo") / "out"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["demo", "--fast", "--out", str(out), "--devices", "3"])
    assert code == 0, printed.getvalue()
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return out, report, printed.getvalue()


def test_the_last_line_says_where_the_report_is(demo: tuple[Path, dict[str, Any], str]) -> None:
    out, _report, printed = demo
    assert printed.strip().splitlines()[-1] == f"report: {(out / 'report.md').resolve()}"


def test_both_versions_are_measured_and_beat_popularity(
    demo: tuple[Path, dict[str, Any], str],
) -> None:
    _out, report, _printed = demo
    assert report["versions"] == [1, 2]
    accuracy = report["accuracy"]
    assert set(MODELS) | {BASELINE} == set(accuracy)
    for name in MODELS:
        metrics = accuracy[name]
        assert all(math.isfinite(v) for v in metrics.values()), name
        for key in ("hr@10", "ndcg@10", "recall@10", "precision@10", "coverage@10"):
            assert 0.0 <= metrics[key] <= 1.0
        assert metrics["ndcg@10"] > accuracy[BASELINE]["ndcg@10"], name
        assert metrics["hr@10"] > accuracy[BASELINE]["hr@10"], name
    assert report["parity"]["1"]["max_abs_diff"] <= 1e-4


def test_every_logged_event_not_dropped_on_purpose_is_stored_once(
    demo: tuple[Path, dict[str, Any], str],
) -> None:
    _out, report, _printed = demo
    events = report["events"]
    assert events["dropped_by_outbox_cap"] > 0  # one device's outbox is capped on purpose
    expected = events["logged"] - events["dropped_by_outbox_cap"]
    assert events["uploaded"] == expected
    assert events["stored_on_server"] == expected  # resent events are stored once
    assert events["resent_and_deduplicated"] > 0  # one reply is lost on purpose
    assert events["still_pending"] == 0
    assert events["offline_sync_passes"] == 1


def test_latency_percentiles_and_bundle_sizes_are_reported(
    demo: tuple[Path, dict[str, Any], str],
) -> None:
    _out, report, _printed = demo
    for kind in ("observe", "recommend", "sync"):
        stats = report["latency_ms"][kind]
        assert stats["calls"] > 0
        assert 0 < stats["p50"] <= stats["p90"] <= stats["p99"]
    sizes = {name: entry["total"] for name, entry in report["bundles"].items()}
    assert sizes["version 1, int8 catalog"] < sizes["version 1, float32 catalog"]


def test_the_dismissed_item_leaves_the_list(demo: tuple[Path, dict[str, Any], str]) -> None:
    _out, report, _printed = demo
    d = report["dismissal"]
    assert d["before"][0] == d["dismissed"]
    assert d["dismissed"] not in d["after"]
    assert d["model_version"] == 2
    assert "#" in d["dismissed"]  # a synthetic title, not an id


def test_plots_are_png_files_that_the_markdown_shows(
    demo: tuple[Path, dict[str, Any], str],
) -> None:
    out, report, _printed = demo
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert sorted(report["plots"]) == ["dismissal.png", "latency.png", "metrics.png"]
    for name in report["plots"]:
        assert (out / name).read_bytes()[:8] == PNG_SIGNATURE
        assert f"]({name})" in markdown
    for name in (*MODELS, BASELINE):
        assert name in markdown


def test_everything_stays_under_out(demo: tuple[Path, dict[str, Any], str]) -> None:
    out, _report, _printed = demo
    assert (out / "server" / "server.sqlite").is_file()
    assert (out / "server" / "published" / "versions" / "2").is_dir()
    assert sorted(p.name for p in (out / "devices").iterdir()) == [
        "phone-1",
        "phone-2",
        "phone-3",
    ]


def test_a_non_empty_out_is_refused_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "keep.txt").write_text("mine", encoding="utf-8")
    assert main(["demo", "--fast", "--out", str(tmp_path)]) == 2
    assert "--force" in capsys.readouterr().err
    assert (tmp_path / "keep.txt").read_text(encoding="utf-8") == "mine"
