"""The part pipeline shared by the S3 and Swift stores: sizes, re-chunking, memory bound."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from ims.drivers.stores._parts import (
    ChunkReader,
    MiB,
    PartAborted,
    PartLimits,
    read_ranges,
    stream_parts,
    upload_parts,
)
from ims.drivers.stores.s3 import S3_LIMITS
from ims.drivers.stores.swift import DEFAULT_LIMITS as SWIFT_LIMITS

GiB = 1024 * MiB
TiB = 1024 * GiB


def total(plan, parts: int) -> int:  # noqa: ANN001 - a planner
    return sum(plan(number) for number in range(1, parts + 1))


@pytest.mark.parametrize("size", [12 * MiB, 6 * GiB, 100 * GiB, TiB, 5 * TiB])
def test_known_size_fits_in_max_parts(size: int) -> None:
    plan = S3_LIMITS.planner(10 * MiB, size)
    part = plan(1)
    assert part % MiB == 0
    assert part >= 10 * MiB
    assert -(-size // part) <= S3_LIMITS.max_parts
    assert part <= S3_LIMITS.max_size
    assert plan(1) == plan(9999)  # equal parts


def test_known_small_size_keeps_configured_part() -> None:
    assert S3_LIMITS.planner(10 * MiB, 6 * GiB)(1) == 10 * MiB


def test_part_size_clamped_to_service_minimum() -> None:
    assert PartLimits(5 * MiB, GiB, 100).planner(MiB, None)(1) == 5 * MiB


@pytest.mark.parametrize(("limits", "part"), [(S3_LIMITS, 10 * MiB), (SWIFT_LIMITS, 200 * MiB)])
def test_unknown_size_grows_parts_to_cover_terabytes(limits: PartLimits, part: int) -> None:
    plan = limits.planner(part, None)
    assert plan(1) == part
    assert plan(limits.max_parts) <= limits.max_size
    assert all(plan(n) <= plan(n + 1) for n in range(1, limits.max_parts))
    assert total(plan, limits.max_parts) >= 3 * TiB


def test_reader_recuts_chunks() -> None:
    reader = ChunkReader([b"abc", b"", b"defgh", b"ij"])
    assert reader.peek(4) >= 4
    assert reader.read(4) == b"abcd"
    assert reader.read(5) == b"efghi"
    assert reader.read(5) == b"j"
    assert reader.read(5) == b""
    assert reader.consumed == 10


def test_reader_drain_and_iterate() -> None:
    reader = ChunkReader([b"abc", b"def", b"gh"])
    assert reader.peek(2) == 3
    assert list(reader) == [b"abc", b"def", b"gh"]
    assert reader.consumed == 8
    reader = ChunkReader([b"abc"])
    assert reader.peek(10) == 3
    assert reader.drain() == b"abc"
    assert reader.consumed == 3


def test_reader_hands_whole_chunks_over_without_copy() -> None:
    chunk = bytes(1000)
    reader = ChunkReader([chunk, bytearray(b"tail")])
    assert reader.read(1000) is chunk
    buffer = bytearray(b"abcd")
    reader = ChunkReader([b"xy", buffer])
    reader.peek(6)
    buffer[:] = b"ZZZZ"  # a caller reusing its buffer must not change what was read
    assert reader.read(6) == b"xyabcd"


def test_reader_keeps_input_error() -> None:
    def broken() -> Iterator[bytes]:
        yield b"x"
        raise ValueError("gone")

    reader = ChunkReader(broken())
    with pytest.raises(ValueError):
        reader.read(10)
    assert isinstance(reader.error, ValueError)


class Meter:
    """Input that counts bytes handed out; a sender that counts bytes let go."""

    def __init__(self, size: int, chunk: int, fail_input_at: int | None = None) -> None:
        self.size, self.chunk, self.fail_input_at = size, chunk, fail_input_at
        self.lock = threading.Lock()
        self.outstanding = 0
        self.peak = 0
        self.sending = 0
        self.sent: list[int] = []

    def chunks(self) -> Iterator[bytes]:
        given = 0
        while given < self.size:
            if self.fail_input_at is not None and given >= self.fail_input_at:
                raise OSError("client went away")
            piece = min(self.chunk, self.size - given)
            given += piece
            with self.lock:
                self.outstanding += piece
                self.peak = max(self.peak, self.outstanding)
            yield bytes(piece)

    def send(self, number: int, data: bytes) -> int:
        with self.lock:
            self.sending += 1
        time.sleep(0.002)
        with self.lock:
            self.sending -= 1
            self.outstanding -= len(data)
            self.sent.append(number)
        return number


@pytest.mark.parametrize("threads", [1, 3])
def test_upload_parts_memory_bound_and_order(threads: int) -> None:
    part, chunk = 64 * 1024, 10_000
    meter = Meter(40 * part + 123, chunk)
    results = upload_parts(
        ChunkReader(meter.chunks()),
        lambda number: part,
        meter.send,
        threads,
        1000,
        lambda: AssertionError("too many"),
    )
    assert results == list(range(1, 42))
    assert meter.outstanding == 0
    assert meter.peak <= (threads + 1) * part + chunk


def test_upload_parts_stops_on_send_failure_and_waits() -> None:
    meter = Meter(100 * 1024, 1024)

    def send(number: int, data: bytes) -> int:
        if number == 3:
            raise ConnectionError("store went away")
        return meter.send(number, data)

    with pytest.raises(ConnectionError):
        upload_parts(ChunkReader(meter.chunks()), lambda n: 1024, send, 2, 1000, RuntimeError)
    assert meter.sending == 0
    assert len(meter.sent) < 99  # reading stopped early


def test_upload_parts_input_failure_waits_for_senders() -> None:
    meter = Meter(100 * 1024, 1024, fail_input_at=20 * 1024)
    with pytest.raises(OSError, match="client went away"):
        upload_parts(
            ChunkReader(meter.chunks()), lambda n: 4096, meter.send, 3, 1000, RuntimeError
        )
    assert meter.sending == 0


def test_upload_parts_refuses_too_many_parts() -> None:
    meter = Meter(10 * 1024, 1024)
    with pytest.raises(OverflowError):
        upload_parts(ChunkReader(meter.chunks()), lambda n: 1024, meter.send, 2, 5, OverflowError)
    assert meter.sending == 0


def test_upload_parts_sends_one_empty_part_for_empty_input() -> None:
    sent: list[bytes] = []
    upload_parts(ChunkReader([]), lambda n: 10, lambda n, d: sent.append(d), 1, 5, RuntimeError)
    assert sent == [b""]


def test_reader_take_hands_pieces_over_unjoined() -> None:
    first, second = b"abc", b"defgh"
    reader = ChunkReader([first, b"", second])
    pieces = list(reader.take(4))
    assert pieces[0] is first
    assert bytes(pieces[1]) == b"d"
    assert [bytes(piece) for piece in reader.take(10)] == [b"efgh"]
    assert list(reader.take(1)) == []
    assert reader.consumed == 8


def test_reader_readinto() -> None:
    reader = ChunkReader([b"abc", b"defgh"])
    buffer = bytearray(5)
    assert reader.readinto(buffer) == 5
    assert buffer == b"abcde"
    assert reader.readinto(buffer) == 3
    assert buffer[:3] == b"fgh"


def test_upload_parts_reuses_its_buffers() -> None:
    seen: set[int] = set()
    lock = threading.Lock()

    def send(number: int, data: bytearray) -> int:
        with lock:
            seen.add(id(data))
        time.sleep(0.001)
        return len(data)

    meter = Meter(30 * 4096 + 5, 1000)
    sizes = upload_parts(ChunkReader(meter.chunks()), lambda n: 4096, send, 2, 1000, RuntimeError)
    assert sizes == [4096] * 30 + [5]
    assert len(seen) <= 3  # threads + 1


class Streamed:
    """A sender of streamed parts: keeps what it got, watches concurrency."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.fail_at = fail_at
        self.lock = threading.Lock()
        self.parts: dict[int, bytes] = {}
        self.open = 0
        self.most_open = 0
        self.aborted: list[int] = []

    def send(self, number: int, pieces: Iterator[bytes | memoryview]) -> int:
        with self.lock:
            self.open += 1
            self.most_open = max(self.most_open, self.open)
        try:
            if number == self.fail_at:
                raise ConnectionError("store went away")
            try:
                data = b"".join(bytes(piece) for piece in pieces)
            except PartAborted:
                with self.lock:
                    self.aborted.append(number)
                raise
            time.sleep(0.002)  # the store syncs and answers
            with self.lock:
                self.parts[number] = data
            return len(data)
        finally:
            with self.lock:
                self.open -= 1


