"""Content-addressed storage for photos and outputs: a local directory now, an object store later."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Protocol

PARTIAL_PREFIX = ".tmp-"  # a write in progress (or one a crash cut short)
_DELETING_PREFIX = ".del-"  # a blob taken out of its place while the sweep decides on it


class BlobStore(Protocol):
    """Immutable blobs named by the sha256 of their bytes, so one blob can serve several rows."""

    async def put(self, data: bytes) -> str:
        """Store the bytes; returns the key (their sha256). Storing the same bytes twice is free."""

    async def get(self, key: str) -> bytes:
        """The bytes; raises KeyError if the blob is gone."""

    async def delete(self, key: str) -> None:
        """Remove the blob if present."""

    async def exists(self, key: str) -> bool: ...

    def stored_before(self, before: float) -> AsyncIterator[list[str]]:
        """Keys of the blobs last stored before ``before`` (epoch seconds), in batches. Storing bytes the
        store holds already counts as storing them again."""

    async def delete_if_stored_before(self, key: str, before: float) -> bool:
        """Delete the blob unless it was stored (again) at or after ``before``; True if it was deleted."""

    async def remove_partial(self, before: float) -> int:
        """Remove what writes begun before ``before`` left unfinished; returns how many."""


def blob_key(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class LocalBlobStore:
    """Blobs under ``root/ab/cd/<sha256>``, written atomically (temp file + rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        if not is_key(key):
            raise KeyError(key)
        return self.root / key[:2] / key[2:4] / key

    async def put(self, data: bytes) -> str:
        key = blob_key(data)
        await asyncio.to_thread(self._write, key, data)
        return key

    def _write(self, key: str, data: bytes) -> None:
        target = self.path(key)
        try:
            # Stored already: its time is renewed, so the orphan sweep's grace period counts from now and a
            # blob a new request is about to reference is not swept meanwhile.
            os.utime(target)
            return
        except FileNotFoundError:
            pass
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=PARTIAL_PREFIX)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    async def get(self, key: str) -> bytes:
        try:
            return await asyncio.to_thread(self.path(key).read_bytes)
        except FileNotFoundError as exc:
            raise KeyError(key) from exc

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self.path(key).unlink, missing_ok=True)

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.path(key).exists)

    async def stored_before(self, before: float) -> AsyncIterator[list[str]]:
        # One batch per top-level folder: a large store is listed in pieces, each off the event loop.
        for folder in await asyncio.to_thread(_folders, self.root):
            keys = await asyncio.to_thread(_stored_before, folder, before)
            if keys:
                yield keys

    async def delete_if_stored_before(self, key: str, before: float) -> bool:
        return await asyncio.to_thread(self._delete_if_stored_before, self.path(key), before)

    @staticmethod
    def _delete_if_stored_before(target: Path, before: float) -> bool:
        try:
            if target.stat().st_mtime >= before:
                return False
            # Out of its place first: a put from now on finds no blob and writes a new one. A put that renewed
            # it just before the move shows in its time, and it goes back.
            taken = target.with_name(f"{_DELETING_PREFIX}{uuid.uuid4().hex}")
            target.rename(taken)
        except FileNotFoundError:
            return False
        if taken.stat().st_mtime >= before:
            os.replace(taken, target)  # same bytes as any copy a put wrote meanwhile
            return False
        taken.unlink()
        return True

    async def remove_partial(self, before: float) -> int:
        return await asyncio.to_thread(_remove_partial, self.root, before)


def is_key(name: str) -> bool:
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


def _folders(root: Path) -> list[Path]:
    try:
        return sorted(entry for entry in root.iterdir() if entry.is_dir() and len(entry.name) == 2)
    except FileNotFoundError:
        return []


def _blob_files(folder: Path) -> Iterator[os.DirEntry[str]]:
    for sub in os.scandir(folder):
        if sub.is_dir(follow_symlinks=False):
            yield from os.scandir(sub.path)


def _stored_before(folder: Path, before: float) -> list[str]:
    keys = []
    for entry in _blob_files(folder):
        if not is_key(entry.name):
            continue
        try:
            if entry.stat(follow_symlinks=False).st_mtime < before:
                keys.append(entry.name)
        except FileNotFoundError:  # deleted meanwhile
            continue
    return keys


def _remove_partial(root: Path, before: float) -> int:
    removed = 0
    for folder in _folders(root):
        for entry in _blob_files(folder):
            if not entry.name.startswith((PARTIAL_PREFIX, _DELETING_PREFIX)):
                continue
            try:
                if entry.stat(follow_symlinks=False).st_mtime < before:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue
    return removed
