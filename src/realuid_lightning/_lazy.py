"""Lazy package exports (PEP 562), so that ``realuid --help`` does not import diffusers or the feature networks.

A package lists its public names once, as ``from M import name`` lines under ``if TYPE_CHECKING:`` (what type
checkers and IDEs read), and hands its ``__getattr__`` and ``__dir__`` to :func:`lazy_exports`: module M is imported
on the first access of one of its names (``realuid_lightning.EMA``, a config's ``class_path``), and only then.
"""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path
from typing import Any, Callable


def lazy_exports(package: str, init_file: str) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` of ``package``: name → the module M of its ``from M import name`` line in the
    ``if TYPE_CHECKING:`` block of ``init_file`` (the package's ``__init__.py``)."""
    tree = ast.parse(Path(init_file).read_text(encoding="utf-8"))
    block = next(node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
    origin = {
        alias.name: node.module for node in block.body if isinstance(node, ast.ImportFrom) for alias in node.names
    }

    def __getattr__(name: str) -> Any:
        if name not in origin:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(origin[name]), name)
        setattr(sys.modules[package], name, value)  # later look-ups find it without __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *origin})

    return __getattr__, __dir__
