"""Telegram under load: 200 users send a photo at once through the fake Bot API; an instant backend renders.

Reports the time from each update to the bot's first reply (p50/p99) and results delivered per second.
Usage: python -m benchmarks.telegram [--users N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp

from benchmarks.instant import InstantBackend
from bot.settings import Settings
from bot.wiring.engine import EngineParts, worker_ttl_s
from bot.wiring.service import serve
from bot.wiring.store import open_blobs, open_database
from engine.dispatch import Dispatcher
from engine.events import ProgressHub
from engine.fleet import FleetView
from engine.metrics import Metrics
from engine.routing import Router
from storage import notify
from tests.bot.telegram.stack import face_photo
from tests.fakes.telegram import FakeTelegram


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=200)
    args = parser.parse_args()
    print("| messages/s allowed | update → first reply, p50 / p99 | results delivered |")
    print("|---|---|---|")
    for rate in (30.0, 0.0):
        p50, p99, delivered, elapsed = await measure(args.users, rate)
        limit = f"{rate:.0f} (Telegram's default)" if rate else "no overall limit"
        print(
            f"| {limit} | {p50:.0f} ms / {p99:.0f} ms "
            f"| {delivered / elapsed:.1f} jobs/s ({delivered} in {elapsed:.1f} s) |"
        )


async def measure(users: int, rate: float) -> tuple[float, float, int, float]:
    with tempfile.TemporaryDirectory() as tmp:
        async with FakeTelegram() as telegram:
            settings = Settings(
                _env_file=None,  # type: ignore[call-arg]
                data_dir=Path(tmp),
                metrics={"address": ""},  # type: ignore[arg-type]
                telegram={
                    "token": telegram.token,
                    "base_url": telegram.base_url,
                    "base_file_url": telegram.base_file_url,
                },  # type: ignore[arg-type]
                dispatch={"poll_s": 0.05},  # type: ignore[arg-type]
                credits={"new_user": 100},  # type: ignore[arg-type]
                # The service's own cost is measured: no face checks or privacy notice on a plain test photo.
                judge={"enabled": False},  # type: ignore[arg-type]
                privacy={"consent": False},  # type: ignore[arg-type]
            )
            db = await open_database(settings)
            backend = InstantBackend()
            router = Router(
                {backend.name: backend}, [backend.name], Dispatcher.breakers_for([backend.name], settings.dispatch)
            )
            hub = ProgressHub()
            blobs = open_blobs(settings)
            metrics = Metrics()
            dispatcher = Dispatcher(
                db, blobs, router, settings=settings.dispatch, queue=settings.queue, hub=hub,
                worker_id=f"{socket.gethostname()}:{os.getpid()}", metrics=metrics,
            )  # fmt: skip
            async with aiohttp.ClientSession() as http:
                notifier = notify.open_notifier(db)
                fleet = FleetView(db, ttl_s=worker_ttl_s(settings))
                runtime = EngineParts(settings, db, blobs, http, hub, router, dispatcher, metrics, notifier, fleet)
                stop = asyncio.Event()
                serving = asyncio.create_task(serve(runtime, stop))
                await telegram.wait_for(lambda: telegram.waiting_polls > 0, timeout=30)
                people = [telegram.user(f"u{i}") for i in range(users)]
                chats = [telegram.private_chat(person) for person in people]
                photo = face_photo()
                sent: dict[int, float] = {}
                begin = time.perf_counter()
                for person, chat in zip(people, chats, strict=True):
                    sent[chat.id] = time.perf_counter()
                    telegram.send_photo(person, chat, photo, caption="a portrait in oils")
                first_reply: dict[int, float] = {}
                delivered: dict[int, float] = {}

                def progress() -> bool:
                    now = time.perf_counter()
                    for chat in chats:
                        messages = telegram.messages(chat)
                        if messages and chat.id not in first_reply:
                            first_reply[chat.id] = now
                        if chat.id not in delivered and any(m.photo is not None for m in messages):
                            delivered[chat.id] = now
                    return len(delivered) == len(chats)

                await telegram.wait_for(progress, timeout=300)
                elapsed = time.perf_counter() - begin
                stop.set()
                await serving
            await db.dispose()
    latencies = sorted((first_reply[c] - sent[c]) * 1000 for c in sent)
    p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)]
    return statistics.median(latencies), p99, len(delivered), elapsed


if __name__ == "__main__":
    asyncio.run(main())
