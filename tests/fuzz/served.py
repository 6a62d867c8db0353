"""The application served on 127.0.0.1 by its own event loop in a thread.

Schemathesis and hypothesis drive requests synchronously (``requests``), so the server cannot
share the caller's event loop: it gets one of its own, and :meth:`ServedApp.run` hands it
coroutines (seeding, counting rows) from the fuzzing thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import web

from referendum_service.settings import Settings
from server.app import make_app

__all__ = ["ServedApp"]

T = TypeVar("T")


class ServedApp:
    """``make_app(settings)`` on ``database_url``, listening on an ephemeral 127.0.0.1 port."""

    def __init__(self, settings: Settings, database_url: str) -> None:
        self._settings = settings
        self._database_url = database_url
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="served-app")
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 60.0) -> T:
        """Run ``coro`` on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    async def _start(self) -> str:
        app = make_app(self._settings, database_url=self._database_url)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> ServedApp:
        self._thread.start()
        try:
            self.base_url = self.run(self._start())
        except BaseException:
            self._stop_loop()
            raise
        return self

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._runner is not None:
                self.run(self._runner.cleanup())
        finally:
            self._stop_loop()
