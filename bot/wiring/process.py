"""What both long-running processes share: stopping on SIGINT/SIGTERM, and the health and metrics server."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable

from bot.errors import OperatorError
from bot.health import HealthServer, start_health_server
from bot.wiring.engine import EngineParts, worker_ttl_s


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM, so the process can finish its work and close cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    return stop


async def start_health(parts: EngineParts, *, ready: Callable[[], bool]) -> HealthServer | None:
    """The /healthz, /readyz and /metrics server on LIKENESS_METRICS__ADDRESS (None when that is empty)."""
    address = parts.settings.metrics.address
    try:
        return await start_health_server(
            address, db=parts.db, metrics=parts.metrics, ready=ready, worker_ttl_s=worker_ttl_s(parts.settings)
        )
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise OperatorError(f"LIKENESS_METRICS__ADDRESS: cannot listen on {address}: {reason}") from exc
