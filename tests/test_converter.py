"""Converter: training on a tiny synthetic dataset, TFLite export, parity gate, bundle round trip,
corruption detection, and the train/convert/inspect command line."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="the converter needs the `convert` extra")

from pocketrec.cli import main
from pocketrec.converter import model_dir
from pocketrec.converter.model import InterestModel, ModelConfig
from pocketrec.converter.parity import parity_gate
from pocketrec.converter.pipeline import convert_step_model, export_bundle
from pocketrec.converter.training import evaluate_model, train, user_vectors
from pocketrec.core import bundle as fmt
from pocketrec.core import leave_one_out, synthetic, write_csv
from pocketrec.core.errors import BundleError, ConversionError
from pocketrec.core.heldout import HeldOut, StageData
from pocketrec.core.metrics import popularity_baseline
from pocketrec.native.int8 import Int8Items
from pocketrec.runtime.bundle import open_bundle
from pocketrec.runtime.evaluation import replay_user_vectors
from pocketrec.runtime.step import StepModel

TINY = {
    "embedding_dim": 16,
    "hidden_dim": 32,
    "user_dim": 16,
    "max_epochs": 15,
    "patience": 3,
    "learning_rate": 5e-3,
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory trained on a small synthetic dataset (a few seconds)."""
    data = synthetic.generate(num_users=1200, num_items=150, seed=3)
    split = leave_one_out(data)
    model, report = train(split, ModelConfig(num_items=data.num_items, **TINY), show_progress=False)
    out = tmp_path_factory.mktemp("model")
    model_dir.save(out, model, data, split, report)
    return out


@pytest.fixture(scope="module")
def bundle_dir(trained: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "f32"
    export_bundle(trained, out, model_version=7)
    return out


def test_training_beats_popularity_on_synthetic_data(trained: Path) -> None:
    loaded = model_dir.load(trained)
    report = json.loads((trained / model_dir.REPORT).read_text())
    assert report["best_epoch"] >= 1
    assert report["epochs"][0]["loss"] > report["epochs"][report["best_epoch"] - 1]["loss"]
    # ~20-event histories: the validation targets are 5.9% of the refit's positions, so the
    # model kept was trained again on them (schedule.py) and is scored on the test targets.
    assert report["refit_epochs"] == report["best_epoch"]
    metrics = evaluate_model(loaded.model, loaded.heldout.stage("test"))
    data = synthetic.generate(num_users=1200, num_items=150, seed=3)
    pop = popularity_baseline(leave_one_out(data), stage="test")
    assert metrics["hr@10"] > pop["hr@10"]
    assert metrics["ndcg@10"] > pop["ndcg@10"]


def test_bundle_round_trip(trained: Path, bundle_dir: Path) -> None:
    loaded = model_dir.load(trained)
    bundle = open_bundle(bundle_dir)
    m = bundle.manifest
    assert m.model_version == 7
    assert (m.num_items, m.user_dim, m.state_dim) == (150, 17, loaded.model.config.state_dim)
    assert m.state_dim == 2 * 32 * 2  # two LRU blocks of 32 complex units
    assert m.event_types == ["view", "click", "purchase", "like", "dislike", "dismiss"]
    assert isinstance(bundle.catalog, np.ndarray)
    np.testing.assert_array_equal(bundle.catalog, loaded.model.catalog())
    assert not bundle.catalog.flags.writeable  # memory-mapped read-only
    np.testing.assert_array_equal(bundle.initial_user, loaded.model.initial_user())
    assert bundle.items.ids == loaded.items.ids
    assert bundle.titles == loaded.titles
    assert bundle.titles is not None
    assert all(isinstance(t, str) and t for t in bundle.titles)
    # A refit model was trained on the validation targets: no validation metrics; its parity
    # gate and accuracy figures read the test histories.
    assert "valid" not in m.metrics
    assert 0.0 <= m.metrics["test"]["hr@10"] <= 1.0
    assert m.metrics["training"]["refit_epochs"] >= 1
    assert m.metrics["parity"]["max_abs_diff"] <= 1e-4
    assert m.metrics["accuracy"]["bundle"]["hr@10"] <= 1.0


def _parity(model: InterestModel, tflite: bytes, data: StageData) -> dict[str, float]:
    keras_users = user_vectors(model, data.items, data.events)
    lite_users = replay_user_vectors(StepModel(tflite), data.items, data.events)
    return parity_gate(keras_users, lite_users, model.catalog(), data.excluded, "float32")


def test_step_model_replay_matches_keras_sequence_model(trained: Path, bundle_dir: Path) -> None:
    loaded = model_dir.load(trained)
    valid = loaded.heldout.stage("valid").subset(50)
    result = _parity(loaded.model, (bundle_dir / fmt.STEP_MODEL).read_bytes(), valid)
    assert result["max_abs_diff"] <= 1e-4
    assert result["top10_overlap"] == 1.0


def test_parity_gate_rejects_a_model_with_other_weights(trained: Path) -> None:
    loaded = model_dir.load(trained)
    other = InterestModel(ModelConfig(num_items=150, **{**TINY, "seed": 99}))
    wrong = convert_step_model(other)
    with pytest.raises(ConversionError, match="parity check failed"):
        _parity(loaded.model, wrong, loaded.heldout.stage("valid").subset(20))


@pytest.mark.parametrize(
    ("model_dtype", "catalog_dtype"), [("float16", "float32"), ("int8", "int8")]
)
def test_quantized_variants(
    trained: Path, tmp_path: Path, model_dtype: str, catalog_dtype: str
) -> None:
    result = export_bundle(
        trained, tmp_path / "b", model_dtype=model_dtype, catalog_dtype=catalog_dtype
    )
    assert result.parity["top10_overlap"] >= 0.8
    bundle = open_bundle(tmp_path / "b")
    assert bundle.manifest.model_dtype == model_dtype
    if catalog_dtype == "int8":
        assert isinstance(bundle.catalog, Int8Items)
        assert fmt.CATALOG not in result.sizes
        assert result.sizes[fmt.CATALOG_INT8_CODES] < 150 * 17 + 200
    f32_size = (Path(trained) / model_dir.WEIGHTS).stat().st_size
    assert result.sizes[fmt.STEP_MODEL] < f32_size


def test_export_refuses_to_overwrite_without_force(trained: Path, bundle_dir: Path) -> None:
    with pytest.raises(FileExistsError, match="not empty"):
        export_bundle(trained, bundle_dir)


def _copy(bundle_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(bundle_dir, dst)
    return dst


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / fmt.MANIFEST).write_text("{not json"), "not valid JSON"),
        (lambda d: (d / fmt.MANIFEST).unlink(), "no manifest"),
        (lambda d: (d / fmt.STEP_MODEL).unlink(), "missing"),
        (lambda d: (d / fmt.STEP_MODEL).write_bytes(b"x" * 10), "bytes, the manifest says"),
        (lambda d: _flip_last_byte(d / fmt.CATALOG), "SHA-256 does not match"),
        (lambda d: _edit_manifest(d, format_version=99), "format version 99 is not supported"),
        (lambda d: _edit_manifest(d, catalog_dtype="bf16"), "unknown catalog_dtype"),
        (lambda d: _edit_manifest(d, num_items=151), "expected float32 \\[151, 17\\]"),
        (lambda d: _edit_manifest(d, model_version="7"), "'model_version' has the wrong type"),
    ],
)
def test_corrupted_bundles_are_detected_naming_the_file(
    bundle_dir: Path, tmp_path: Path, damage: object, message: str
) -> None:
    copy = _copy(bundle_dir, tmp_path)
    damage(copy)  # type: ignore[operator]
    with pytest.raises(BundleError, match=message):
        open_bundle(copy)


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def _edit_manifest(bundle: Path, **changes: object) -> None:
    raw = json.loads((bundle / fmt.MANIFEST).read_text())
    raw.update(changes)
    (bundle / fmt.MANIFEST).write_text(json.dumps(raw))


