"""The chaos run's own PostgreSQL cluster: initdb in a throwaway folder, started, stopped, killed.

The run must be able to crash its database (``pg_ctl stop -m immediate``, SIGKILL of the
postmaster) and to fill the disk under its WAL, so it never uses a shared server: it makes a
cluster with the machine's binaries (``/usr/lib/postgresql/*/bin``) or those the ``pgserver``
package ships, on a free port of 127.0.0.1. Run as root, the cluster belongs to the
``postgres`` (or ``pgserver``) system user, as PostgreSQL refuses to run as root.

A SIGKILLed postmaster leaves its backends running: each exits once it notices, and a new
postmaster refuses to start while one of them still holds the old shared memory ("pre-existing
shared memory block is still in use"). :meth:`PrivateCluster.start` therefore retries for a
bounded time, and :meth:`PrivateCluster.kill_postmaster` reports the orphans it left.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["ClusterError", "PrivateCluster", "children_of", "postgres_binaries"]

START_TIMEOUT_S = 60.0


class ClusterError(RuntimeError):
    """A PostgreSQL tool failed (its stderr is the message)."""


def postgres_binaries() -> Path | None:
    """The folder holding ``pg_ctl`` and ``initdb``: the newest system install, else pgserver's."""
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "pg_ctl").exists():
            return candidate
    try:
        import pgserver._commands as commands
    except ImportError:
        return None
    return Path(commands.POSTGRES_BIN_PATH)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateCluster:
    """A throwaway cluster in ``folder`` (made when ``None``), on its own port."""

    def __init__(
        self,
        folder: Path | None = None,
        *,
        max_connections: int = 100,
        wal_disk_mb: int | None = None,
    ) -> None:
        binaries = postgres_binaries()
        if binaries is None:
            raise ClusterError("no PostgreSQL binaries (pg_ctl, initdb) found")
        self.bin = binaries
        self.folder = Path(folder or tempfile.mkdtemp(prefix="referendum-chaos-pg-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o755)
        self.data = self.folder / "data"
        self.port = _free_port()
        self.max_connections = max_connections
        self.wal_disk_mb = wal_disk_mb
        self.wal_disk: Path | None = None
        """A size-limited file system of its own holding ``pg_wal`` (see :meth:`init`)."""
        self.user: str | None = None
        if os.geteuid() == 0:
            for name in ("postgres", "pgserver"):
                with contextlib.suppress(KeyError):
                    entry = pwd.getpwnam(name)
                    self.user = name
                    os.chown(self.folder, entry.pw_uid, entry.pw_gid)
                    break
            else:
                raise ClusterError("running as root and no 'postgres' system user")

    @property
    def dsn(self) -> str:
        """The admin DSN (database ``postgres``) on 127.0.0.1."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 90.0) -> subprocess.CompletedProcess[bytes]:
        command = [str(self.bin / args[0]), *args[1:]]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        return subprocess.run(command, capture_output=True, timeout=timeout, check=False)

    def _check(self, *args: str) -> None:
        done = self._run(*args)
        if done.returncode != 0:
            raise ClusterError(f"{args[0]} failed: {done.stderr.decode(errors='replace')}")

    def init(self) -> None:
        """``initdb`` (trust authentication, UTF-8).

        With ``wal_disk_mb``, and only as root where a tmpfs can be mounted, ``pg_wal`` lives
        on a tmpfs of that size mounted in this cluster's own folder (1 MB WAL segments), so
        the run can fill the WAL's disk without touching any other file system. When the
        mount is refused, ``wal_disk`` stays ``None`` and the cluster is a plain one.
        """
        args = ["initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]
        if self.wal_disk_mb and os.geteuid() == 0:
            disk = self.folder / "wal-disk"
            disk.mkdir(exist_ok=True)
            mounted = subprocess.run(
                [
                    "mount",
                    "-t",
                    "tmpfs",
                    "-o",
                    f"size={self.wal_disk_mb}m,mode=0755",
                    "tmpfs",
                    str(disk),
                ],
                capture_output=True,
                timeout=30,
                check=False,
            )
            if mounted.returncode == 0:
                self.wal_disk = disk
                (disk / "wal").mkdir()
                if self.user is not None:
                    entry = pwd.getpwnam(self.user)
                    os.chown(disk / "wal", entry.pw_uid, entry.pw_gid)
                args += ["--waldir", str(disk / "wal"), "--wal-segsize", "1"]
        self._check(*args)

    @property
    def wal_options(self) -> str:
        """Settings that keep the WAL well inside its disk in normal running."""
        if self.wal_disk is None or not self.wal_disk_mb:
            return ""
        return f" -c min_wal_size=4MB -c max_wal_size={max(8, self.wal_disk_mb // 3)}MB"

    def start(self, timeout_s: float = START_TIMEOUT_S) -> float:
        """Start the postmaster and wait until it accepts connections; the seconds it took.

        Retries while a start is refused (orphaned backends of a killed postmaster still
        holding the old shared memory), up to ``timeout_s``.
        """
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
            f"-c shared_buffers=32MB -c max_connections={self.max_connections} "
            "-c fsync=on -c synchronous_commit=on" + self.wal_options
        )
        started = time.monotonic()
        deadline = started + timeout_s
        while True:
            done = self._run(
                "pg_ctl",
                "-D",
                str(self.data),
                "-o",
                options,
                "-l",
                str(self.folder / "pg.log"),
                "-w",
                "-t",
                str(int(max(5.0, timeout_s))),
                "start",
            )
            if done.returncode == 0:
                return time.monotonic() - started
            if time.monotonic() > deadline:
                raise ClusterError(f"pg_ctl start failed: {done.stderr.decode(errors='replace')}")
            time.sleep(0.2)

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m mode`` (``immediate`` is a crash: recovery at the next start)."""
        self._check("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def ready(self) -> bool:
        """``pg_isready``: the server accepts connections now."""
        done = self._run("pg_isready", "-h", "127.0.0.1", "-p", str(self.port), "-t", "2")
        return done.returncode == 0

    def ensure_running(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Wait until the server accepts connections; start it if its postmaster is gone."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.ready():
                return
            if self.postmaster_pid() is None:
                self.start(max(5.0, deadline - time.monotonic()))
                return
            time.sleep(0.1)
        raise ClusterError(f"PostgreSQL not accepting connections within {timeout_s:.0f} s")

    def fill_wal_disk(self) -> int:
        """Fill the WAL's disk with a filler file until it is full; the bytes written."""
        if self.wal_disk is None:
            raise ClusterError("this cluster has no WAL disk of its own")
        written = 0
        block = b"\0" * (1 << 20)
        with (self.wal_disk / "filler").open("ab", buffering=0) as handle:
            try:
                while written < (self.wal_disk_mb or 0) * (1 << 20) * 2:
                    written += handle.write(block)
            except OSError:  # ENOSPC: the disk is full, as wanted
                pass
        return written

    def free_wal_disk(self) -> None:
        """Remove the filler file."""
        if self.wal_disk is not None:
            (self.wal_disk / "filler").unlink(missing_ok=True)

    def postmaster_pid(self) -> int | None:
        """The running postmaster's pid (first line of ``postmaster.pid``), else ``None``."""
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((self.data / "postmaster.pid").read_text().splitlines()[0])
            if _alive(pid):
                return pid
        return None

    def kill_postmaster(self) -> list[int]:
        """SIGKILL the postmaster alone; the pids of the backends it left running."""
        pid = self.postmaster_pid()
        if pid is None:
            raise ClusterError("no postmaster to kill")
        children = children_of(pid)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.01)
        return [p for p in children if _alive(p)]

    def remove(self) -> None:
        """Stop (immediately) whatever still runs and delete the folder."""
        pid = self.postmaster_pid()
        if pid is not None:
            with contextlib.suppress(ClusterError, subprocess.SubprocessError):
                self.stop("immediate")
        if self.wal_disk is not None:
            done = subprocess.run(["umount", str(self.wal_disk)], capture_output=True, check=False)
            if done.returncode != 0:  # still busy: detach it now, freed when the last user goes
                subprocess.run(
                    ["umount", "-l", str(self.wal_disk)], capture_output=True, check=False
                )
            self.wal_disk = None
        shutil.rmtree(self.folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def children_of(parent: int) -> list[int]:
    """Pids of the live processes whose parent is ``parent`` (read from ``/proc``)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            # the command may hold spaces and parentheses: the fields follow the last ')'
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == parent and fields[0] != "Z":
                pids.append(int(entry.name))
    return pids