@pytest.mark.parametrize("threads", [1, 3])
def test_stream_parts_order_content_and_concurrency(threads: int) -> None:
    data = bytes(range(256)) * 400  # 102400 bytes
    sender = Streamed()
    sizes = stream_parts(
        ChunkReader([data[i : i + 3000] for i in range(0, len(data), 3000)]),
        lambda number: 10_000,
        sender.send,
        threads,
        1000,
        RuntimeError,
    )
    assert sizes == [10_000] * 10 + [2400]
    assert b"".join(sender.parts[n] for n in sorted(sender.parts)) == data
    assert sender.most_open <= threads


def test_stream_parts_holds_a_few_chunks_whatever_the_part_size() -> None:
    meter = Meter(200 * 1024, 1024)

    def send(number: int, pieces: Iterator[bytes | memoryview]) -> int:
        size = 0
        for piece in pieces:
            size += len(piece)
            with meter.lock:
                meter.outstanding -= len(piece)
        return size

    sizes = stream_parts(
        ChunkReader(meter.chunks()), lambda n: 100 * 1024, send, 2, 10, RuntimeError
    )
    assert sizes == [100 * 1024, 100 * 1024]
    assert meter.peak <= 3 * 1024


def test_stream_parts_input_failure_aborts_the_part_being_streamed() -> None:
    meter = Meter(100 * 1024, 1024, fail_input_at=25 * 1024)
    sender = Streamed()
    with pytest.raises(OSError, match="client went away"):
        stream_parts(
            ChunkReader(meter.chunks()), lambda n: 10 * 1024, sender.send, 3, 100, RuntimeError
        )
    assert sender.aborted == [3]  # never completed with part of its data
    assert sorted(sender.parts) == [1, 2]
    assert sender.open == 0


