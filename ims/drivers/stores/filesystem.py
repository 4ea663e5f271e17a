"""Store images as files in a local (or shared) directory.

Writes go to a hidden temporary name in the same directory and are renamed
into place only when complete, so a crash never leaves a partial image under
its final name; ``cleanup`` removes the temporaries of writes that died.
"""

from __future__ import annotations

import errno
import glob
import os
import uuid
from collections.abc import Iterable, Iterator
from typing import ClassVar
from urllib.parse import unquote, urlsplit

from oslo_config import cfg

from ims import errors
from ims.drivers.stores._filewriter import write_new_file
from ims.drivers.stores.base import ObjectBucket, Store, StoredObject

_TMP_PREFIX = ".partial-"
READ_CHUNK = 4 * 1024 * 1024


class FilesystemStore(Store):
    """A directory of image files named by image id."""

    TYPE = "filesystem"
    OPTS: ClassVar[list[cfg.Opt]] = [
        cfg.StrOpt(
            "filesystem_store_datadir",
            help="Directory that holds this store's image files. It is created when "
            "missing. Possible values: an absolute path, or one relative to the "
            "working directory. Related options: [DEFAULT] state_path (the default "
            "store lives under it).",
        ),
        cfg.IntOpt(
            "filesystem_store_chunk_size",
            default=READ_CHUNK,
            min=4096,
            help="Size in bytes of the reads that serve downloads.",
        ),
        cfg.BoolOpt(
            "filesystem_store_direct_io",
            default=True,
            help="Write image data with direct I/O (O_DIRECT) where the filesystem supports "
            "it: uploads then cost no page-cache copy and do not evict hotter data. "
            "Filesystems that refuse it (tmpfs) are written through the cache anyway.",
        ),
    ]

    def configure(self) -> None:
        datadir = self.options.filesystem_store_datadir
        if not datadir:
            raise errors.ConfigError(
                reason=f"[{self.store_id}] filesystem_store_datadir is required"
            )
        self.datadir = os.path.abspath(datadir)
        try:
            os.makedirs(self.datadir, exist_ok=True)
        except OSError as ex:
            raise errors.ConfigError(reason=f"cannot create {self.datadir}: {ex}") from ex
        if not os.access(self.datadir, os.W_OK | os.X_OK):
            raise errors.ConfigError(reason=f"{self.datadir} is not writable")
        self.chunk_size = self.options.filesystem_store_chunk_size
        self.direct_io = self.options.filesystem_store_direct_io

    def url_prefix(self) -> str:
        return f"file://{self.datadir}/"

    def _path(self, url: str) -> str:
        parts = urlsplit(url)
        path = os.path.normpath(unquote(parts.path))
        # APPSEC(ims): a stored URL must not escape the data directory.
        if parts.scheme != "file" or os.path.dirname(path) != self.datadir:
            raise errors.DataNotFound(location=url)
        return path

    def add(
        self,
        image_id: str,
        chunks: Iterable[bytes],
        size_hint: int | None = None,
        owner: str | None = None,
    ) -> StoredObject:
        final = os.path.join(self.datadir, image_id)
        if os.path.exists(final):
            raise errors.Duplicate(what=f"Image data for {image_id}")
        tmp = os.path.join(self.datadir, f"{_TMP_PREFIX}{image_id}-{uuid.uuid4().hex}")
        try:
            size = write_new_file(tmp, chunks, direct=self.direct_io)
            os.rename(tmp, final)
        except OSError as ex:
            _remove_quietly(tmp)
            raise self._translate(ex) from ex
        except BaseException:
            _remove_quietly(tmp)
            raise
        return StoredObject(url=f"file://{final}", size=size)

    def _translate(self, ex: OSError) -> errors.IMSError:
        if ex.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            return errors.StorageFull(store=self.store_id)
        if ex.errno == errno.EACCES:
            return errors.StoreUnavailable(store=self.store_id, reason="write denied")
        return errors.StoreUnavailable(store=self.store_id, reason=ex.strerror or str(ex))

    def get(self, url: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        path = self._path(url)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise errors.DataNotFound(location=url) from None
        except OSError as ex:
            raise self._translate(ex) from ex
        _read_ahead(fd)
        return _iter_file(fd, offset, length, self.chunk_size)

    def open_file(self, url: str) -> int:
        """Return an OS file descriptor for zero-copy serving (caller closes)."""
        try:
            fd = os.open(self._path(url), os.O_RDONLY)
        except FileNotFoundError:
            raise errors.DataNotFound(location=url) from None
        _read_ahead(fd)
        return fd

    def get_size(self, url: str) -> int:
        try:
            return os.stat(self._path(url)).st_size
        except FileNotFoundError:
            raise errors.DataNotFound(location=url) from None

    def delete(self, url: str) -> None:
        try:
            os.unlink(self._path(url))
        except FileNotFoundError:
            raise errors.DataNotFound(location=url) from None
        except OSError as ex:
            raise self._translate(ex) from ex

    def cleanup(self) -> int:
        removed = 0
        for name in os.listdir(self.datadir):
            if name.startswith(_TMP_PREFIX):
                _remove_quietly(os.path.join(self.datadir, name))
                removed += 1
        return removed

    def discard_partial(self, image_id: str, owner: str | None = None) -> int:
        pattern = os.path.join(
            glob.escape(self.datadir), f"{_TMP_PREFIX}{glob.escape(image_id)}-*"
        )
        removed = 0
        for path in glob.glob(pattern):
            _remove_quietly(path)
            removed += 1
        return removed

    def describe(self) -> dict[str, object]:
        return {"data_dir": self.datadir, "chunk_size": self.chunk_size}

    def open_bucket(self, bucket: str) -> ObjectBucket:
        """A bucket is a directory directly under the data directory."""
        if not bucket or bucket.startswith(".") or os.sep in bucket or bucket != bucket.strip():
            raise errors.Forbidden(f"{bucket!r} cannot be a bucket of store {self.store_id}")
        return _DirBucket(self, bucket)


class _DirBucket(ObjectBucket):
    """Files under ``<datadir>/<bucket>/``; sub-directories are folders."""

    def __init__(self, store: FilesystemStore, bucket: str) -> None:
        super().__init__(bucket)
        self.store = store
        self.root = os.path.join(store.datadir, bucket)

    def _path(self, name: str) -> str:
        path = os.path.normpath(os.path.join(self.root, name))
        # APPSEC(ims): no "..", absolute name or symlink may leave the bucket.
        real_root = os.path.realpath(self.root)
        if not path.startswith(self.root + os.sep) or not os.path.realpath(path).startswith(
            real_root + os.sep
        ):
            raise errors.DataNotFound(location=f"{self.bucket}:{name}")
        return path

    def size(self, name: str) -> int:
        path = self._path(name)
        try:
            info = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            raise errors.DataNotFound(location=f"{self.bucket}:{name}") from None
        if not os.path.isfile(path):
            raise errors.DataNotFound(location=f"{self.bucket}:{name}")
        return info.st_size

    def get(self, name: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        self.size(name)  # a directory or a missing file is not an object
        try:
            fd = os.open(self._path(name), os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            raise errors.DataNotFound(location=f"{self.bucket}:{name}") from None
        except OSError as ex:
            raise self.store._translate(ex) from ex
        return _iter_file(fd, offset, length, self.store.chunk_size)

    def put(self, name: str, chunks: Iterable[bytes], size_hint: int | None = None) -> int:
        if not os.path.isdir(self.root):
            raise errors.StoreUnavailable(
                store=self.store.store_id, reason=f"bucket {self.bucket} does not exist"
            )
        final = self._path(name)
        if os.path.lexists(final):
            raise errors.Duplicate(what=f"Object {self.bucket}:{name}")
        folder = os.path.dirname(final)
        tmp = os.path.join(folder, f"{_TMP_PREFIX}{uuid.uuid4().hex}")
        try:
            os.makedirs(folder, exist_ok=True)
            size = write_new_file(tmp, chunks, direct=self.store.direct_io)
            # A hard link publishes the file only if the name is still free.
            os.link(tmp, final)
        except FileExistsError:
            raise errors.Duplicate(what=f"Object {self.bucket}:{name}") from None
        except OSError as ex:
            raise self.store._translate(ex) from ex
        finally:
            _remove_quietly(tmp)
        return size

    def delete(self, name: str) -> None:
        path = self._path(name)
        if not os.path.isfile(path):
            raise errors.DataNotFound(location=f"{self.bucket}:{name}")
        try:
            os.unlink(path)
        except FileNotFoundError:
            raise errors.DataNotFound(location=f"{self.bucket}:{name}") from None
        except OSError as ex:
            raise self.store._translate(ex) from ex


def _iter_file(fd: int, offset: int, length: int | None, chunk_size: int) -> Iterator[bytes]:
    try:
        remaining = length
        pos = offset
        while remaining is None or remaining > 0:
            want = chunk_size if remaining is None else min(chunk_size, remaining)
            data = os.pread(fd, want, pos)
            if not data:
                break
            pos += len(data)
            if remaining is not None:
                remaining -= len(data)
            yield data
    finally:
        os.close(fd)


def _read_ahead(fd: int) -> None:
    """Ask for a larger read-ahead: images are read front to back, mostly from disk
    (uploads bypass the page cache)."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is not None:
        advise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
