"""/v2/images/{id}/file: upload and download of image data."""

from __future__ import annotations

import os
import re

import falcon

from ims import errors
from ims.api import media
from ims.api.glance.images import ctx
from ims.core.image_data import ImageDataService

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
OCTET = "application/octet-stream"


def parse_range(req: falcon.Request) -> tuple[int | None, int | None] | None:
    """Read Range (or the legacy Content-Range) into (first, last)."""
    header = req.get_header("Range")
    if header is not None:
        header = header.strip()
        if "," in header:
            raise errors.Invalid("Multiple ranges are not supported")
        match = _RANGE.match(header)
        if not match or match.group(1) == match.group(2) == "":
            raise errors.InvalidRange(range=header, size="?")
        first = int(match.group(1)) if match.group(1) else None
        last = int(match.group(2)) if match.group(2) else None
        if first is not None and last is not None and last < first:
            raise errors.InvalidRange(range=header, size="?")
        return first, last
    legacy = req.get_header("Content-Range")
    if legacy is not None:
        match = _CONTENT_RANGE.match(legacy.strip())
        if not match:
            raise errors.InvalidRange(range=legacy, size="?")
        return int(match.group(1)), int(match.group(2))
    return None


class _FdFile:
    """A real file for wsgi.file_wrapper (sendfile), closed after sending."""

    def __init__(self, fd: int) -> None:
        self._file = os.fdopen(fd, "rb", buffering=0)

    def fileno(self) -> int:
        return self._file.fileno()

    def read(self, size: int = -1) -> bytes:
        return self._file.read(size)

    def close(self) -> None:
        self._file.close()


class ImageFile:
    def __init__(self, service: ImageDataService, multistore: bool) -> None:
        self.service = service
        self.multistore = multistore

    def on_put(self, req: falcon.Request, resp: falcon.Response, image_id: str) -> None:
        if media.media_type(req) != OCTET:
            raise errors.UnsupportedMediaType(content_type=req.content_type or "(none)")
        expected = _declared_size(req)
        store_id = req.get_header("X-Image-Meta-Store") if self.multistore else None
        self.service.upload(ctx(req), image_id, media.data_stream(req), expected, store_id)
        resp.status = falcon.HTTP_204

    def on_get(self, req: falcon.Request, resp: falcon.Response, image_id: str) -> None:
        download = self.service.download(ctx(req), image_id, parse_range(req))
        if download is None:
            resp.status = falcon.HTTP_204
            return
        resp.content_type = OCTET
        if download.checksum:
            resp.set_header("Content-MD5", download.checksum)
        if download.partial:
            resp.status = falcon.HTTP_206
            end = download.start + download.length - 1
            resp.set_header("Content-Range", f"bytes {download.start}-{end}/{download.total}")
        if download.fd is not None:
            resp.set_stream(_FdFile(download.fd), download.length)
        else:
            resp.set_stream(download.chunks, download.length)


def _declared_size(req: falcon.Request) -> int | None:
    raw = req.get_header("x-openstack-image-size")
    if raw is not None:
        try:
            size = int(raw)
        except ValueError:
            raise errors.Invalid("x-openstack-image-size must be an integer") from None
        if size < 0:
            raise errors.Invalid("x-openstack-image-size must be >= 0")
        return size
    return req.content_length
