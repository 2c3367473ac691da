"""Photos and documents as Telegram stores them: image checks, thumbnails, file ids and paths."""

from __future__ import annotations

import contextlib
import io
import itertools
import mimetypes
import secrets
import warnings

from PIL import Image

from tests.fakes.telegram.models import JSON, StoredFile
from tests.fakes.telegram.protocol import PHOTO_RATIO_LIMIT, PHOTO_SIDES_LIMIT, PHOTO_UPLOAD_LIMIT, bad


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the header, or None when it is not an image Pillow knows.

    Raises Image.DecompressionBombError for absurd pixel counts."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as image:
                return image.size
        except (OSError, ValueError, SyntaxError):
            return None


def decodes(data: bytes) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as image:
                image.load()
            return True
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            return False


def jpeg_thumbnail(data: bytes, side: int) -> tuple[bytes, int, int] | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as image:
                image.thumbnail((side, side))
                small = image.convert("RGB")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            return None
    buffer = io.BytesIO()
    small.save(buffer, "JPEG", quality=80)
    return buffer.getvalue(), small.width, small.height


def check_photo(data: bytes) -> tuple[int, int]:
    """The size of an uploaded photo, refused as Telegram does when it is too big, too odd or no image."""
    if len(data) > PHOTO_UPLOAD_LIMIT:
        raise bad("PHOTO_INVALID_DIMENSIONS")
    try:
        size = image_size(data)
    except Image.DecompressionBombError:
        raise bad("PHOTO_INVALID_DIMENSIONS") from None
    if size is None or not decodes(data):
        raise bad("IMAGE_PROCESS_FAILED")
    width, height = size
    if width + height > PHOTO_SIDES_LIMIT or max(width, height) > PHOTO_RATIO_LIMIT * max(min(width, height), 1):
        raise bad("PHOTO_INVALID_DIMENSIONS")
    return size


def document_names(filename: str | None, content_type: str | None) -> tuple[str, str]:
    name = filename or "document"
    if content_type and content_type != "application/octet-stream":
        return name, content_type
    return name, mimetypes.guess_type(name)[0] or "application/octet-stream"


def photo_size(stored: StoredFile, width: int, height: int) -> JSON:
    return {
        "file_id": stored.file_id,
        "file_unique_id": stored.file_unique_id,
        "file_size": stored.declared_size,
        "width": width,
        "height": height,
    }


class FileStore:
    """Every file the fake holds, by file_id and by the relative path getFile hands out."""

    def __init__(self) -> None:
        self.by_id: dict[str, StoredFile] = {}
        self.by_path: dict[str, StoredFile] = {}
        self._numbers = itertools.count(1)

    def store(self, data: bytes, folder: str, extension: str, declared_size: int | None = None) -> StoredFile:
        number = next(self._numbers)
        prefix = {"photos": "AgAC", "documents": "BQAC", "thumbnails": "AAMC"}[folder]
        stored = StoredFile(
            file_id=f"{prefix}{secrets.token_urlsafe(30)}",
            file_unique_id=f"AQAD{secrets.token_urlsafe(9)}",
            # Telegram-style relative paths; PTB only prefixes paths that do not exist on local disk.
            file_path=f"{folder}/file_{number}.{extension}",
            data=data,
            declared_size=len(data) if declared_size is None else declared_size,
        )
        self.by_id[stored.file_id] = stored
        self.by_path[stored.file_path] = stored
        return stored

    def photo_sizes(self, data: bytes, size: tuple[int, int], declared_size: int | None) -> list[JSON]:
        """Thumbnails for the sides Telegram makes that are smaller than the photo, then the photo itself."""
        width, height = size
        sizes: list[JSON] = []
        for side in (90, 320, 800):
            if max(width, height) <= side:
                break
            thumbnail = jpeg_thumbnail(data, side)
            if thumbnail is None:
                break
            small, small_width, small_height = thumbnail
            sizes.append(photo_size(self.store(small, "photos", "jpg"), small_width, small_height))
        full = self.store(data, "photos", "jpg", declared_size)
        sizes.append(photo_size(full, width, height))
        return sizes

    def document(self, data: bytes, filename: str, mime_type: str, declared_size: int | None) -> JSON:
        extension = filename.rsplit(".", 1)[-1] if "." in filename else "bin"
        stored = self.store(data, "documents", extension, declared_size)
        document: JSON = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_name": filename,
            "mime_type": mime_type,
            "file_size": stored.declared_size,
        }
        if mime_type.startswith("image/"):
            with contextlib.suppress(Image.DecompressionBombError):
                size = image_size(data)
                # Only modest images get a preview, so a hostile file cannot make the fake decode a bomb.
                if size is not None and size[0] * size[1] <= 25_000_000 and max(size) > 0:
                    thumbnail = jpeg_thumbnail(data, 320)
                    if thumbnail is not None:
                        small, width, height = thumbnail
                        thumb_file = self.store(small, "thumbnails", "jpg")
                        document["thumbnail"] = photo_size(thumb_file, width, height)
        return document
