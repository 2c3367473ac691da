"""The fault soak at length: many more jobs than the test's 1,000 through the same run (tests/ops/fault_soak.py),
on PostgreSQL, with worker processes SIGKILLed every few seconds and faults injected at random at the provider
and Telegram fakes; checks the same invariants and prints the figures.

Usage: python -m benchmarks.fault_soak [--postgres URL] [--jobs N] [--users N] [--workers N] [--seed N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import tempfile
from pathlib import Path

from tests.ops.fault_soak import SoakConfig, soak


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--postgres", default=os.environ.get("LIKENESS_TEST_POSTGRES_URL", ""))
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--chat-jobs", type=int, default=20)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--within-s", type=float, default=1800.0)
    args = parser.parse_args()
    if not args.postgres:
        parser.error("a PostgreSQL URL is needed: --postgres or LIKENESS_TEST_POSTGRES_URL")
    config = SoakConfig(
        jobs=args.jobs,
        chat_jobs=args.chat_jobs,
        users=args.users,
        workers=args.workers,
        seed=args.seed,
        within_s=args.within_s,
    )
    # SIGTERM ends the run as Ctrl-C does: its processes stopped, its schema dropped.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    with tempfile.TemporaryDirectory() as tmp:
        await soak(config, args.postgres, Path(tmp))
    print("all invariants hold")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
