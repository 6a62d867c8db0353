"""The error tree drawn in ``referendum_core.errors`` lists every error the core defines."""

from __future__ import annotations

import importlib
import pkgutil

import referendum_core
from referendum_core import errors


def _subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    return found.union(*(_subclasses(c) for c in found))


def test_drawn_tree_names_every_core_error() -> None:
    """Every CoreError subclass of every core module appears in the module's drawn tree."""
    for info in pkgutil.walk_packages(referendum_core.__path__, "referendum_core."):
        importlib.import_module(info.name)
    core = {c for c in _subclasses(errors.CoreError) if c.__module__.startswith("referendum_core")}
    assert len(core) >= 17
    doc = errors.__doc__ or ""
    missing = sorted(
        c.__qualname__ for c in core if f" {c.__qualname__} " not in doc.replace(".", " ")
    )
    assert missing == []
