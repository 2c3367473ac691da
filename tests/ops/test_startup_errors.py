"""Start-up failures of the installed `likeness` process end as one line naming the setting, never a traceback."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.bot.test_cli_admin import LIKENESS
from tests.fakes.discord import FakeDiscord
from tests.fakes.telegram import FakeTelegram

pytestmark = pytest.mark.slow

# A well-formed token that no server has issued.
FOREIGN_TOKEN = "7100000999:AAforeignforeignforeignforeignforei"
# Webhook mode refuses to start without one; the webhook cases below fail later than that check.
WEBHOOK_SECRET = "startup-test-secret"


@dataclass(frozen=True)
class Ended:
    code: int
    stdout: str
    stderr: str


async def likeness(tmp_path: Path, *args: str, **env: str) -> Ended:
    """Run the entry point without blocking the loop the fake servers answer on.

    Logging is at WARNING, so anything beyond the error line (a traceback, a logged error) shows.
    """
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LIKENESS_")}
    clean.update({"LIKENESS_DATA_DIR": str(tmp_path / "data"), "LIKENESS_LOG__LEVEL": "WARNING", **env})
    process = await asyncio.create_subprocess_exec(
        LIKENESS,
        *args,
        cwd=tmp_path,
        env=clean,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), 60)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return Ended(process.returncode, out.decode(), err.decode())


def one_line(ended: Ended) -> str:
    """The whole of stderr, which must be one `likeness: …` line."""
    lines = ended.stderr.strip().splitlines()
    assert len(lines) == 1, ended.stderr
    assert lines[0].startswith("likeness: ")
    return lines[0]


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    yield port


async def test_unreachable_telegram_server_is_one_line(tmp_path: Path, closed_port: int) -> None:
    base = f"http://127.0.0.1:{closed_port}"
    ended = await likeness(
        tmp_path,
        "run",
        LIKENESS_TELEGRAM__TOKEN=FOREIGN_TOKEN,
        LIKENESS_TELEGRAM__BASE_URL=f"{base}/bot",
        LIKENESS_TELEGRAM__BASE_FILE_URL=f"{base}/file/bot",
        LIKENESS_METRICS__ADDRESS="",
    )
    assert ended.code == 1
    line = one_line(ended)
    assert "LIKENESS_TELEGRAM__BASE_URL" in line and f"{base}/bot" in line
    assert FOREIGN_TOKEN.split(":")[1] not in ended.stderr + ended.stdout


async def test_token_the_telegram_server_rejects_is_one_line(tmp_path: Path) -> None:
    async with FakeTelegram() as telegram:
        ended = await likeness(
            tmp_path,
            "run",
            LIKENESS_TELEGRAM__TOKEN=FOREIGN_TOKEN,
            LIKENESS_TELEGRAM__BASE_URL=telegram.base_url,
            LIKENESS_TELEGRAM__BASE_FILE_URL=telegram.base_file_url,
            LIKENESS_METRICS__ADDRESS="",
        )
        assert telegram.waiting_polls == 0  # it never got as far as polling
    assert ended.code == 1
    assert one_line(ended) == "likeness: Telegram rejected the bot token (LIKENESS_TELEGRAM__TOKEN)"
    assert FOREIGN_TOKEN.split(":")[1] not in ended.stderr + ended.stdout


def telegram_env(telegram: FakeTelegram, **extra: str) -> dict[str, str]:
    return {
        "LIKENESS_TELEGRAM__TOKEN": telegram.token,
        "LIKENESS_TELEGRAM__BASE_URL": telegram.base_url,
        "LIKENESS_TELEGRAM__BASE_FILE_URL": telegram.base_file_url,
        "LIKENESS_METRICS__ADDRESS": "",
        **extra,
    }


async def test_webhook_the_telegram_server_refuses_is_one_line(tmp_path: Path) -> None:
    async with FakeTelegram() as telegram:
        env = telegram_env(
            telegram,
            LIKENESS_TELEGRAM__WEBHOOK_URL="ftp://bot.example/hook",
            LIKENESS_TELEGRAM__WEBHOOK_LISTEN="127.0.0.1:0",
            LIKENESS_TELEGRAM__WEBHOOK_SECRET=WEBHOOK_SECRET,
        )
        ended = await likeness(tmp_path, "run", **env)
        assert telegram.webhook_url is None
    assert ended.code == 1
    line = one_line(ended)  # python-telegram-bot's own traceback of the same failure is not printed
    assert line.startswith("likeness: Telegram refused the webhook (LIKENESS_TELEGRAM__WEBHOOK_URL): ")
    assert "https" in line  # the server's reason


async def test_webhook_listen_address_in_use_is_one_line(tmp_path: Path) -> None:
    async with FakeTelegram() as telegram:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            listen = f"127.0.0.1:{taken.getsockname()[1]}"
            env = telegram_env(
                telegram,
                LIKENESS_TELEGRAM__WEBHOOK_URL="https://bot.example/telegram",
                LIKENESS_TELEGRAM__WEBHOOK_LISTEN=listen,
                LIKENESS_TELEGRAM__WEBHOOK_SECRET=WEBHOOK_SECRET,
            )
            ended = await likeness(tmp_path, "run", **env)
    assert ended.code == 1
    line = one_line(ended)
    assert line.startswith(f"likeness: LIKENESS_TELEGRAM__WEBHOOK_LISTEN: cannot listen on {listen}: ")
    assert "in use" in line


async def test_token_discord_rejects_is_one_line(tmp_path: Path) -> None:
    async with FakeDiscord() as discord:
        ended = await likeness(
            tmp_path,
            "run",
            LIKENESS_DISCORD__TOKEN="not-the-bot-token",
            LIKENESS_DISCORD__API_BASE=discord.api_base,
            LIKENESS_DISCORD__GATEWAY_URL=discord.gateway_url,
            LIKENESS_METRICS__ADDRESS="",
        )
        assert discord.connections == []  # rejected at login, before the gateway
    assert ended.code == 1
    assert one_line(ended) == "likeness: Discord rejected the bot token (LIKENESS_DISCORD__TOKEN)"
    assert "not-the-bot-token" not in ended.stderr + ended.stdout


@pytest.mark.parametrize("command", ["run", "worker"])
async def test_metrics_address_in_use_is_one_line(tmp_path: Path, command: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        ended = await likeness(tmp_path, command, LIKENESS_METRICS__ADDRESS=address)
    assert ended.code == 1
    line = one_line(ended)
    assert line.startswith(f"likeness: LIKENESS_METRICS__ADDRESS: cannot listen on {address}: ")
    assert "in use" in line


@pytest.mark.parametrize("address", ["localhost", "127.0.0.1:http", "127.0.0.1:99999"])
async def test_malformed_metrics_address_is_named_when_settings_load(tmp_path: Path, address: str) -> None:
    ended = await likeness(tmp_path, "worker", LIKENESS_METRICS__ADDRESS=address)
    assert ended.code == 2
    assert one_line(ended).startswith("likeness: LIKENESS_METRICS__ADDRESS: ")
    assert not (tmp_path / "data").exists()  # refused before anything was opened


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("postgres//likeness:hunter2secret@db/likeness", "not a database URL"),
        ("postgresql://likeness:hunter2secret@db:port/likeness", "not a database URL"),
        ("mysql://likeness:hunter2secret@db/likeness", "unsupported database 'mysql'"),
    ],
)
async def test_malformed_database_url_is_named_without_its_password(tmp_path: Path, url: str, needle: str) -> None:
    ended = await likeness(tmp_path, "run", LIKENESS_DATABASE_URL=url)
    assert ended.code == 2
    line = one_line(ended)
    assert line.startswith("likeness: LIKENESS_DATABASE_URL: ") and needle in line
    assert "hunter2secret" not in ended.stderr + ended.stdout


@pytest.mark.parametrize("command", [("worker",), ("db", "upgrade"), ("admin", "stats")])
async def test_unreachable_database_is_one_line_without_its_password(
    tmp_path: Path, closed_port: int, command: tuple[str, ...]
) -> None:
    url = f"postgresql://likeness:hunter2secret@127.0.0.1:{closed_port}/likeness"
    ended = await likeness(tmp_path, *command, LIKENESS_DATABASE_URL=url)
    assert ended.code == 1
    line = one_line(ended)
    assert line.startswith("likeness: cannot ") and " the database (LIKENESS_DATABASE_URL): " in line
    assert "hunter2secret" not in ended.stderr + ended.stdout
