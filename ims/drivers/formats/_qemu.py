"""Helpers shared by the QEMU-family formats (raw, iso, qcow, qcow2, qed).

``FileView`` reads a hostile file by absolute offset without moving a shared
file position (``os.pread`` when there is a descriptor), so worker threads and
the caller never race. ``ClusterReader`` turns two-level cluster tables into
extents and coalesced reads: a format only decodes one *page* of its L2 table
into a list of host offsets (0 = reads as zeros, > 0 = data at that host
offset, -1 = look in the page's ``special`` dict for compressed clusters or
subclusters). Everything else (extents, run coalescing, parallel
decompression) lives here once.
"""

from __future__ import annotations

import array
import collections
import io
import os
import sys
import threading
import zlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

from ims import errors
from ims.disk.copy import data_windows, iter_blocks
from ims.disk.model import DiskReader, Extent, ImageInfo
from ims.drivers.formats.base import DiskFormat

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

# PERF(ims): concurrent.futures (with logging), queue and zstandard are
# imported where they are used: a plain copy needs none of them, and
# ims-img's start-up is a visible part of a copy's time.

#: Largest table (L1) any QEMU-family reader loads, as qemu's own limit.
MAX_TABLE_BYTES = 32 * 1024 * 1024
#: Largest virtual disk we accept (1 PiB): beyond that the header is absurd.
MAX_VIRTUAL_SIZE = 1 << 50
#: Largest single pread the reader issues when coalescing clusters.
MAX_RUN = 16 * 1024 * 1024
#: Unit of the copy pipeline. PERF(ims): 1 MiB blocks, a few in flight, keep
#: what was just read in the CPU caches until it is written: measured ~1.5x
#: faster than 4 MiB blocks for raw<->qcow2 (two memory copies dominate).
COPY_BLOCK = 1024 * 1024
COPY_DEPTH = 4
#: Entries decoded per L2 page: bounds memory however large a table is.
PAGE_ENTRIES = 8192
#: Pages kept decoded (each a list of PAGE_ENTRIES ints, ~0.3 MiB).
PAGE_CACHE = 8

_ZERO_CACHE: dict[int, bytes] = {}
_NATIVE_LE = sys.byteorder == "little"


def be_u64s(buf: bytes) -> array.array:
    """Decode big-endian u64s at C speed (array + byteswap)."""
    arr = array.array("Q")
    arr.frombytes(buf)
    if _NATIVE_LE:
        arr.byteswap()
    return arr


def le_u64s(buf: bytes) -> array.array:
    """Decode little-endian u64s at C speed."""
    arr = array.array("Q")
    arr.frombytes(buf)
    if not _NATIVE_LE:
        arr.byteswap()
    return arr


#: Zero buffers kept for reuse, in total bytes (cluster- and block-sized ones).
_ZERO_CACHE_BYTES = 16 * 1024 * 1024


def zeros(length: int) -> bytes:
    """Return ``length`` zero bytes, sharing objects for common sizes."""
    buf = _ZERO_CACHE.get(length)
    if buf is None:
        buf = bytes(length)
        if length <= 4 * 1024 * 1024:
            if sum(_ZERO_CACHE) + length > _ZERO_CACHE_BYTES:  # keys are the lengths
                _ZERO_CACHE.clear()
            _ZERO_CACHE[length] = buf
    return buf


#: Shared zeros to compare buffers with and to fill them from, whatever their
#: length. PERF(ims): a zero buffer per length made the copy loop allocate
#: (and page-fault) a new one for every odd-sized gap. calloc'd and never
#: written, so it costs no resident memory.
_ZERO_MAX = bytes(4 * 1024 * 1024)
_ZERO_MAX_VIEW = memoryview(_ZERO_MAX)


