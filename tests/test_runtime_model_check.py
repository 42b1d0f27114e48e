"""``runtime/model_check.py`` reads untrusted bytes in this process: on any input it returns or
raises ``ModelCheckError``, never another exception; it accepts every model the converter writes
and reports the declared shapes the interpreter uses."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from broken_bundles import corrupt_model

from pocketrec.runtime.interpreter import make_interpreter
from pocketrec.runtime.model_check import ModelCheckError, check_model

FIXTURE_MODEL = Path(__file__).resolve().parent / "fixtures" / "bundle_v1" / "step.tflite"


@pytest.fixture(params=["fixture", "f32", "int8", "v2"])
def model(request: pytest.FixtureRequest, runtime_bundles: Any) -> bytes:
    if request.param == "fixture":
        return FIXTURE_MODEL.read_bytes()
    return (Path(getattr(runtime_bundles, request.param)) / "step.tflite").read_bytes()


def _checked(data: bytes) -> str:
    """``"ok"`` or ``"refused"``; any other exception fails the test."""
    try:
        check_model(data)
    except ModelCheckError:
        return "refused"
    return "ok"


def test_the_converters_models_pass_with_the_shapes_the_interpreter_reads(model: bytes) -> None:
    declared = check_model(model)
    interpreter = make_interpreter(model, default_delegates=False)
    details = interpreter.get_tensor_details()
    assert len(declared) == len({d["index"] for d in details if d["index"] < len(declared)})
    for d in details:
        if d["index"] < len(declared):
            assert declared[d["index"]] == tuple(np.asarray(d["shape"]).tolist())


@pytest.mark.slow
def test_corrupted_models_raise_only_model_check_error(model: bytes) -> None:
    outcomes = [_checked(corrupt_model(model, seed).content) for seed in range(400)]
    assert outcomes.count("refused") > 100  # most corruptions are caught here already


def test_random_bytes_and_edits_raise_only_model_check_error() -> None:
    rng = random.Random(7)
    model = FIXTURE_MODEL.read_bytes()
    for _ in range(300):
        assert _checked(rng.randbytes(rng.randrange(64))) == "refused"
        assert _checked(b"\x10\x00\x00\x00TFL3" + rng.randbytes(rng.randrange(256))) == "refused"
        edited = bytearray(model)
        for _ in range(rng.randint(1, 32)):
            edited[rng.randrange(len(edited))] = rng.randrange(256)
        _checked(bytes(edited[: rng.randrange(len(edited) + 1)]))


def test_the_messages_say_what_is_wrong() -> None:
    model = FIXTURE_MODEL.read_bytes()
    with pytest.raises(ModelCheckError, match="no TFL3 identifier"):
        check_model(b"not a model at all")
    with pytest.raises(ModelCheckError, match="outside the 100-byte model"):
        check_model(model[:100])
