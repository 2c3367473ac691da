"""`likeness worker` for the fault soak: the production command with provider timeouts and poll gaps shortened,
so a provider that hangs trips its timeout in about a second and a job polls in fractions of one.

Run as ``python -m tests.ops.soak_worker``; everything else comes from the LIKENESS_* environment as usual."""

from __future__ import annotations

import sys

import aiohttp

from bot import cli
from bot.settings import Settings
from bot.wiring import engine
from engine.backend import Backend
from engine.catalogue import PROVIDER_CLASSES
from engine.providers.client import Timeouts
from engine.providers.remote import PollSchedule

TIMEOUTS = Timeouts(request_s=1.0, submit_s=1.5, connect_s=1.0, download_s=1.0, cancel_s=1.0)
SCHEDULE = PollSchedule(first_s=0.15, factor=1.3, max_s=0.6, max_wait_s=60.0)


def soak_backends(settings: Settings, http: aiohttp.ClientSession) -> dict[str, Backend]:
    sections = {
        "fal": settings.fal,
        "replicate": settings.replicate,
        "wavespeed": settings.wavespeed,
        "segmind": settings.segmind,
    }
    return {
        backend.name: backend(http, sections[backend.vendor.label], timeouts=TIMEOUTS, schedule=SCHEDULE)
        for backend in PROVIDER_CLASSES
    }


if __name__ == "__main__":
    engine.build_backends = soak_backends
    sys.exit(cli.main(["worker"]))
