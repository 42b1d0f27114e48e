"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared datasets folder (``$POCKETREC_DATA`` or ``../shared/data`` from the project).

    Missing: skipped locally, a failure when ``CI=true``.
    """
    default = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    folder = Path(os.environ.get("POCKETREC_DATA", default))
    if not folder.is_dir():
        reason = f"shared datasets not found at {folder} (set POCKETREC_DATA)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return folder
