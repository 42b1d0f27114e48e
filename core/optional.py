"""Importing an optional dependency with an error that says how to install it."""

from __future__ import annotations

import importlib
from types import ModuleType

from pocketrec.core.errors import MissingDependencyError


def import_optional(module: str, extra: str, purpose: str) -> ModuleType:
    """``importlib.import_module(module)``; :class:`MissingDependencyError` naming the pip extra
    (``pip install 'pocketrec[extra]'``) when its package is not installed."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        package = module.split(".")[0]
        raise MissingDependencyError(
            f"{purpose} needs {package}, which is not installed: pip install "
            f"'pocketrec[{extra}]' (or pip install {package})"
        ) from exc
