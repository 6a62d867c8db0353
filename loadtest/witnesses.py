"""The demo's stakeholder witnesses: three ``referendum node`` processes with a 2-of-3 policy.

Two parties and an observer group each run a node on its own database (a scratch database on
the run's PostgreSQL, dropped afterwards). While the referendum is a draft, the nodes start
trusting the log's verifier key and the operator sets the policy naming their cosigner keys;
the batcher's publisher then asks them to cosign every checkpoint. After close the demo waits
(bounded) for the final checkpoint to be witnessed, checks it with the core's policy check,
and reads each node's evidence.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
import nacl.signing

from loadtest.runner import ChildProcesses, free_port, referendum_argv, wait_ready
from referendum_core.checkpoint import verify_checkpoint
from referendum_core.witness import Witness, WitnessPolicy
from referendum_service.scratch import create_database, drop_database

__all__ = ["NODE_NAMES", "DemoWitnesses"]

NODE_NAMES = ("party-a.example/witness", "party-b.example/witness", "observers.example/witness")
WITNESSED_TIMEOUT_S = 30.0


class DemoWitnesses:
    """Three witness nodes for one demo run (an async context manager)."""

    def __init__(self, report_dir: Path, admin_dsn: str, threshold: int = 2) -> None:
        self.folder = report_dir / "nodes"
        self.admin_dsn = admin_dsn
        self.threshold = threshold
        self.dsns: list[str] = []
        self.urls: list[str] = []
        self.seeds = [os.urandom(32) for _ in NODE_NAMES]
        self.children = ChildProcesses(self.folder / "logs")
        self.policy: WitnessPolicy | None = None

    async def __aenter__(self) -> DemoWitnesses:
        for _ in NODE_NAMES:
            self.dsns.append(await create_database(self.admin_dsn, prefix="referendum_node"))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.children.stop_all()
        for dsn in self.dsns:
            await drop_database(self.admin_dsn, dsn)

    async def register(self, session: aiohttp.ClientSession, rid: str) -> None:
        """Start the nodes on the log's key and set the policy of the draft ``rid``."""
        async with session.get("/v1/keys/log") as response:
            log_vkey = (await response.json())["verifier_key"]
        self.folder.mkdir(parents=True, exist_ok=True)
        processes = []
        witnesses = []
        for name, seed, dsn in zip(NODE_NAMES, self.seeds, self.dsns, strict=True):
            port = free_port()
            key_file = self.folder / f"{name.split('.')[0]}.key"
            key_file.write_text(seed.hex())
            env = {
                **os.environ,
                "DATABASE_URL": dsn,
                "REFERENDUM_PORT": str(port),
                "REFERENDUM_NODE_NAME": name,
                "REFERENDUM_NODE_KEY_FILE": str(key_file),
                "REFERENDUM_NODE_LOG_KEY": log_vkey,
                "REFERENDUM_DATA_DIR": str(self.folder / "data"),
                "REFERENDUM_LOG_LEVEL": "warning",
            }
            processes.append(self.children.start(name.split(".")[0], referendum_argv("node"), env))
            url = f"http://127.0.0.1:{port}"
            self.urls.append(url)
            public = bytes(nacl.signing.SigningKey(seed).verify_key)
            witnesses.append(Witness(name, public, url))
        for url, process in zip(self.urls, processes, strict=True):
            await wait_ready(url, [process])
        self.policy = WitnessPolicy(self.threshold, tuple(witnesses))
        async with session.put(
            f"/v1/referendums/{rid}/witness-policy", json=self.policy.to_json()
        ) as response:
            if response.status != 200:
                raise RuntimeError(f"witness policy refused: {await response.text()}")

    async def facts(self, base_url: str, rid: str) -> dict[str, Any]:
        """Wait for the final checkpoint to be witnessed; who cosigned it, each node's evidence."""
        assert self.policy is not None
        deadline = time.monotonic() + WITNESSED_TIMEOUT_S
        async with aiohttp.ClientSession(base_url) as session:
            async with session.get("/v1/keys/log") as response:
                log_vkey = (await response.json())["verifier_key"]
            async with session.get(f"/v1/referendums/{rid}/log/checkpoint") as response:
                final = (await response.json())["tree_size"]
            while True:
                async with session.get(
                    f"/v1/referendums/{rid}/log/checkpoint", params={"witnessed": "true"}
                ) as response:
                    witnessed = await response.json()
                if witnessed["tree_size"] >= final or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            async with session.get(f"/v1/referendums/{rid}/log/checkpoint") as response:
                latest = await response.json()
        result: dict[str, Any] = {
            "threshold": self.threshold,
            "witnesses": len(NODE_NAMES),
            "final_size": final,
            "witnessed_size": witnessed["tree_size"],
            "cosigners": [],
        }
        if witnessed["note"] is not None:
            verify_checkpoint(witnessed["note"], log_vkey)
            result["cosigners"] = self.policy.check(witnessed["note"])
        # the final checkpoint may have gathered the third cosignature meanwhile
        result["final_cosigners"] = latest.get("cosigners", [])
        evidence = {}
        async with aiohttp.ClientSession() as session:
            for name, url in zip(NODE_NAMES, self.urls, strict=True):
                async with session.get(f"{url}/evidence") as response:
                    evidence[name] = len((await response.json())["evidence"])
        result["evidence"] = evidence
        return result
