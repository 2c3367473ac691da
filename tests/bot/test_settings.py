"""The one Settings object: names checked against the backend catalogue, shapes checked when it loads."""

from __future__ import annotations

from typing import Any

import pytest

from bot.settings import Settings, SettingsError, load_settings
from engine.catalogue import BACKEND_NAMES


def settings(**values: Any) -> Settings:
    return load_settings(_env_file=None, **values)


def test_every_catalogue_backend_is_a_valid_route() -> None:
    assert settings(route=",".join(BACKEND_NAMES)).route == list(BACKEND_NAMES)


def test_unknown_backend_lists_the_catalogue() -> None:
    with pytest.raises(SettingsError) as raised:
        settings(route="fal-flux-pulid,dall-e")
    assert raised.value.message == f"LIKENESS_ROUTE: unknown backend 'dall-e'; known: {', '.join(BACKEND_NAMES)}"


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:////var/lib/likeness/likeness.db",
        "postgresql://likeness:secret@db:5432/likeness",
        "postgresql+asyncpg://likeness:secret@db/likeness",
    ],
)
def test_database_urls_the_store_opens_are_accepted(url: str) -> None:
    assert settings(database_url=url).database_url == url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgres//u:secret@db/x", "not a database URL: use sqlite:///PATH or postgresql://"),
        ("postgresql://u:secret@db:five/x", "not a database URL: use sqlite:///PATH or postgresql://"),
        ("postgres://u:secret@db/x", "unsupported database 'postgres': use sqlite:///PATH or postgresql://"),
    ],
)
def test_database_url_errors_name_the_variable_and_hide_the_password(url: str, message: str) -> None:
    with pytest.raises(SettingsError) as raised:
        settings(database_url=url)
    assert raised.value.message.startswith(f"LIKENESS_DATABASE_URL: {message}")
    assert "secret" not in raised.value.message


@pytest.mark.parametrize("listen", ["8443", "0.0.0.0:https", "[::]:70000"])
def test_webhook_listen_address_is_checked(listen: str) -> None:
    with pytest.raises(SettingsError, match=r"^LIKENESS_TELEGRAM__WEBHOOK_LISTEN: "):
        settings(telegram={"webhook_listen": listen})


def test_secrets_are_every_token_key_and_the_database_password() -> None:
    loaded = settings(
        database_url="postgresql://likeness:db-password@db/likeness",
        telegram={"token": "1:tg-token", "webhook_secret": "hook-secret"},
        discord={"token": "dc-token"},
        fal={"key": "fal-key"},
        replicate={"token": "rep-token"},
        wavespeed={"key": "ws-key"},
        segmind={"key": "sg-key"},
    )
    assert set(loaded.secrets()) == {
        "db-password", "1:tg-token", "hook-secret", "dc-token", "fal-key", "rep-token", "ws-key", "sg-key",
    }  # fmt: skip
    assert settings().secrets() == []


def test_the_pool_size_reaches_the_store_and_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIKENESS_DATABASE_POOL_SIZE", "4")
    assert settings().database_pool_size == 4
    with pytest.raises(SettingsError) as raised:
        settings(database_pool_size=0)
    assert raised.value.message.startswith("LIKENESS_DATABASE_POOL_SIZE")