def is_zero(view: memoryview) -> bool:
    """Tell whether ``view`` (a byte view) is all zeros: memcmp, no allocation."""
    size = len(view)
    step = len(_ZERO_MAX)
    if size <= step:
        return _ZERO_MAX.startswith(view)
    return all(_ZERO_MAX.startswith(view[i : i + step]) for i in range(0, size, step))


def fill_zero(view: memoryview) -> None:
    """Set every byte of ``view`` (a byte view) to zero, without allocating."""
    step = len(_ZERO_MAX)
    for i in range(0, len(view), step):
        n = min(step, len(view) - i)
        view[i : i + n] = _ZERO_MAX_VIEW[:n]


#: Granularity of zero detection inside data blocks (qemu-img's default -S).
ZERO_PAGE = 4096
_SCAN_STEP = 64 * 1024


def nonzero_end(data: bytes | bytearray | memoryview) -> int:
    """Return the length of ``data`` without its zero tail, in whole pages.

    0 means all zeros. The tail is trimmed in ``ZERO_PAGE`` units measured
    from the end (a shorter last page counts as one), so what is cut is
    always zeros. PERF(ims): a block that ends in data costs one page
    compare; a zero tail is found 64 KiB then 4 KiB at a time, and every
    compare is a memcmp against a shared zero buffer, never a byte loop.
    """
    size = len(data)
    if not size:
        return 0
    view = memoryview(data).cast("B")
    zero = _ZERO_MAX
    last = size - ((size - 1) % ZERO_PAGE + 1)  # start of the last page
    if not zero.startswith(view[last:]):
        return size
    # NOTE(ims): bytes.startswith(view) is a memcmp; view == bytes compares
    # item by item, ~70x slower.
    if is_zero(view):
        return 0
    end = last
    for step in (_SCAN_STEP, ZERO_PAGE):
        while end >= step and zero.startswith(view[end - step : end]):
            end -= step
    return end


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def workers() -> int:
    """Number of CPU threads compression and decompression may use."""
    return max(1, min(os.cpu_count() or 1, 16))


def pool() -> ThreadPoolExecutor:
    """Return the process-wide (de)compression pool, created on first use.

    zlib and zstd release the GIL while they work, so threads use every core.
    """
    from concurrent.futures import ThreadPoolExecutor

    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=workers(), thread_name_prefix="ims-codec")
        return _POOL


_END = object()


class _Failure:
    def __init__(self, ex: BaseException) -> None:
        self.ex = ex


def _iter_pieces(reader: DiskReader, block_size: int) -> Iterator[tuple[int, int, bool]]:
    """Cut the extents like ``iter_blocks`` does, without reading."""
    for extent in reader.extents():
        if extent.zero:
            yield extent.offset, extent.length, True
            continue
        pos = extent.offset
        while pos < extent.end:
            length = min(block_size, extent.end - pos)
            yield pos, length, False
            pos += length


def copies_on_threads(reader: DiskReader) -> bool:
    """Tell whether a copy should read ``reader`` on threads of its own (``copy_pieces``).

    Only for readers that allow concurrent positional reads and do not
    decompress on threads already (those go through ``prefetch_blocks``).
    """
    return reader.concurrent_reads and int(getattr(reader, "parallel_reads", 1)) <= 1


def copy_pieces(
    reader: DiskReader,
    work: Callable[[int, memoryview], None],
    threads: int,
    block_size: int = COPY_BLOCK,
) -> None:
    """Call ``work(offset, data)`` for every data piece of the disk, unordered.

    Each of ``threads`` threads takes the next piece, reads it into its own
    buffer and hands it to ``work`` (which must be thread safe and done with
    ``data`` when it returns). PERF(ims): a piece is read, checked and
    written by one thread, so it stays in that core's cache, while the
    threads keep every core (and the disk) busy: qemu-img keeps several
    requests in flight too. The first failure stops every thread and is
    raised here; every thread is done with the reader when this returns.
    """
    pieces = ((off, n) for off, n, zero in _iter_pieces(reader, block_size) if not zero)
    direct = reader.direct_readinto
    lock = threading.Lock()
    failures: list[BaseException] = []

    def run() -> None:
        view = memoryview(bytearray(block_size)) if direct else None
        try:
            while not failures:
                with lock:
                    item = next(pieces, None)
                if item is None:
                    return
                off, n = item
                if view is None:
                    work(off, memoryview(reader.read(off, n)))
                else:
                    piece = view[:n]
                    reader.readinto(off, piece)
                    work(off, piece)
        except BaseException as ex:  # re-raised by the caller
            failures.append(ex)

    _run_on_threads(run, threads)
    if failures:
        raise failures[0]


