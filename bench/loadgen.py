"""Load generation for the HTTP benchmarks: wrk (C, epoll) when installed, else aiohttp.

The benchmarks must measure the server, not the client: a Python client spends about as much
CPU per request as the server it drives, which on a 2-core machine halves what the server can
get. wrk (``apt-get install wrk``) needs a small fraction of that. Every run:

* sends **pre-generated requests**, written to a file before timing, one per line: POST bodies
  to one path (ingest: each ballot once) or GET paths (proofs: distinct ballot hashes). Each
  wrk thread reads the file in its Lua ``init`` and keeps a disjoint slice (line ``i`` goes to
  thread ``i mod threads``), so no request is sent twice unless ``cycle`` is asked for;
* counts every answer by status in the Lua ``response`` callback and writes them, with the
  latency percentiles and socket errors, as JSON from ``done``: non-2xx answers and socket
  errors are reported, never counted as throughput;
* runs for a fixed duration; a thread that runs out of requests (no ``cycle``) sends cheap
  ``GET /livez`` fillers, which are counted apart (``filler``) and mark the run as exhausted;
* measures the server's CPU (its processes, from psutil) and the client's (the wrk child's
  rusage) over the run, in cores.

The client can be pinned to CPUs with ``taskset`` (``cpus``). Without wrk (or with
``REFERENDUM_BENCH_CLIENT=aiohttp``) the same run is made by an aiohttp client on uvloop in a
child process; ``LoadResult.client`` says which one ran.

Paced (open-loop) runs are not done with wrk: stock wrk has no constant-rate mode and its Lua
cannot tell which request an answer belongs to, so latency could not be counted from each
request's scheduled start. Benchmarks keep their aiohttp open-loop pacer for those.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

__all__ = [
    "LoadResult",
    "children",
    "client_name",
    "cpu_seconds",
    "descendants",
    "run_load",
]

_LIVEZ_BODY = '{"status": "ok"}'

# Configuration comes from the environment (LOADGEN_*); one Lua state per wrk thread.
_SCRIPT = r"""
local mode = os.getenv("LOADGEN_MODE")
local file = os.getenv("LOADGEN_FILE")
local out = os.getenv("LOADGEN_OUT")
local path = os.getenv("LOADGEN_PATH")
local cycle = os.getenv("LOADGEN_CYCLE") == "1"
local nthreads = tonumber(os.getenv("LOADGEN_THREADS"))
local filler_body = os.getenv("LOADGEN_FILLER_BODY")

local threads = {}
local created = 0

function setup(thread)
   thread:set("tid", created)
   created = created + 1
   table.insert(threads, thread)
end

