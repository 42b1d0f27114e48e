"""Faithfulness: replaying the held-out users event by event through the Recommender gives the
converter's offline metrics of the same bundle; and the ``pocketrec evaluate`` command."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pocketrec import Recommender
from pocketrec.cli import main
from pocketrec.core import bundle as fmt
from pocketrec.core import load
from pocketrec.core.split import leave_one_out
from pocketrec.runtime.replay import replay_evaluate


@pytest.mark.parametrize("name", ["f32", "int8"])
def test_replay_equals_the_converters_offline_metrics(runtime_bundles: Any, name: str) -> None:
    path = getattr(runtime_bundles, name)
    offline = fmt.read_manifest(path).metrics["test"]
    data, _ = load(runtime_bundles.data)
    result = replay_evaluate(Recommender.open(path, demotion=0), data)
    assert result.users == leave_one_out(data).num_users == 1200
    assert (result.skipped_users, result.unknown_events) == (0, 0)
    assert result.events > result.users
    assert result.metrics.keys() == offline.keys()
    assert result.metrics == pytest.approx(offline, abs=1e-9)


@pytest.mark.slow
def test_replay_skips_users_whose_target_the_catalog_lacks(runtime_bundles: Any) -> None:
    data, _ = load(runtime_bundles.data)
    result = replay_evaluate(Recommender.open(runtime_bundles.v2), data)
    assert result.model_version == 2
    assert result.skipped_users > 0
    assert result.unknown_events > 0  # items i00120 and up: accepted, vector unchanged
    assert result.users + result.skipped_users == leave_one_out(data).num_users
    assert 0 <= result.metrics["hr@10"] <= 1


def test_cli_evaluate_prints_one_json_object(
    runtime_bundles: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["evaluate", str(runtime_bundles.int8), "--data", str(runtime_bundles.data), "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    manifest = fmt.read_manifest(runtime_bundles.int8)
    assert (out.pop("users"), out.pop("model_version")) == (1200, manifest.model_version)
    assert out == pytest.approx(manifest.metrics["test"], abs=1e-9)


@pytest.mark.slow
def test_cli_evaluate_reports_the_match_and_extra_cut_offs(
    runtime_bundles: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["evaluate", str(runtime_bundles.f32), "--data", str(runtime_bundles.data)]
    assert main([*args, "--k", "15"]) == 0
    out = capsys.readouterr().out
    assert "replayed 1,200 test users" in out
    assert "hr@15=" in out
    assert "offline test metrics (converter): equal within 1e-6" in out
    assert main([*args, "--demotion", "1"]) == 0
    assert "demotion 1" in capsys.readouterr().out
    assert main([*args, "--k", "0"]) == 2
    assert "--k must be >= 1" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_evaluate_warns_how_many_users_and_events_a_partial_match_skipped(
    runtime_bundles: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """The v2 catalog lacks items i00120 and up: the users whose held-out item is one of them
    are skipped, and history events on them are counted, both said on stderr."""
    data, _ = load(runtime_bundles.data)
    expected = replay_evaluate(Recommender.open(runtime_bundles.v2), data)
    assert main(["evaluate", str(runtime_bundles.v2), "--data", str(runtime_bundles.data)]) == 0
    err = capsys.readouterr().err
    assert f"warning: {expected.skipped_users:,} of 1,200 held-out users skipped" in err
    assert "their held-out item is not in the bundle's catalog" in err
    assert f"metrics are over the other {expected.users:,}" in err
    assert f"{expected.unknown_events:,} of {expected.events:,} history events" in err


def test_cli_evaluate_and_inspect_refuse_a_file_for_a_bundle_folder(
    runtime_bundles: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = runtime_bundles.f32 / fmt.MANIFEST
    for args in (
        ["inspect", str(manifest)],
        ["evaluate", str(manifest), "--data", str(runtime_bundles.data)],
    ):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert f"error: {manifest}: is a file; a bundle is a folder" in err
        assert "Traceback" not in err


def test_cli_evaluate_on_the_validation_targets(
    runtime_bundles: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["evaluate", str(runtime_bundles.f32), "--data", str(runtime_bundles.data)]
    assert main([*args, "--stage", "valid", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    manifest = fmt.read_manifest(runtime_bundles.f32)
    assert out.pop("users") == 1200
    del out["model_version"]
    assert out == pytest.approx(manifest.metrics["valid"], abs=1e-9)
    assert out != pytest.approx(manifest.metrics["test"], abs=1e-9)
    assert main([*args, "--stage", "valid"]) == 0
    text = capsys.readouterr().out
    assert "replayed 1,200 valid users" in text
    assert "offline valid metrics (converter): equal within 1e-6" in text


def test_the_replay_feeds_negative_events_to_the_demotion(runtime_bundles: Any) -> None:
    """The data's dislikes and dismissals are observed: with demotion on, the ranking changes."""
    data, _ = load(runtime_bundles.data)
    off = replay_evaluate(Recommender.open(runtime_bundles.f32, demotion=0), data, stage="valid")
    on = replay_evaluate(Recommender.open(runtime_bundles.f32, demotion=4), data, stage="valid")
    assert on.users == off.users == 1200
    assert on.metrics != pytest.approx(off.metrics, abs=1e-9)