def _run_on_threads(run: Callable[[], None], threads: int) -> None:
    """Run ``run`` here, or on ``threads`` threads and wait for them all."""
    if threads <= 1:
        run()
        return
    started = [threading.Thread(target=run, name="ims-copy") for _ in range(threads)]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join()


def fill_window(
    reader: DiskReader, start: int, ranges: list[tuple[int, int]], view: memoryview
) -> None:
    """Fill ``view`` with the disk from ``start``: ``ranges`` read, the rest zeros."""
    pos = 0
    for offset, length in ranges:
        inner = offset - start
        if inner > pos:
            fill_zero(view[pos:inner])
        reader.readinto(offset, view[inner : inner + length])
        pos = inner + length
    if pos < len(view):
        fill_zero(view[pos:])


def ordered_windows(
    reader: DiskReader,
    window: int,
    threads: int,
    scan: Callable[[memoryview], Any],
    plan: Callable[[int, memoryview, Any], Callable[[], None] | None],
) -> None:
    """Copy the disk's data windows on ``threads`` threads, deciding in disk order.

    Each thread takes the next data window, fills its own buffer (``window``
    bytes, zeros past the data, see ``fill_window``) and runs ``scan(view)``;
    then, one thread at a time and in window order, ``plan(start, view,
    scanned)``, which may return a follow-up (the write) run outside the
    order. PERF(ims): a window is read, scanned and written by one thread,
    so it stays in that core's cache, while another thread's I/O runs: a
    writer that allocates in disk order (qcow2) still keeps every core busy.
    The first failure stops every thread and is raised here.
    """
    windows = enumerate(data_windows(reader, window))
    take = threading.Lock()
    turn = threading.Condition()
    state = {"next": 0}
    failures: list[BaseException] = []

    def run() -> None:
        view = memoryview(bytearray(window))
        try:
            while not failures:
                with take:
                    item = next(windows, None)
                if item is None:
                    return
                seq, (start, length, ranges) = item
                fill_window(reader, start, ranges, view[:length])
                if length < window:
                    fill_zero(view[length:])
                scanned = scan(view)
                with turn:
                    while state["next"] != seq and not failures:
                        turn.wait()
                    if failures:
                        return
                    try:
                        follow = plan(start, view, scanned)
                    finally:
                        state["next"] = seq + 1
                        turn.notify_all()
                if follow is not None:
                    follow()
        except BaseException as ex:  # re-raised by the caller
            with turn:
                failures.append(ex)
                turn.notify_all()

    _run_on_threads(run, threads)
    if failures:
        raise failures[0]


