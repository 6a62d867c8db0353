"""The ``>>>`` examples of the core and the shared service layer run, and hold."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import referendum_core
import referendum_service

# The Merkle package has its own runner in tests/core/test_merkle.py.
_SKIP_PREFIXES = ("referendum_core.merkle",)


def _modules() -> list[str]:
    names = []
    for package in (referendum_core, referendum_service):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if not info.name.startswith(_SKIP_PREFIXES) and ".migrations" not in info.name:
                names.append(info.name)
    return sorted(names)


def test_every_core_module_is_found() -> None:
    """The walk reaches the core's rule modules (a broken walk would test nothing)."""
    assert {"referendum_core.ballot", "referendum_core.tally", "referendum_core.ids"} <= set(
        _modules()
    )


@pytest.mark.parametrize("name", _modules())
def test_examples_hold(name: str) -> None:
    """Every example in the module's docstrings gives the output it shows."""
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