def test_stream_parts_stops_reading_when_a_send_fails() -> None:
    meter = Meter(100 * 1024, 1024)
    sender = Streamed(fail_at=2)
    with pytest.raises(ConnectionError):
        stream_parts(
            ChunkReader(meter.chunks()), lambda n: 10 * 1024, sender.send, 2, 100, RuntimeError
        )
    assert sender.open == 0
    assert len(sender.parts) < 9


def test_stream_parts_refuses_too_many_parts_and_sends_one_for_empty_input() -> None:
    meter = Meter(10 * 1024, 1024)
    with pytest.raises(OverflowError):
        stream_parts(
            ChunkReader(meter.chunks()), lambda n: 1024, Streamed().send, 2, 5, OverflowError
        )
    sender = Streamed()
    assert stream_parts(ChunkReader([]), lambda n: 10, sender.send, 1, 5, RuntimeError) == [0]


class Short(Exception):
    def __init__(self, got: int, wanted: int) -> None:
        super().__init__(got, wanted)
        self.got, self.wanted = got, wanted


class Ranges:
    """An object to fetch ranges of, watching concurrency."""

    def __init__(self, size: int, fail_at: int | None = None) -> None:
        self.data = bytes(range(256)) * (size // 256 + 1)
        self.data = self.data[:size]
        self.fail_at = fail_at
        self.lock = threading.Lock()
        self.open = 0
        self.most_open = 0
        self.fetched: list[int] = []

    def fetch(self, first: int, end: int) -> bytes:
        with self.lock:
            self.open += 1
            self.most_open = max(self.most_open, self.open)
            self.fetched.append(first)
        try:
            time.sleep(0.002)
            if first == self.fail_at:
                raise ConnectionError("store went away")
            return self.data[first:end]
        finally:
            with self.lock:
                self.open -= 1


@pytest.mark.parametrize("threads", [1, 4])
def test_read_ranges_in_order_within_bounds(threads: int) -> None:
    ranges = Ranges(100_000)
    pieces = list(read_ranges(ranges.fetch, 1000, 95_001, 7000, threads, Short))
    assert b"".join(pieces) == ranges.data[1000:95_001]
    assert all(len(piece) <= 7000 for piece in pieces)
    assert ranges.most_open <= threads
    assert list(read_ranges(ranges.fetch, 10, 10, 7000, threads, Short)) == []


def test_read_ranges_raises_the_fetch_error() -> None:
    ranges = Ranges(100_000, fail_at=21_000)
    with pytest.raises(ConnectionError):
        for _ in read_ranges(ranges.fetch, 0, 100_000, 7000, 2, Short):
            pass
    assert ranges.open == 0


def test_read_ranges_a_short_range_raises() -> None:
    ranges = Ranges(50_000)  # the object ends before the 70,000 bytes asked for
    with pytest.raises(Short) as info:
        b"".join(read_ranges(ranges.fetch, 0, 70_000, 7000, 2, Short))
    assert (info.value.got, info.value.wanted) == (1000, 7000)
    assert ranges.open == 0


def test_read_ranges_left_early_fetches_no_more() -> None:
    ranges = Ranges(1_000_000)
    stream = read_ranges(ranges.fetch, 0, 1_000_000, 1000, 3, Short)
    assert len(next(stream)) == 1000
    stream.close()
    assert ranges.open == 0
    assert len(ranges.fetched) <= 4  # the first and the three after it, at most


def test_stream_parts_a_sender_that_stops_reading_fails_the_upload() -> None:
    meter = Meter(50 * 1024, 1024)

    def lazy(number: int, pieces: Iterator[bytes | memoryview]) -> int:
        return len(next(iter(pieces)))

    with pytest.raises(RuntimeError, match="not read to its end"):
        stream_parts(ChunkReader(meter.chunks()), lambda n: 10 * 1024, lazy, 2, 100, OverflowError)
