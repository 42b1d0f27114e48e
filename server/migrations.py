"""Versioned schema migrations of the server database, the same mechanism for both backends.

A schema is an ordered tuple of :class:`Step`; ``steps[v]`` upgrades version ``v`` to ``v + 1``
(``steps[0]`` creates the first schema in an empty database) and the schema version is their
number. :func:`migrate` runs each missing step in its own transaction together with the version
bump, under the backend's migration lock, so a crash mid-migration leaves the last complete
version and several processes starting at once migrate exactly once. A database whose version
is higher than the steps this build knows is refused with ``SchemaTooNewError`` before anything
is written.

To change a schema: append a step (never edit a released one) and test the upgrade from the
previous version (``tests/test_server_migrations.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from pocketrec.core.errors import SchemaTooNewError


@dataclass(frozen=True)
class Step:
    """One schema upgrade: ``statements`` run in order in one transaction."""

    description: str
    statements: tuple[str, ...]


class MigrationTarget(Protocol):
    """A backend's side of :func:`migrate`."""

    where: str
    """Names the database in messages (a path, or a URI without its password)."""

    def current_version(self) -> int:
        """The schema version, read without writing anything (0: an empty database)."""
        ...

    def step_transaction(self) -> AbstractContextManager[int]:
        """A write transaction holding the migration lock (committed on a normal exit, rolled
        back on an exception); yields the schema version read inside it."""
        ...

    def execute(self, statement: str) -> None:
        """Run one statement in the open step transaction."""
        ...

    def set_version(self, version: int, description: str) -> None:
        """Record ``version`` in the open step transaction."""
        ...


def check_supported(where: str, found: int, supported: int) -> None:
    """Raise ``SchemaTooNewError`` when ``found`` is beyond ``supported``."""
    if found > supported:
        raise SchemaTooNewError(where, found, supported)


def migrate(target: MigrationTarget, steps: Sequence[Step]) -> tuple[int, int]:
    """Bring ``target`` up to ``len(steps)``; returns ``(found, now)`` versions."""
    supported = len(steps)
    found = target.current_version()
    check_supported(target.where, found, supported)
    for version in range(found, supported):
        with target.step_transaction() as current:
            check_supported(target.where, current, supported)
            if current > version:
                continue  # another process ran this step meanwhile
            for statement in steps[version].statements:
                target.execute(statement)
            target.set_version(version + 1, steps[version].description)
    return found, supported
