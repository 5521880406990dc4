"""The bench's scripts (bench/*.py) as modules: they are not a package, so tests load them by path."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"


def load(name: str, module: str | None = None) -> ModuleType:
    """bench/<name>.py, registered in sys.modules as `module` (default: its own name)."""
    module = module or name
    spec = importlib.util.spec_from_file_location(module, BENCH_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[module] = loaded
    spec.loader.exec_module(loaded)
    return loaded
