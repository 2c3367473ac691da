"""The composition root: the default route follows the catalogue, and `likeness run`'s parts open and close."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.errors import OperatorError
from bot.settings import Settings, load_settings
from bot.wiring.engine import build_backends, default_route, open_engine
from bot.wiring.service import serve
from engine.catalogue import BACKEND_NAMES


def settings(tmp_path: Path, **values: Any) -> Settings:
    return load_settings(_env_file=None, data_dir=tmp_path / "data", **values)


async def test_default_route_is_every_configured_backend_in_catalogue_order(tmp_path: Path) -> None:
    configured = settings(tmp_path, segmind={"key": "s"}, fal={"key": "f"}, wavespeed={"key": "w"})
    async with aiohttp.ClientSession() as http:
        backends = build_backends(configured, http)
        route = default_route(configured, backends)
    assert set(backends) == set(BACKEND_NAMES) - {"local"}  # the local engine only when enabled
    assert route == ["fal-flux-pulid", "fal-pulid", "wavespeed-flux-pulid", "segmind-flux-pulid"]
    assert route == [name for name in BACKEND_NAMES if name in route]


async def test_open_engine_keeps_the_configured_route_and_warns_of_unavailable_backends(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    configured = settings(tmp_path, route="segmind-flux-pulid,fal-flux-pulid", fal={"key": "f"})
    with caplog.at_level(logging.WARNING, logger="bot.wiring.engine"):
        async with open_engine(configured) as parts:
            assert parts.router.route == ["segmind-flux-pulid", "fal-flux-pulid"]
            assert (tmp_path / "data" / "likeness.db").exists()
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and warnings[0].startswith("backend segmind-flux-pulid in the route is unavailable: ")


def free_address() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


async def test_serve_without_front_ends_is_ready_until_stopped(tmp_path: Path) -> None:
    address = free_address()
    configured = settings(tmp_path, metrics={"address": address})
    stop = asyncio.Event()
    async with open_engine(configured) as parts, aiohttp.ClientSession() as http:
        serving = asyncio.create_task(serve(parts, stop))

        async def status(path: str) -> int:
            async with http.get(f"http://{address}{path}") as response:
                return response.status

        for _ in range(200):
            try:
                if await status("/readyz") == 200:
                    break
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)
        assert await status("/readyz") == 200
        assert not serving.done()
        stop.set()
        await asyncio.wait_for(serving, 10)
        with pytest.raises(aiohttp.ClientConnectionError):
            await status("/healthz")


async def test_a_data_directory_that_cannot_be_made_is_an_operator_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    configured = load_settings(_env_file=None, data_dir=tmp_path / "file" / "data")
    with pytest.raises(OperatorError, match=r"^LIKENESS_DATA_DIR: cannot create "):
        async with open_engine(configured):
            pass
