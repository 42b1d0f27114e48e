"""Importing an optional dependency with an error that says how to install it."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Sequence
from types import ModuleType

from pocketrec.core.errors import MissingDependencyError


def missing_dependency(package: str, extra: str, purpose: str) -> MissingDependencyError:
    """The error for ``purpose`` lacking ``package``: names the pip extra to install."""
    return MissingDependencyError(
        f"{purpose} needs {package}, which is not installed: pip install "
        f"'pocketrec[{extra}]' (or pip install {package})"
    )


def import_optional(module: str, extra: str, purpose: str) -> ModuleType:
    """``importlib.import_module(module)``; :class:`MissingDependencyError` naming the pip extra
    (``pip install 'pocketrec[extra]'``) when its package is not installed."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise missing_dependency(module.split(".")[0], extra, purpose) from exc


def require(modules: Sequence[str], extra: str, purpose: str) -> None:
    """Check that the top-level ``modules`` can be imported, without importing them (a
    ``find_spec`` each, milliseconds); :class:`MissingDependencyError` naming the first missing
    one and the pip extra otherwise."""
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:  # a finder that refuses the module outright
            found = False
        if not found:
            raise missing_dependency(module, extra, purpose)
