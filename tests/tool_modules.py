"""Import the scripts of ``tools/`` (not part of the installed package) as modules."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def load_tool(name: str) -> ModuleType:
    """``tools/<name>.py`` as a module; the folder goes on ``sys.path`` so the tools can import
    each other (``crash_workload``) as they do when run as scripts."""
    if str(TOOLS) not in sys.path:
        sys.path.append(str(TOOLS))
    return importlib.import_module(name)
