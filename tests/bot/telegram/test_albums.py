"""Telegram albums: parts gathered by media_group_id, handed out after a quiet period, late parts refused."""

from __future__ import annotations

import asyncio

import pytest

from bot.telegram.albums import AlbumBuffer, AlbumCollector


def test_an_album_is_due_once_no_part_came_for_the_quiet_period() -> None:
    buffer: AlbumBuffer[str] = AlbumBuffer(quiet_s=1.0, ttl_s=60.0)
    assert buffer.next_due() is None and buffer.due(100.0) == []

    assert buffer.add("a", "first", 10.0)
    assert buffer.add("a", "second", 10.3)
    assert buffer.add("a", "third", 10.8)
    # Every part moves the due time: a second after the latest one, not the first.
    assert buffer.next_due() == pytest.approx(11.8)
    assert buffer.due(11.5) == []
    assert buffer.due(11.8) == [["first", "second", "third"]]
    assert buffer.next_due() is None and buffer.open_albums == 0


def test_albums_are_gathered_apart() -> None:
    buffer: AlbumBuffer[int] = AlbumBuffer(quiet_s=1.0, ttl_s=60.0)
    buffer.add("a", 1, 0.0)
    buffer.add("b", 10, 0.5)
    buffer.add("a", 2, 0.6)
    buffer.add("b", 11, 0.9)
    assert buffer.next_due() == pytest.approx(1.6)
    assert buffer.due(1.7) == [[1, 2]]
    assert buffer.due(1.9) == [[10, 11]]


def test_a_part_after_its_album_was_handed_out_is_refused_until_the_album_is_forgotten() -> None:
    buffer: AlbumBuffer[str] = AlbumBuffer(quiet_s=1.0, ttl_s=60.0)
    buffer.add("a", "first", 0.0)
    assert buffer.due(1.0) == [["first"]]

    # A straggler, or Telegram sending the album again: no second request.
    assert not buffer.add("a", "late", 5.0)
    assert not buffer.add("a", "first", 60.9)
    assert buffer.open_albums == 0 and buffer.due(100.0) == []

    # Long after, the id is forgotten (memory stays bounded) and counts as a new album.
    assert buffer.add("a", "much later", 61.5)
    assert buffer.due(62.5) == [["much later"]]


def test_an_album_takes_at_most_telegrams_ten_items() -> None:
    buffer: AlbumBuffer[int] = AlbumBuffer(quiet_s=1.0, ttl_s=60.0)
    kept = [buffer.add("a", n, 0.0) for n in range(12)]
    assert kept == [True] * 10 + [False] * 2
    assert buffer.due(1.0) == [list(range(10))]


async def test_the_collector_hands_each_album_over_once_outside_the_update_handlers() -> None:
    handed: list[list[str]] = []
    both = asyncio.Event()

    async def handle(parts: list[str]) -> None:
        handed.append(parts)
        if len(handed) == 2:
            both.set()

    collector: AlbumCollector[str] = AlbumCollector(handle, quiet_s=0.05, ttl_s=60.0)
    assert all(collector.add("album", part) for part in ("one", "two", "three"))
    assert collector.add("other", "alone")
    await asyncio.wait_for(both.wait(), 5)
    assert sorted(handed) == [["alone"], ["one", "two", "three"]]

    assert not collector.add("album", "late")
    await asyncio.sleep(0.1)
    assert len(handed) == 2
    await collector.close()


async def test_closing_drops_gathering_albums_and_waits_for_running_ones(caplog: pytest.LogCaptureFixture) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    finished: list[list[str]] = []

    async def handle(parts: list[str]) -> None:
        started.set()
        await release.wait()
        finished.append(parts)
        raise RuntimeError("the handler broke")

    collector: AlbumCollector[str] = AlbumCollector(handle, quiet_s=0.05, ttl_s=60.0)
    collector.add("running", "x")
    await asyncio.wait_for(started.wait(), 5)
    collector.add("gathering", "y")
    closing = asyncio.create_task(collector.close())
    await asyncio.sleep(0.05)
    assert not closing.done()  # waits for the album being handled
    release.set()
    await asyncio.wait_for(closing, 5)

    assert finished == [["x"]]  # the album still gathering was never handed over
    assert any("handling an album failed" in r.getMessage() for r in caplog.records if r.levelname == "ERROR")
