"""Blobs in an S3-compatible object store (AWS S3, MinIO, SeaweedFS, R2…), through obstore.

The same content addressing as the local directory (``ab/cd/<sha256>`` under the URL's prefix), so the
reference counting, retention and orphan sweep above it work unchanged. Credentials, region and endpoint
come from the standard ``AWS_*`` environment variables (``AWS_ENDPOINT_URL`` for a store other than AWS).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

import obstore
from obstore.store import S3Store

from storage.blobs import blob_key, is_key

LIST_BATCH = 1000


class ObjectStoreError(Exception):
    """The object store cannot be used as configured; the message is one line for the operator."""


class ObjectBlobStore:
    """Content-addressed blobs in a bucket. Objects are written whole in one request, so a crash leaves
    nothing half-written behind; storing bytes held already writes them again, which renews their time
    (the orphan sweep's grace period counts from it)."""

    def __init__(self, store: Any, *, url: str) -> None:
        self.store, self.url = store, url

    @classmethod
    def from_url(cls, url: str, *, env: Mapping[str, str] | None = None) -> ObjectBlobStore:
        """``s3://bucket[/prefix]``; the rest from the ``AWS_*`` variables (``env``, else the environment)."""
        if not url.startswith("s3://") or not url[len("s3://") :].split("/", 1)[0]:
            raise ObjectStoreError(f"{url!r} is not s3://BUCKET[/PREFIX]")
        config: dict[str, str] = {}
        if env is not None:
            config = {key.lower().removeprefix("aws_"): value for key, value in env.items() if key.startswith("AWS_")}
        endpoint = (env if env is not None else os.environ).get("AWS_ENDPOINT_URL", "")
        # A plain-HTTP endpoint is a local MinIO or SeaweedFS: obstore refuses HTTP unless told.
        options = {"allow_http": True} if endpoint.startswith("http://") else {}
        try:
            store = S3Store.from_url(url, config=config or None, client_options=options or None)  # type: ignore[arg-type]
        except Exception as exc:
            raise ObjectStoreError(f"cannot use {url}: {_first_line(exc)}") from None
        return cls(store, url=url)

    @staticmethod
    def path(key: str) -> str:
        if not is_key(key):
            raise KeyError(key)
        return f"{key[:2]}/{key[2:4]}/{key}"

    async def check(self) -> None:
        """One small list request: the bucket exists and the credentials work (at start, not at the first
        photo)."""
        try:
            async for _batch in obstore.list(self.store, chunk_size=1):
                break
        except Exception as exc:
            raise ObjectStoreError(f"cannot reach {self.url}: {_first_line(exc)}") from None

    async def put(self, data: bytes) -> str:
        key = blob_key(data)
        await obstore.put_async(self.store, self.path(key), data)
        return key

    async def get(self, key: str) -> bytes:
        try:
            found = await obstore.get_async(self.store, self.path(key))
            return bytes(await found.bytes_async())
        except FileNotFoundError as exc:
            raise KeyError(key) from exc

    async def delete(self, key: str) -> None:
        await obstore.delete_async(self.store, self.path(key))  # deleting what is gone is no error in S3

    async def exists(self, key: str) -> bool:
        try:
            await obstore.head_async(self.store, self.path(key))
        except FileNotFoundError:
            return False
        return True

    async def stored_before(self, before: float) -> AsyncIterator[list[str]]:
        async for batch in obstore.list(self.store, chunk_size=LIST_BATCH):
            keys = []
            for entry in batch:
                name = str(entry["path"]).rsplit("/", 1)[-1]
                if is_key(name) and entry["last_modified"].timestamp() < before:
                    keys.append(name)
            if keys:
                yield keys

    async def delete_if_stored_before(self, key: str, before: float) -> bool:
        # Two requests, not one atomic step: a put landing between them (for a blob nothing referenced for
        # the whole grace period) loses its bytes, and its job fails "photo missing", refunded.
        try:
            meta = await obstore.head_async(self.store, self.path(key))
        except FileNotFoundError:
            return False
        if meta["last_modified"].timestamp() >= before:
            return False
        await obstore.delete_async(self.store, self.path(key))
        return True

    async def remove_partial(self, before: float) -> int:
        return 0  # single-request writes leave no partial objects


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
