"""Request inputs to data-plane image sources: base64 decoded, URLs passed on, uploads read (capped)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.datastructures import UploadFile
from starlette.requests import Request

from service.api.errors import ApiError
from service.api.schemas import ImageInput
from service.dataplane.sources import Base64Image, ImageSource, ImageUrl
from service.errors import ErrorCode, ImageTooLarge, InvalidImage

_UPLOAD_CHUNK = 64 * 1024
_UPLOAD_IS_EMPTY = "the uploaded image is empty"


class ImageInputs:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes

    def source(self, image: ImageInput) -> ImageSource:
        if image.image_url is not None:
            return ImageUrl(image.image_url)
        assert image.image_base64 is not None
        if len(image.image_base64) * 3 // 4 > self.max_bytes:
            raise ImageTooLarge(f"the image is over {self.max_bytes} bytes")
        return Base64Image(image.image_base64)

    async def read_upload(self, request: Request) -> bytes:
        """The image of an ``/upload`` request: a multipart ``file`` field or a raw ``image/*`` body."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type.startswith("image/"):
            data = await self._collect(request.stream())
        elif content_type == "multipart/form-data":
            data = await self._read_multipart(request)
        else:
            raise ApiError(
                ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                f"content type {content_type or '(none)'!r} is not accepted: send multipart/form-data "
                "with a 'file' field, or the raw image with an image/* content type",
            )
        if not data:
            raise InvalidImage(_UPLOAD_IS_EMPTY)
        return data

    async def _collect(self, chunks: AsyncIterator[bytes]) -> bytes:
        """Join ``chunks``, refusing as soon as they pass the byte limit (not after reading it all)."""
        parts, size = [], 0
        async for chunk in chunks:
            size += len(chunk)
            if size > self.max_bytes:
                raise ImageTooLarge(f"the upload is over {self.max_bytes} bytes")
            parts.append(chunk)
        return b"".join(parts)

    async def _read_multipart(self, request: Request) -> bytes:
        try:
            # Caps field sizes and counts (CVE-2024-47874); the body itself is capped by middleware.
            form = await request.form(max_files=1, max_fields=8, max_part_size=64 * 1024)
        except Exception as exc:  # starlette raises its own MultiPartException/HTTPException types
            if getattr(exc, "status_code", None) == 413:
                raise ImageTooLarge("the upload is too large") from None
            raise ApiError(ErrorCode.VALIDATION_ERROR, f"malformed multipart body: {exc}") from None
        try:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise ApiError(
                    ErrorCode.VALIDATION_ERROR,
                    "multipart body needs a file field named 'file'",
                    details=[{"loc": ["body", "file"], "msg": "Field required", "type": "missing"}],
                )
            return await self._collect(_read_chunks(upload))
        finally:
            await form.close()


async def _read_chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(_UPLOAD_CHUNK):
        yield chunk
