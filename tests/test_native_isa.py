"""The C kernels' code-path choice: measured on first use, overridable by POCKETREC_TOPK_ISA."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest
from native_helpers import assert_float_result_matches, reference_topk

from pocketrec.core.errors import BackendUnavailableError
from pocketrec.native import backends, isa_choice, quantize_int8, screen_int8, topk

if "c" not in backends():
    pytest.skip("C extension not built", allow_module_level=True)

from pocketrec.native import c_backend

ISAS = c_backend.available_isas()


@pytest.fixture(autouse=True)
def fresh_choice(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test chooses anew, and leaves no choice behind for the other tests."""
    monkeypatch.delenv(isa_choice.ENV_VAR, raising=False)
    isa_choice.forget()
    yield
    isa_choice.forget()


def test_auto_measures_every_usable_path_and_picks_the_fastest() -> None:
    isa = c_backend.chosen_isa("f32")
    choice = isa_choice.choices()["f32"]
    assert isa == choice.isa
    if len(ISAS) == 1:
        assert choice.source == "only path"
        return
    assert choice.source == "measured"
    assert set(choice.min_us) == set(ISAS)
    assert all(t > 0 for t in choice.min_us.values())
    assert choice.min_us[isa] == min(choice.min_us.values())
    assert c_backend.chosen_isa("f32") == isa  # cached: no second measurement
    assert isa_choice.choices()["f32"] is choice


@pytest.mark.parametrize("isa", ISAS)
def test_the_environment_variable_forces_the_path(
    isa: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(isa_choice.ENV_VAR, isa.upper())
    assert c_backend.chosen_isa("f32") == isa
    assert c_backend.chosen_isa("int8") == isa
    assert isa_choice.choices()["int8"].source == isa_choice.ENV_VAR
    forced = f"{isa} (POCKETREC_TOPK_ISA)"
    assert c_backend.isa_report() == {
        "f32": forced, "f32_batch": forced, "int8": forced, "screened": forced
    }  # fmt: skip
    items = np.random.default_rng(0).standard_normal((3000, 40)).astype(np.float32)
    query = items[7] + np.float32(0.5)
    got = topk(items, query, 10, backend="c")
    assert_float_result_matches(items, query, None, got, reference_topk(items, query, 10))
    codes = quantize_int8(items)
    for a, b in zip(
        topk(codes, query, 10, backend="c"), reference_topk(codes, query, 10), strict=True
    ):
        np.testing.assert_array_equal(a, b)


def test_batches_have_their_own_measured_choice() -> None:
    c_backend.chosen_isa("f32_batch")
    choice = isa_choice.choices()["f32_batch"]
    assert "f32" not in isa_choice.choices()  # the single-query choice is made separately
    if len(ISAS) > 1:
        assert set(choice.min_us) == set(ISAS)
        assert choice.min_us[choice.isa] == min(choice.min_us.values())
    items = np.random.default_rng(3).standard_normal((700, 64)).astype(np.float32)
    queries = items[:5] * np.float32(2.0)
    got = topk(items, queries, 4, backend="c")
    assert_float_result_matches(items, queries, None, got, reference_topk(items, queries, 4))


def test_the_screened_kernel_has_its_own_measured_choice() -> None:
    c_backend.chosen_isa("screened")
    choice = isa_choice.choices()["screened"]
    assert set(isa_choice.choices()) == {"screened"}
    if len(ISAS) > 1:
        assert set(choice.min_us) == set(ISAS)
        assert choice.min_us[choice.isa] == min(choice.min_us.values())
    items = np.random.default_rng(4).standard_normal((900, 24)).astype(np.float32)
    queries = items[:33] * np.float32(-1.5)
    got = topk(screen_int8(items), queries, 5, backend="c")
    assert_float_result_matches(items, queries, None, got, reference_topk(items, queries, 5))


def test_auto_in_the_environment_variable_measures(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(isa_choice.ENV_VAR, "auto")
    assert c_backend.chosen_isa("f32") in ISAS
    assert isa_choice.choices()["f32"].source in ("measured", "only path")


@pytest.mark.parametrize("value", ["avx1024", "sse2", "avx512_vnni", "1"])
def test_an_unknown_value_is_a_typed_error_naming_the_variable(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(isa_choice.ENV_VAR, value)
    message = f"POCKETREC_TOPK_ISA='{value}' is not a top-k code path"
    with pytest.raises(BackendUnavailableError, match=message):
        topk(np.ones((5, 3), np.float32), np.ones(3, np.float32), 2, backend="c")
    assert "f32" not in isa_choice.choices()  # nothing cached: fixing the variable is enough


def test_a_path_this_cpu_cannot_run_is_a_typed_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(isa_choice.ENV_VAR, "avx512")
    with pytest.raises(BackendUnavailableError, match="avx512 cannot run on this CPU"):
        isa_choice.forced_isa(["portable", "avx2"])
    assert isa_choice.forced_isa(["portable", "avx2", "avx512"]) == "avx512"


def test_the_cli_reports_the_path_in_use() -> None:
    env = {"POCKETREC_TOPK_ISA": "portable", "PATH": ""}
    out = subprocess.run(
        [sys.executable, "-m", "pocketrec", "backends"],
        capture_output=True, text=True, check=True, env=env,
    ).stdout  # fmt: skip
    assert "C code path used: f32 portable (POCKETREC_TOPK_ISA), f32_batch portable" in out


def test_calibration_is_small() -> None:
    """The measurement's scratch data is small (a few MB at most), whatever the machine."""
    items, queries = isa_choice.calibration_data()
    assert items.nbytes <= 4 * 2**20
    assert items.shape == (isa_choice.CALIBRATION_ROWS, isa_choice.CALIBRATION_DIM)
    assert queries.shape == (isa_choice.CALIBRATION_QUERIES, isa_choice.CALIBRATION_DIM)
    assert items.dtype == queries.dtype == np.float32
    assert float(items.min()) >= -0.5
    assert float(items.max()) < 0.5
