"""Turning request inputs into image bytes: base64, URLs (SSRF-safe fetcher), uploads."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import AsyncIterator

from starlette.datastructures import UploadFile
from starlette.requests import Request

from service.api.errors import ApiError
from service.api.schemas import ImageInput
from service.fetch import ImageFetcher
from service.inference.errors import ImageTooLarge, InvalidImage

_DATA_URL = re.compile(r"^data:image/[A-Za-z0-9.+-]+;base64,", re.IGNORECASE)
_UPLOAD_CHUNK = 64 * 1024


class ImageReader:
    def __init__(self, fetcher: ImageFetcher, max_bytes: int) -> None:
        self.fetcher = fetcher
        self.max_bytes = max_bytes

    async def read(self, source: ImageInput) -> bytes:
        if source.image_url is not None:
            return await self.fetcher.fetch(source.image_url)
        assert source.image_base64 is not None
        return self.decode_base64(source.image_base64)

    def decode_base64(self, text: str) -> bytes:
        text = _DATA_URL.sub("", text.strip(), count=1)
        if len(text) * 3 // 4 > self.max_bytes:
            raise ImageTooLarge(f"the image is over {self.max_bytes} bytes")
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidImage("image_base64 is not valid base64") from None
        if not data:
            raise InvalidImage("image_base64 is empty")
        return data

    async def read_upload(self, request: Request) -> bytes:
        """The image of an ``/upload`` request: a multipart ``file`` field or a raw ``image/*`` body."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type.startswith("image/"):
            return await self._read_raw(request)
        if content_type == "multipart/form-data":
            return await self._read_multipart(request)
        raise ApiError(
            "UNSUPPORTED_MEDIA_TYPE",
            f"content type {content_type or '(none)'!r} is not accepted: send multipart/form-data "
            "with a 'file' field, or the raw image with an image/* content type",
        )

    async def _read_raw(self, request: Request) -> bytes:
        data = await self._collect(request.stream(), "the upload")
        if not data:
            raise InvalidImage("the request body is empty")
        return data

    async def _collect(self, chunks: AsyncIterator[bytes], what: str) -> bytes:
        """Join ``chunks``, refusing as soon as they pass the byte limit (not after reading it all)."""
        parts, size = [], 0
        async for chunk in chunks:
            size += len(chunk)
            if size > self.max_bytes:
                raise ImageTooLarge(f"{what} is over {self.max_bytes} bytes")
            parts.append(chunk)
        return b"".join(parts)

    async def _read_multipart(self, request: Request) -> bytes:
        try:
            # Caps field sizes and counts (CVE-2024-47874); the body itself is capped by middleware.
            form = await request.form(max_files=1, max_fields=8, max_part_size=64 * 1024)
        except ValueError as exc:  # malformed multipart: not a client-visible crash
            raise ApiError("VALIDATION_ERROR", f"malformed multipart body: {exc}") from None
        except Exception as exc:  # starlette raises its own MultiPartException/HTTPException types
            if getattr(exc, "status_code", None) == 413:
                raise ImageTooLarge("the upload is too large") from None
            raise ApiError("VALIDATION_ERROR", f"malformed multipart body: {exc}") from None
        try:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise ApiError(
                    "VALIDATION_ERROR",
                    "multipart body needs a file field named 'file'",
                    details=[{"loc": ["body", "file"], "msg": "Field required", "type": "missing"}],
                )
            data = await self._collect(_read_chunks(upload), "the upload")
            if not data:
                raise InvalidImage("the uploaded file is empty")
            return data
        finally:
            await form.close()


async def _read_chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(_UPLOAD_CHUNK):
        yield chunk