function init(args)
   reqs = {}
   local i = 0
   local headers = {["Content-Type"] = "application/json"}
   for line in io.lines(file) do
      if i % nthreads == tid and #line > 0 then
         if mode == "post" then
            reqs[#reqs + 1] = wrk.format("POST", path, headers, line)
         else
            reqs[#reqs + 1] = wrk.format("GET", line)
         end
      end
      i = i + 1
   end
   loaded = #reqs
   nextreq = 1
   sent = 0
   filler = 0
   statuses = {}
   filler_req = wrk.format("GET", "/livez")
end

function request()
   if nextreq > #reqs then
      if cycle and #reqs > 0 then
         nextreq = 1
      else
         filler = filler + 1
         return filler_req
      end
   end
   local r = reqs[nextreq]
   nextreq = nextreq + 1
   sent = sent + 1
   return r
end

function response(status, headers, body)
   if filler > 0 and status == 200 and body == filler_body then
      return
   end
   statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
   local counts = {}
   local total_filler = 0
   local total_sent = 0
   local total_loaded = 0
   for _, t in ipairs(threads) do
      for status, n in pairs(t:get("statuses")) do
         counts[status] = (counts[status] or 0) + n
      end
      total_filler = total_filler + t:get("filler")
      total_sent = total_sent + t:get("sent")
      total_loaded = total_loaded + t:get("loaded")
   end
   local parts = {}
   for status, n in pairs(counts) do
      parts[#parts + 1] = string.format('"%d": %d', status, n)
   end
   local e = summary.errors
   local f = assert(io.open(out, "w"))
   f:write(string.format(
      '{"duration_us": %d, "requests": %d, "statuses": {%s}, "filler": %d, "sent": %d,'
      .. ' "loaded": %d, "errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d},'
      .. ' "latency_us": {"p50": %d, "p90": %d, "p99": %d, "p999": %d, "max": %d, "mean": %f}}',
      summary.duration, summary.requests, table.concat(parts, ", "), total_filler, total_sent,
      total_loaded, e.connect, e.read, e.write, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9), latency.max, latency.mean))
   f:close()
end
"""


@dataclass
class LoadResult:
    """One timed run of a load client against the server."""

    client: str  # "wrk" or "aiohttp"
    seconds: float
    statuses: dict[int, int]
    latency_ms: dict[str, float]  # p50, p90, p99, p999, max, mean (every answer)
    socket_errors: dict[str, int] = field(default_factory=dict)
    filler: int = 0  # requests sent after the run's own ran out (not counted)
    server_cpu: float = 0.0  # cores, summed over the server's processes
    client_cpu: float = 0.0  # cores used by the load client

    def count(self, *statuses: int) -> int:
        """Answers with one of ``statuses``."""
        return sum(self.statuses.get(s, 0) for s in statuses)

    def rate(self, *statuses: int) -> float:
        """Answers with one of ``statuses`` per second."""
        return self.count(*statuses) / self.seconds

    def failures(self, *ok: int) -> dict[str, int]:
        """Every answer not in ``ok`` (by status) and every socket error (by kind)."""
        bad = {str(s): n for s, n in self.statuses.items() if s not in ok and n}
        bad.update({k: n for k, n in self.socket_errors.items() if n})
        return bad

    @property
    def exhausted(self) -> bool:
        """The client ran out of pre-generated requests before the run's end."""
        return self.filler > 0

    def as_json(self) -> dict[str, Any]:
        """The run as plain JSON-able values (for the benchmark's meta)."""
        return {
            "client": self.client,
            "seconds": round(self.seconds, 3),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "latency_ms": {k: round(v, 3) for k, v in self.latency_ms.items()},
            "socket_errors": self.socket_errors,
            "filler": self.filler,
            "server_cpu": round(self.server_cpu, 3),
            "client_cpu": round(self.client_cpu, 3),
        }


def client_name() -> str:
    """``wrk`` when the wrk binary is on PATH (and not overridden), else ``aiohttp``."""
    if os.environ.get("REFERENDUM_BENCH_CLIENT", "").lower() == "aiohttp":
        return "aiohttp"
    return "wrk" if shutil.which("wrk") else "aiohttp"


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds used so far by ``pids`` (those still alive)."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


def children(parent: int) -> list[int]:
    """The processes started directly by ``parent`` (none once it has gone)."""
    with contextlib.suppress(psutil.Error):
        return [child.pid for child in psutil.Process(parent).children()]
    return []


def descendants(root: int) -> list[int]:
    """``root`` and every process below it (server workers, their helper processes)."""
    with contextlib.suppress(psutil.Error):
        return [root, *(child.pid for child in psutil.Process(root).children(recursive=True))]
    return [root]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_load(
    base_url: str,
    items: Sequence[bytes | str],
    *,
    server_pids: Sequence[int],
    seconds: float,
    connections: int,
    method: str = "GET",
    path: str = "",
    threads: int = 1,
    cycle: bool = False,
    cpus: str | None = None,
    client: str | None = None,
) -> LoadResult:
    """Send ``items`` to ``base_url`` for ``seconds`` with ``connections`` connections.

    ``method="POST"``: each item is a request body (one line, no newline) POSTed as JSON to
    ``path``; ``"GET"``: each item is a path. Items are sent once each, in order per client
    thread, unless ``cycle``. ``cpus`` pins the client with ``taskset -c``. ``client`` forces
    ``"wrk"`` or ``"aiohttp"`` (default: :func:`client_name`).
    """
    chosen = client or client_name()
    lines = [i.decode() if isinstance(i, bytes) else i for i in items]
    if any("\n" in line for line in lines):
        raise ValueError("requests must be single lines")
    server_before = cpu_seconds(server_pids)
    client_before = _children_cpu()
    wall_before = time.perf_counter()
    if chosen == "wrk":
        result = _run_wrk(base_url, lines, method, path, seconds, connections, threads, cycle, cpus)
    else:
        result = _run_aiohttp(base_url, lines, method, path, seconds, connections, cycle, cpus)
    wall = time.perf_counter() - wall_before
    # the client's CPU covers its start (reading the requests) too: an upper bound
    result.client_cpu = (_children_cpu() - client_before) / wall
    result.server_cpu = (cpu_seconds(server_pids) - server_before) / wall
    return result


def _run_wrk(
    base_url: str,
    lines: list[str],
    method: str,
    path: str,
    seconds: float,
    connections: int,
    threads: int,
    cycle: bool,
    cpus: str | None,
) -> LoadResult:
    threads = max(1, min(threads, connections))
    with tempfile.TemporaryDirectory(prefix="loadgen-") as folder:
        work = Path(folder)
        (work / "requests.txt").write_text("\n".join(lines) + "\n")
        (work / "load.lua").write_text(_SCRIPT)
        out = work / "result.json"
        env = {
            **os.environ,
            "LOADGEN_MODE": "post" if method.upper() == "POST" else "get",
            "LOADGEN_FILE": str(work / "requests.txt"),
            "LOADGEN_OUT": str(out),
            "LOADGEN_PATH": path,
            "LOADGEN_CYCLE": "1" if cycle else "0",
            "LOADGEN_THREADS": str(threads),
            "LOADGEN_FILLER_BODY": _LIVEZ_BODY,
        }
        command = [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "30s",
            "-s",
            str(work / "load.lua"),
            base_url,
        ]
        if cpus:
            command = ["taskset", "-c", cpus, *command]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not out.exists():
            raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
        raw = json.loads(out.read_text())
    latency = {k: v / 1000 for k, v in raw["latency_us"].items()}
    return LoadResult(
        client="wrk",
        seconds=raw["duration_us"] / 1e6,
        statuses={int(k): int(v) for k, v in raw["statuses"].items()},
        latency_ms=latency,
        socket_errors={k: int(v) for k, v in raw["errors"].items()},
        filler=int(raw["filler"]),
    )


# --- the fallback: aiohttp in a child process (its CPU is then a child's, like wrk's) -----


def _run_aiohttp(
    base_url: str,
    lines: list[str],
    method: str,
    path: str,
    seconds: float,
    connections: int,
    cycle: bool,
    cpus: str | None,
) -> LoadResult:
    context = multiprocessing.get_context("spawn")
    with context.Pool(1, initializer=_pin, initargs=(cpus,)) as pool:
        raw = pool.apply(
            _aiohttp_client, (base_url, lines, method.upper(), path, seconds, connections, cycle)
        )
    return LoadResult(**raw)


def _pin(cpus: str | None) -> None:
    if cpus and hasattr(os, "sched_setaffinity"):
        wanted: set[int] = set()
        for part in cpus.split(","):
            low, _, high = part.partition("-")
            wanted.update(range(int(low), int(high or low) + 1))
        os.sched_setaffinity(0, wanted)


def _aiohttp_client(
    base_url: str,
    lines: list[str],
    method: str,
    path: str,
    seconds: float,
    connections: int,
    cycle: bool,
) -> dict[str, Any]:
    import asyncio

    import aiohttp
    import uvloop

    async def run() -> dict[str, Any]:
        statuses: dict[int, int] = {}
        errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0}
        latencies: list[float] = []
        filler = 0
        position = 0
        headers = {"Content-Type": "application/json"}
        connector = aiohttp.TCPConnector(limit=connections)
        async with aiohttp.ClientSession(base_url, connector=connector) as session:
            stop_at = time.perf_counter() + seconds

            async def worker() -> None:
                nonlocal position, filler
                while time.perf_counter() < stop_at:
                    if position >= len(lines) and cycle and lines:
                        position = 0
                    if position >= len(lines):
                        filler += 1
                        async with session.get("/livez") as resp:
                            await resp.read()
                        continue
                    line = lines[position]
                    position += 1
                    start = time.perf_counter()
                    try:
                        if method == "POST":
                            call = session.post(path, data=line.encode(), headers=headers)
                        else:
                            call = session.get(line)
                        async with call as resp:
                            await resp.read()
                            statuses[resp.status] = statuses.get(resp.status, 0) + 1
                    except aiohttp.ClientConnectionError:
                        errors["read"] += 1
                        continue
                    latencies.append((time.perf_counter() - start) * 1000)

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(connections)))
            elapsed = time.perf_counter() - started
        latencies.sort()

        def pct(q: float) -> float:
            if not latencies:
                return float("nan")
            return latencies[min(len(latencies) - 1, int(q * len(latencies)))]

        return {
            "client": "aiohttp",
            "seconds": elapsed,
            "statuses": statuses,
            "latency_ms": {
                "p50": pct(0.5),
                "p90": pct(0.9),
                "p99": pct(0.99),
                "p999": pct(0.999),
                "max": latencies[-1] if latencies else float("nan"),
                "mean": sum(latencies) / len(latencies) if latencies else float("nan"),
            },
            "socket_errors": errors,
            "filler": filler,
        }

    result: dict[str, Any] = uvloop.run(run())
    return result