def prefetch_blocks(
    reader: DiskReader,
    block_size: int = COPY_BLOCK,
    depth: int = COPY_DEPTH,
    reuse: bool = False,
) -> Iterator[tuple[int, int, bytes | memoryview | None]]:
    """``iter_blocks``, run ahead in reader threads when decompression pays for it.

    A reader that declares ``parallel_reads > 1`` (compressed images) gets
    that many reads in flight, ``depth`` blocks ahead, so decompression keeps
    every core busy across blocks. Memory is bounded by ``depth +
    parallel_reads + 1`` blocks. Every thread is done with the reader when
    this generator ends, however it ends, so the caller may close the file.

    PERF(ims): any other reader is read in the caller's thread. A block
    that is read, checked and written by one thread stays in that core's
    cache; handing it to another thread measured 1.5-2x the CPU time of the
    whole raw<->qcow2 copy, and on a busy machine the CPU time is the wall
    time. With ``reuse``, such a reader fills one buffer again and again
    (see ``iter_blocks``): each block is valid until the next is asked for.
    """
    parallel = max(1, int(getattr(reader, "parallel_reads", 1)))
    if parallel == 1:
        yield from iter_blocks(reader, block_size, reuse=reuse)
        return
    import queue
    from concurrent.futures import ThreadPoolExecutor

    queue_: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                queue_.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce_parallel() -> None:
        # A dedicated executor: the codec pool may be busy with these very reads.
        readers = ThreadPoolExecutor(parallel, thread_name_prefix="ims-prefetch")
        try:
            for off, length, zero in _iter_pieces(reader, block_size):
                data = None if zero else readers.submit(reader.read, off, length)
                if not put((off, length, data)):
                    break
            else:
                put(_END)
        except BaseException as ex:
            put(_Failure(ex))
        finally:
            # Queued reads the consumer will never take are dropped; running
            # ones finish before this thread (and so the generator) ends.
            readers.shutdown(wait=True, cancel_futures=stop.is_set())

    thread = threading.Thread(target=produce_parallel, name="ims-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = queue_.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.ex
            off, length, data = item
            if data is not None and not isinstance(data, bytes | bytearray | memoryview):
                data = data.result()
            yield off, length, data
    finally:
        stop.set()
        thread.join()


class FileView:
    """Bounded positional reads of one already-open file.

    Never opens anything; a short read of metadata is a format error, since the
    caller validated the range against ``size`` first.
    """

    def __init__(self, file: BinaryIO, fmt: str) -> None:
        self.file = file
        self.fmt = fmt
        self.fd: int | None = None
        try:
            fd = file.fileno()
            os.fstat(fd)
            self.fd = fd
        except (AttributeError, OSError, io.UnsupportedOperation, ValueError):
            self.fd = None
        self._lock = threading.Lock()
        try:
            if self.fd is not None:
                file_size = os.fstat(self.fd).st_size
                # NOTE(ims): a block device reports st_size 0; ask lseek.
                if file_size == 0:
                    saved = os.lseek(self.fd, 0, os.SEEK_CUR)
                    file_size = os.lseek(self.fd, 0, os.SEEK_END)
                    os.lseek(self.fd, saved, os.SEEK_SET)
            else:
                pos = file.tell()
                file_size = file.seek(0, os.SEEK_END)
                file.seek(pos)
        except OSError as ex:
            raise errors.ImageFormatError(format=fmt, reason=f"cannot size file: {ex}") from ex
        self.size: int = file_size

    def error(self, reason: str) -> errors.ImageFormatError:
        return errors.ImageFormatError(format=self.fmt, reason=reason)

    def pread(self, offset: int, length: int) -> bytes:
        """Read up to ``length`` bytes at ``offset``; short only at EOF."""
        if length <= 0:
            return b""
        if self.fd is not None:
            try:
                data = os.pread(self.fd, length, offset)
                if len(data) < length and offset + len(data) < self.size:
                    # A short read before EOF (signal, odd filesystem): finish it.
                    parts = [data]
                    got = len(data)
                    while got < length:
                        more = os.pread(self.fd, length - got, offset + got)
                        if not more:
                            break
                        parts.append(more)
                        got += len(more)
                    data = b"".join(parts)
                return data
            except OSError as ex:
                raise self.error(f"read failed at {offset}: {ex}") from ex
        with self._lock:
            saved = self.file.tell()
            try:
                self.file.seek(offset)
                return self.file.read(length)
            finally:
                self.file.seek(saved)

    def readinto(self, offset: int, view: memoryview) -> int:
        """Fill ``view`` from ``offset``; return the bytes read (short only at EOF)."""
        length = len(view)
        if self.fd is None:
            data = self.pread(offset, length)
            view[: len(data)] = data
            return len(data)
        got = 0
        try:
            while got < length:
                n = os.preadv(self.fd, [view[got:]], offset + got)
                if n <= 0:
                    break
                got += n
        except OSError as ex:
            raise self.error(f"read failed at {offset + got}: {ex}") from ex
        return got

    def read_exact(self, offset: int, length: int, what: str) -> bytes:
        """Read exactly ``length`` bytes of metadata, or raise ImageFormatError."""
        if offset < 0 or length < 0 or offset + length > self.size:
            raise self.error(f"{what} at {offset} (+{length}) lies outside the file")
        data = self.pread(offset, length)
        if len(data) != length:
            raise self.error(f"{what} at {offset} is truncated")
        return data


def overlaps(a_off: int, a_len: int, b_off: int, b_len: int) -> bool:
    """Tell whether two non-empty byte ranges share a byte."""
    return a_len > 0 and b_len > 0 and a_off < b_off + b_len and b_off < a_off + a_len


# -- decompression ---------------------------------------------------------------------------

_ZSTD_LOCAL = threading.local()


def inflate_cluster(buf: bytes | memoryview, cluster_size: int, fmt: str) -> bytes:
    """Inflate raw deflate (4 KiB window) to exactly one cluster.

    The stored span is rounded to sectors, so trailing bytes may belong to the
    next cluster; output is bounded to one cluster whatever the input claims.
    """
    try:
        dec = zlib.decompressobj(-12)
        out = dec.decompress(buf, cluster_size)
    except zlib.error as ex:
        raise errors.ImageFormatError(
            format=fmt, reason=f"compressed cluster is corrupt: {ex}"
        ) from ex
    if len(out) != cluster_size:
        raise errors.ImageFormatError(
            format=fmt,
            reason=f"compressed cluster inflates to {len(out)} bytes, not {cluster_size}",
        )
    if not dec.eof:
        # APPSEC(ims): one more byte tells a stream that merely ends late
        # (sector padding) from one that inflates past the cluster (a bomb).
        try:
            extra = dec.decompress(dec.unconsumed_tail, 1)
        except zlib.error:
            extra = b""
        if extra:
            raise errors.UnsafeImage(
                format=fmt,
                reason="compressed cluster inflates to more than one cluster (decompression bomb)",
            )
    return out


def zstd_cluster(buf: bytes | memoryview, cluster_size: int, fmt: str) -> bytes:
    """Decompress zstd frame(s) to exactly one cluster, with bounded output."""
    import zstandard

    dctx = getattr(_ZSTD_LOCAL, "dctx", None)
    if dctx is None:
        dctx = _ZSTD_LOCAL.dctx = zstandard.ZstdDecompressor()
    try:
        declared = zstandard.frame_content_size(buf)
        # APPSEC(ims): decompress() allocates whatever the frame header
        # declares; only let it when that is exactly one cluster (or unknown,
        # where max_output_size bounds it). Anything else goes through a
        # bounded stream reader.
        if declared == cluster_size:
            out = dctx.decompress(buf)
        elif declared == -1:
            out = dctx.decompress(buf, max_output_size=cluster_size)
        elif declared > cluster_size:
            raise errors.UnsafeImage(
                format=fmt,
                reason=f"compressed cluster declares {declared} bytes, more than one "
                f"cluster of {cluster_size} (decompression bomb)",
            )
        else:
            reader = dctx.stream_reader(io.BytesIO(bytes(buf)), read_across_frames=True)
            out = reader.read(cluster_size)
            while len(out) < cluster_size:
                more = reader.read(cluster_size - len(out))
                if not more:
                    break
                out += more
    except zstandard.ZstdError as ex:
        raise errors.ImageFormatError(
            format=fmt, reason=f"compressed cluster is corrupt or larger than a cluster: {ex}"
        ) from ex
    if len(out) != cluster_size:
        raise errors.ImageFormatError(
            format=fmt,
            reason=f"compressed cluster decompresses to {len(out)} bytes, not {cluster_size}",
        )
    return out


# -- the generic cluster-table reader ---------------------------------------------------------

#: A decoded page: host offsets per cluster, and details of the -1 entries.
#: A special value is ("c", host_byte_offset, nbytes) for a compressed cluster
#: or ("s", ((host_or_0, length), ...)) for a cluster split in subclusters.
Page = tuple[list[int], dict[int, tuple]]


class ClusterReader(DiskReader):
    """A virtual disk mapped through paged cluster tables.

    Subclasses set ``cluster_bits``/``virtual_size`` and implement
    ``_decode_page(page_index)`` returning a ``Page`` or None when every
    cluster of the page reads as zeros.
    """

    fmt = "image"

    def __init__(self, view: FileView, virtual_size: int, cluster_bits: int) -> None:
        self.view = view
        self.virtual_size = virtual_size
        self.cluster_bits = cluster_bits
        self.cluster_size = 1 << cluster_bits
        self.page_bits = PAGE_ENTRIES.bit_length() - 1
        self.n_clusters = (virtual_size + self.cluster_size - 1) >> cluster_bits
        self.n_pages = (self.n_clusters + PAGE_ENTRIES - 1) >> self.page_bits
        self._pages: collections.OrderedDict[int, Page | None] = collections.OrderedDict()
        self._pages_lock = threading.Lock()
        #: How many reads the copy pipeline may run at once (see prefetch_blocks).
        self.parallel_reads = 1
        self._decompress: Callable[[bytes | memoryview, int, str], bytes] = inflate_cluster

    # subclass hook -------------------------------------------------------------------------
    def _decode_page(self, page: int) -> Page | None:
        raise NotImplementedError

    def _page(self, page: int) -> Page | None:
        cache = self._pages
        with self._pages_lock:
            if page in cache:
                cache.move_to_end(page)
                return cache[page]
        found = self._decode_page(page)
        with self._pages_lock:
            cache[page] = found
            if len(cache) > PAGE_CACHE:
                cache.popitem(last=False)
        return found

    def validate_all(self) -> dict[str, int]:
        """Decode every page once (validating it) and count cluster kinds."""
        data = compressed = 0
        for page in range(self.n_pages):
            found = self._decode_page(page)
            if found is None:
                continue
            hosts, special = found
            data += sum(1 for h in hosts if h > 0)
            for value in special.values():
                if value[0] == "c":
                    compressed += 1
                else:
                    data += 1
        if compressed:
            self.parallel_reads = workers()
        return {"allocated_clusters": data + compressed, "compressed_clusters": compressed}

    # extents -------------------------------------------------------------------------------
    def extents(self) -> Iterator[Extent]:
        cs = self.cluster_size
        size = self.virtual_size
        run_start = 0
        run_zero: bool | None = None
        for page in range(self.n_pages):
            base = (page << self.page_bits) << self.cluster_bits
            found = self._page(page)
            if found is None:
                pieces: Iterator[tuple[int, int, bool]] = iter(((base, PAGE_ENTRIES * cs, True),))
            else:
                pieces = self._page_pieces(base, found)
            for off, _length, zero in pieces:
                if off >= size:
                    break
                if zero is not run_zero:
                    if run_zero is not None and off > run_start:
                        yield Extent(run_start, off - run_start, run_zero)
                    run_start = off
                    run_zero = zero
        if run_zero is not None and size > run_start:
            yield Extent(run_start, size - run_start, run_zero)

    def _page_pieces(self, base: int, found: Page) -> Iterator[tuple[int, int, bool]]:
        """Yield (offset, length, zero) transitions inside one page."""
        hosts, special = found
        cs = self.cluster_size
        off = base
        prev: bool | None = None
        for index, host in enumerate(hosts):
            if host >= 0:
                zero = host == 0
                if zero is not prev:
                    yield off, cs, zero
                    prev = zero
            else:
                value = special[index]
                if value[0] == "c":
                    if prev is not False:
                        yield off, cs, False
                        prev = False
                else:
                    sub_off = off
                    for sub_host, sub_len in value[1]:
                        zero = sub_host == 0
                        if zero is not prev:
                            yield sub_off, sub_len, zero
                            prev = zero
                        sub_off += sub_len
            off += cs

    # reads ---------------------------------------------------------------------------------
    def read(self, offset: int, length: int) -> bytes:
        self._check_range(offset, length)
        if length == 0:
            return b""
        return self._assemble(self._pieces(offset, length))

    direct_readinto = True
    concurrent_reads = True  # preads and a locked page cache

    def readinto(self, offset: int, buf: memoryview) -> None:
        length = len(buf)
        self._check_range(offset, length)
        if length == 0:
            return
        pieces = self._pieces(offset, length)
        compressed = [p for p in pieces if type(p) is tuple and p[0] == "c"]
        inflated = self._inflate_all(compressed) if compressed else {}
        pos = 0
        for piece in pieces:
            if type(piece) is int:
                n = piece
                fill_zero(buf[pos : pos + n])
            elif piece[0] == "run":
                n = piece[2]
                got = self.view.readinto(piece[1], buf[pos : pos + n])
                if got < n:
                    # A data cluster ending past EOF reads as zeros (see _read_data).
                    fill_zero(buf[pos + got : pos + n])
            else:
                _, _, within, n = piece
                buf[pos : pos + n] = memoryview(inflated[id(piece)])[within : within + n]
            pos += n

    def _check_range(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.virtual_size:
            raise errors.Invalid(
                f"read of {length} bytes at {offset} is outside the {self.fmt} disk"
            )

    def _pieces(self, offset: int, length: int) -> list:
        """Plan a read: n zero bytes (an int), ("run", host, n) reads, ("c", value, within, n)."""
        cbits = self.cluster_bits
        cs = self.cluster_size
        pbits = self.page_bits
        pmask = PAGE_ENTRIES - 1
        pieces: list = []
        run_host = -1
        run_len = 0
        zero_len = 0
        pos = offset
        end = offset + length
        page_index = -1
        found: Page | None = None
        while pos < end:
            ci = pos >> cbits
            within = pos - (ci << cbits)
            n = cs - within
            if n > end - pos:
                n = end - pos
            if ci >> pbits != page_index:
                page_index = ci >> pbits
                found = self._page(page_index)
            host = 0 if found is None else found[0][ci & pmask]
            if host > 0:
                host += within
                if run_len and run_host + run_len == host and run_len + n <= MAX_RUN:
                    run_len += n
                else:
                    if zero_len:
                        pieces.append(zero_len)
                        zero_len = 0
                    if run_len:
                        pieces.append(("run", run_host, run_len))
                    run_host = host
                    run_len = n
            elif host == 0:
                if run_len:
                    pieces.append(("run", run_host, run_len))
                    run_len = 0
                zero_len += n
            else:
                if run_len:
                    pieces.append(("run", run_host, run_len))
                    run_len = 0
                if zero_len:
                    pieces.append(zero_len)
                    zero_len = 0
                value = found[1][ci & pmask]  # type: ignore[index]
                if value[0] == "c":
                    pieces.append(("c", value, within, n))
                else:
                    self._sub_pieces(pieces, value[1], within, n)
            pos += n
        if run_len:
            pieces.append(("run", run_host, run_len))
        if zero_len:
            pieces.append(zero_len)
        return pieces

    def _sub_pieces(self, pieces: list, subs: tuple, within: int, n: int) -> None:
        """Append the pieces of [within, within+n) of a subclustered cluster."""
        sub_off = 0
        for sub_host, sub_len in subs:
            lo = max(within, sub_off)
            hi = min(within + n, sub_off + sub_len)
            if lo < hi:
                if sub_host:
                    pieces.append(("run", sub_host + (lo - sub_off), hi - lo))
                else:
                    pieces.append(hi - lo)
            sub_off += sub_len

    def _read_data(self, host: int, length: int) -> bytes:
        data = self.view.pread(host, length)
        if len(data) < length:
            # NOTE(ims): a data cluster may end past EOF (qemu pads such reads
            # with zeros); its start was checked to be inside the file.
            data += zeros(length - len(data))
        return data

    def _assemble(self, pieces: list) -> bytes:
        compressed = [p for p in pieces if type(p) is tuple and p[0] == "c"]
        inflated: dict[int, bytes] = {}
        if compressed:
            inflated = self._inflate_all(compressed)
        out: list[bytes] = []
        for piece in pieces:
            if type(piece) is int:
                out.append(zeros(piece))
            elif piece[0] == "run":
                out.append(self._read_data(piece[1], piece[2]))
            else:
                _, value, within, n = piece
                data = inflated[id(piece)]
                out.append(data if within == 0 and n == len(data) else data[within : within + n])
        if len(out) == 1:
            return out[0]
        return b"".join(out)

    def _inflate_all(self, compressed: list[tuple]) -> dict[int, bytes]:
        """Read compressed clusters with coalesced reads; inflate them in parallel."""
        # Group clusters whose stored bytes lie close together into one pread.
        groups: list[tuple[int, bytes, list[tuple]]] = []
        start = end = -1
        members: list[tuple] = []
        for piece in compressed:
            _, value, _, _ = piece
            c_off, c_len = value[1], value[2]
            if members and start <= c_off <= end + 4096 and c_off + c_len - start <= MAX_RUN:
                end = max(end, c_off + c_len)
                members.append(piece)
                continue
            if members:
                groups.append((start, self.view.pread(start, end - start), members))
            start, end, members = c_off, c_off + c_len, [piece]
        if members:
            groups.append((start, self.view.pread(start, end - start), members))
        jobs: list[tuple[tuple, memoryview]] = []
        for g_start, buf, g_members in groups:
            view = memoryview(buf)
            for piece in g_members:
                c_off, c_len = piece[1][1], piece[1][2]
                jobs.append((piece, view[c_off - g_start : c_off - g_start + c_len]))
        cs = self.cluster_size
        fmt = self.fmt
        decompress = self._decompress

        def run(batch: list[tuple[tuple, memoryview]]) -> list[tuple[int, bytes]]:
            return [(id(piece), decompress(chunk, cs, fmt)) for piece, chunk in batch]

        n_workers = workers()
        if len(jobs) < 4 or n_workers == 1:
            return dict(run(jobs))
        step = (len(jobs) + n_workers - 1) // n_workers
        batches = [jobs[i : i + step] for i in range(0, len(jobs), step)]
        futures = [pool().submit(run, batch) for batch in batches[1:]]
        result = dict(run(batches[0]))
        for future in futures:
            result.update(future.result())
        return result


class TableFormat(DiskFormat):
    """A read-only format whose reader validates its tables in ``validate_all``.

    ``reader_class`` takes a FileView; ``validate_all`` returns the details.
    """

    reader_class: Any = None

    def _validated(self, file: BinaryIO) -> tuple[Any, dict[str, Any]]:
        reader = self.reader_class(FileView(file, self.name))
        return reader, reader.validate_all()

    def inspect(self, file: BinaryIO) -> ImageInfo:
        reader, details = self._validated(file)
        return ImageInfo(
            format=self.name,
            virtual_size=reader.virtual_size,
            actual_size=reader.view.size,
            cluster_size=reader.cluster_size,
            details=details,
        )

    def open(self, file: BinaryIO) -> DiskReader:
        return self._validated(file)[0]
