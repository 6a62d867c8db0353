"""The process-tree and CPU figures the benchmarks divide by (bench.loadgen, via psutil)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from bench.loadgen import children, cpu_seconds, descendants

# The child starts a grandchild, says both pids, and both wait for stdin to close.
_TREE = (
    "import subprocess, sys\n"
    "g = subprocess.Popen([sys.executable, '-c', 'import sys; sys.stdin.read()'],"
    " stdin=subprocess.PIPE)\n"
    "print(g.pid, flush=True)\n"
    "sys.stdin.read()\n"
    "g.stdin.close(); g.wait()\n"
)


@pytest.fixture
def tree() -> Iterator[tuple[int, int]]:
    """A child process and its own child: (child pid, grandchild pid)."""
    child = subprocess.Popen(
        [sys.executable, "-c", _TREE], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert child.stdout is not None and child.stdin is not None
    grandchild = int(child.stdout.readline())
    try:
        yield child.pid, grandchild
    finally:
        child.stdin.close()
        child.wait(timeout=30)


def test_children_are_direct_only(tree: tuple[int, int]) -> None:
    """children() names the child of this process, not its grandchild."""
    child, grandchild = tree
    assert child in children(os.getpid())
    assert grandchild not in children(os.getpid())
    assert children(child) == [grandchild]


def test_descendants_start_at_the_root_and_go_down(tree: tuple[int, int]) -> None:
    """descendants() is the root first, then every process below it."""
    child, grandchild = tree
    assert descendants(child) == [child, grandchild]
    found = descendants(os.getpid())
    assert found[0] == os.getpid()
    assert {child, grandchild} <= set(found)


def test_cpu_seconds_counts_the_living_and_skips_the_gone() -> None:
    """CPU burnt by this process shows up; a pid that has exited counts zero."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    before = cpu_seconds([os.getpid()])
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:
        pass
    assert cpu_seconds([os.getpid()]) - before >= 0.15
    assert cpu_seconds([gone.pid]) == 0.0
    assert children(gone.pid) == []
    assert descendants(gone.pid) == [gone.pid]