def test_evaluate_warns_that_a_refit_bundles_validation_is_not_held_out(
    bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "events.csv"
    write_csv(synthetic.generate(num_users=1200, num_items=150, seed=3), data)
    args = ["evaluate", str(bundle_dir), "--data", str(data), "--json"]
    assert main([*args, "--stage", "valid"]) == 0
    assert "validation metrics are not held out (use --stage test)" in capsys.readouterr().err
    assert main(args) == 0  # the test stage: no warning
    assert capsys.readouterr().err == ""


def test_heldout_round_trip(trained: Path, tmp_path: Path) -> None:
    held = model_dir.load(trained).heldout
    held.save(tmp_path / "h.npz")
    again = HeldOut.load(tmp_path / "h.npz")
    for stage in ("valid", "test"):
        a, b = held.stage(stage), again.stage(stage)
        np.testing.assert_array_equal(a.targets, b.targets)
        for x, y in zip(a.items, b.items, strict=True):
            np.testing.assert_array_equal(x, y)


def test_cli_train_convert_inspect(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = synthetic.generate(num_users=400, num_items=80, seed=5)
    csv = tmp_path / "events.csv"
    write_csv(data, csv)
    model = tmp_path / "model"
    args = ["train", "--data", str(csv), "--out", str(model), "--max-epochs", "2",
            "--hidden-dim", "16", "--embedding-dim", "8", "--user-dim", "8"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "training wall time" in out
    assert "best validation" in out
    # 400 windows < 256 * 32: the batch shrinks to 32 sequences; histories of ~20 events keep
    # the 50-event window and, at ~17 training positions a window over 80 items, far above 0.5%
    # of the catalog, are masked (schedule.py).
    assert "(batch size 32, windows of 50 events, history masked), validated every 1" in out
    assert (
        main(["convert", str(model), "--out", str(tmp_path / "b"), "--catalog-dtype", "int8"]) == 0
    )
    assert "parity vs Keras" in capsys.readouterr().out
    assert main(["inspect", str(tmp_path / "b")]) == 0
    assert "OK (every file's length and SHA-256 verified)" in capsys.readouterr().out
    assert main(["inspect", str(tmp_path / "b"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["catalog_dtype"] == "int8"


def test_cli_model_flags_reach_the_config(tmp_path: Path) -> None:
    data = synthetic.generate(num_users=200, num_items=40, seed=6)
    csv = tmp_path / "events.csv"
    write_csv(data, csv)
    gru, lru = tmp_path / "gru", tmp_path / "lru"
    common = ["--data", str(csv), "--max-epochs", "1", "--embedding-dim", "8", "--user-dim", "8"]
    assert main(["train", *common, "--out", str(gru), "--cell", "gru", "--no-tied",
                 "--hidden-dim", "12", "--weight-decay", "0.01",
                 "--cosine-temperature", "0.1"]) == 0  # fmt: skip
    assert main(["train", *common, "--out", str(lru), "--num-layers", "3", "--r-min", "0.5",
                 "--hidden-dim", "4", "--plateau-decay", "0.5", "--init-std", "0.05",
                 "--ema", "0.9", "--batching", "users"]) == 0  # fmt: skip
    g = model_dir.load(gru).model.config
    assert (g.cell, g.tied, g.num_layers, g.weight_decay, g.state_dim) == (
        "gru",
        False,
        1,
        0.01,
        12,
    )
    assert g.cosine_temperature == 0.1
    m = model_dir.load(lru).model.config
    assert m.cosine_temperature == 0.0  # the default: the raw inner product
    assert (m.cell, m.num_layers, m.r_min, m.plateau_decay) == ("lru", 3, 0.5, 0.5)
    assert (m.init_std, m.ema, m.batching) == (0.05, 0.9, "users")
    assert m.state_dim == 3 * 2 * 4


def test_cli_reports_bad_input_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert main(["train", "--data", str(empty), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err
    assert "Traceback" not in err
    assert main(["inspect", str(tmp_path)]) == 2
    assert "no manifest" in capsys.readouterr().err
    assert main(["convert", str(tmp_path), "--out", str(tmp_path / "b")]) == 2
    assert "not a trained-model directory" in capsys.readouterr().err


ABSL_LINE = re.compile(r"^[IWE]\d{4} |absl::InitializeLog|XNNPACK", re.M)
"""A TensorFlow C++ log line (absl's format), absl's banner or LiteRT's notice."""


def test_cli_train_and_convert_keep_third_party_logs_off_stderr(
    trained: Path, tmp_path: Path
) -> None:
    """Child processes, where TensorFlow loads: only pocketrec's own lines on stderr (train's
    progress); ``--verbose`` shows TensorFlow's and LiteRT's, so the test can see them."""
    data = tmp_path / "events.csv"
    write_csv(synthetic.generate(num_users=200, num_items=40, seed=6), data)
    cli = [sys.executable, "-m", "pocketrec"]
    train = [*cli, "train", "--data", str(data), "--out", str(tmp_path / "m"), "--max-epochs", "1",
             "--embedding-dim", "8", "--user-dim", "8", "--hidden-dim", "8"]  # fmt: skip
    done = subprocess.run(train, capture_output=True, text=True, check=True)
    assert done.stderr.startswith("epoch  1 ")
    assert not ABSL_LINE.search(done.stderr), done.stderr
    convert = [*cli, "convert", str(trained), "--out", str(tmp_path / "b")]
    done = subprocess.run(convert, capture_output=True, text=True, check=True)
    assert done.stderr == ""
    done = subprocess.run([*convert, "--force", "--verbose"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." in done.stderr
    assert re.search(r"^[IW]\d{4} ", done.stderr, re.M), done.stderr


def test_runtime_import_does_not_pull_tensorflow() -> None:
    code = (
        "import sys, pocketrec, pocketrec.runtime, pocketrec.runtime.replay, pocketrec.cli\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_sampled_softmax_option_trains() -> None:
    data = synthetic.generate(num_users=800, num_items=150, seed=4)
    split = leave_one_out(data)
    # The sampled softmax has no history mask: ~20-event histories over 150 items would get it.
    config = ModelConfig(
        num_items=data.num_items, **{**TINY, "max_epochs": 10, "history_mask_share": 1.0}
    )
    _model, report = train(split, config, loss="sampled", num_sampled=100, show_progress=False)
    losses = [row["loss"] for row in report.epochs]
    assert losses[-1] < losses[0]
    pop = popularity_baseline(split, stage="valid")
    assert report.best_valid["hr@10"] > pop["hr@10"]


def test_tied_embeddings_share_the_item_table() -> None:
    with pytest.raises(ValueError, match="need user_dim == embedding_dim"):
        ModelConfig(num_items=10, embedding_dim=8, user_dim=16, tied=True)
    model = InterestModel(ModelConfig(num_items=10, embedding_dim=8, user_dim=8, tied=True))
    items = np.asarray(model.item_emb.embeddings)
    np.testing.assert_array_equal(model.catalog()[:, :-1], items)
