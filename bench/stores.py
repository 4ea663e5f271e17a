#!/usr/bin/env python3
"""Time the S3 and Swift store drivers against the stores' own clients, side by side.

usage: bench/stores.py [--size-mib N] [--runs N] [--threads N] [--s3-part-mib N]
                       [--swift-segment-mib N] [--drivers s3,swift] [--workdir DIR]
                       [--ours MODULE:FUNCTION]

Starts a real Swift with s3api on loopback (tests/real/swift_server.py),
writes an N MiB random file (default 1024) and, for each driver, moves that
file up and down with both sides in the same run, alternating which goes first:

- ours: the IMS driver's ``add()`` fed by a 4 MiB file-chunk iterator, and
  ``get()`` written into a file;
- theirs: boto3 ``upload_file``/``download_file`` with the same part size,
  threshold and concurrency; ``swift upload --use-slo -S <segment>
  --segment-threads <threads>`` and ``swift download`` (both with
  ``--ignore-checksum``: the drivers leave hashing to the core).

It prints, per side, the best and the median seconds of the alternating runs
and the best MB/s, and the ratio ours/theirs in throughput of the best runs
(the machine may be shared: the best run is the one least disturbed), with
PASS when that ratio is at least 0.8.

The "ours" side is a function ``(kind, server, settings) -> Side``; pass
``--ours module:function`` to time another path (for example through the IMS
API) against the same references.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from boto3.s3.transfer import TransferConfig  # noqa: E402

from tests.real import store_backends as backends  # noqa: E402
from tests.real.swift_server import SwiftServer  # noqa: E402

MiB = 1 << 20
READ_CHUNK = 4 * MiB
TARGET = 0.8
SWIFT_CLI = shutil.which("swift", path="/usr/bin") or "swift"


@dataclasses.dataclass(frozen=True)
class Settings:
    threads: int
    s3_part: int  # bytes
    swift_segment: int  # bytes


class Side(Protocol):
    """One way of moving a file into a store and back."""

    name: str

    def upload(self, path: str, size: int) -> str:
        """Store the file; return a handle for download and remove."""

    def download(self, handle: str, out: str) -> None:
        """Write the stored object into ``out``."""

    def remove(self, handle: str) -> None:
        """Delete the stored object."""


def file_chunks(path: str, size: int = READ_CHUNK) -> Iterator[bytes]:
    with open(path, "rb", buffering=0) as src:
        while chunk := src.read(size):
            yield chunk


class DriverSide:
    """Ours: an IMS store driver called directly."""

    name = "ims driver"

    def __init__(self, kind: str, server: SwiftServer, settings: Settings, workdir: Path):
        mib = {"s3": settings.s3_part, "swift": settings.swift_segment}[kind] // MiB
        options = {
            "s3": {
                "s3_store_large_object_size": mib,
                "s3_store_large_object_chunk_size": mib,
                "s3_store_thread_pools": settings.threads,
            },
            "swift": {
                "swift_store_large_object_size": mib,
                "swift_store_large_object_chunk_size": mib,
                "swift_store_thread_pools": settings.threads,
            },
        }[kind]
        self.store = backends.make_store(kind, server, workdir, **options)

    def upload(self, path: str, size: int) -> str:
        return self.store.add(str(uuid.uuid4()), file_chunks(path), size).url

    def download(self, handle: str, out: str) -> None:
        with open(out, "wb") as dst:
            for chunk in self.store.get(handle):
                dst.write(chunk)

    def remove(self, handle: str) -> None:
        self.store.delete(handle)


def driver_side(kind: str, server: SwiftServer, settings: Settings) -> Side:
    """The default "ours" side: the driver itself."""
    # The directory only matters to filesystem stores.
    return DriverSide(kind, server, settings, Path(tempfile.gettempdir()))


class Boto3Side:
    """Theirs for S3: boto3's managed transfer (s3transfer)."""

    name = "boto3 transfer"

    def __init__(self, server: SwiftServer, settings: Settings) -> None:
        self.client = backends.s3_client(server)
        self.bucket = f"bench-{uuid.uuid4().hex[:12]}"
        self.client.create_bucket(Bucket=self.bucket)
        self.config = TransferConfig(
            multipart_threshold=settings.s3_part,
            multipart_chunksize=settings.s3_part,
            max_concurrency=settings.threads,
            use_threads=True,
        )

    def upload(self, path: str, size: int) -> str:
        key = str(uuid.uuid4())
        self.client.upload_file(path, self.bucket, key, Config=self.config)
        return key

    def download(self, handle: str, out: str) -> None:
        self.client.download_file(self.bucket, handle, out, Config=self.config)

    def remove(self, handle: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=handle)


class SwiftCliSide:
    """Theirs for Swift: the ``swift`` command line client."""

    name = "swift CLI"

    def __init__(self, server: SwiftServer, settings: Settings) -> None:
        self.auth = ["-A", server.auth_url, "-U", server.user, "-K", server.key]
        self.settings = settings
        self.container = f"bench-{uuid.uuid4().hex[:12]}"

    def _run(self, *args: str) -> None:
        subprocess.run([SWIFT_CLI, *self.auth, *args], check=True, capture_output=True)

    def upload(self, path: str, size: int) -> str:
        name = str(uuid.uuid4())
        self._run(
            "upload", "--use-slo", "-S", str(self.settings.swift_segment),
            "--segment-threads", str(self.settings.threads), "--ignore-checksum",
            "--object-name", name, self.container, path,
        )  # fmt: skip
        return name

    def download(self, handle: str, out: str) -> None:
        self._run("download", "--ignore-checksum", "-o", out, self.container, handle)

    def remove(self, handle: str) -> None:
        self._run("delete", self.container, handle)


def theirs_side(kind: str, server: SwiftServer, settings: Settings) -> Side:
    return Boto3Side(server, settings) if kind == "s3" else SwiftCliSide(server, settings)


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    for chunk in file_chunks(path):
        digest.update(chunk)
    return digest.hexdigest()


def timed(func: Callable[[], object]) -> float:
    started = time.perf_counter()
    func()
    return time.perf_counter() - started


def measure(
    kind: str, sides: dict[str, Side], source: str, size: int, runs: int, expect: str, out: str
) -> dict[tuple[str, str], list[float]]:
    """Alternate the sides, upload then download, ``runs`` times each."""
    times: dict[tuple[str, str], list[float]] = {}
    for run in range(runs):
        order = ["ours", "theirs"] if run % 2 == 0 else ["theirs", "ours"]
        for who in order:
            side = sides[who]
            handle = ""

            def up(side: Side = side) -> None:
                nonlocal handle
                handle = side.upload(source, size)

            times.setdefault((who, "upload"), []).append(timed(up))
            times.setdefault((who, "download"), []).append(
                timed(lambda side=side, handle=handle: side.download(handle, out))
            )
            if run == 0 and (os.path.getsize(out) != size or sha256(out) != expect):
                sys.exit(f"{kind} {who}: downloaded data differs from the source")
            os.unlink(out)
            side.remove(handle)
            print(
                f"  run {run + 1} {kind:5} {who:6} up {times[(who, 'upload')][-1]:6.2f}s "
                f"down {times[(who, 'download')][-1]:6.2f}s",
                flush=True,
            )
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--s3-part-mib", type=int, default=16)
    parser.add_argument("--swift-segment-mib", type=int, default=100)
    parser.add_argument("--drivers", default="s3,swift")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--ours", default=None, help="MODULE:FUNCTION making the ours side")
    args = parser.parse_args()

    make_ours: Callable[[str, SwiftServer, Settings], Side] = driver_side
    if args.ours:
        module, _, func = args.ours.partition(":")
        make_ours = getattr(importlib.import_module(module), func)
    settings = Settings(args.threads, args.s3_part_mib * MiB, args.swift_segment_mib * MiB)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="ims-storebench-"))
    work.mkdir(parents=True, exist_ok=True)
    size = args.size_mib * MiB
    source, out = str(work / "source.bin"), str(work / "download.bin")

    with open(source, "wb") as dst:
        for _ in range(args.size_mib):
            dst.write(os.urandom(MiB))
    expect = sha256(source)

    server = SwiftServer()
    started = time.perf_counter()
    server.start(work / "swift")
    print(
        f"Swift up in {time.perf_counter() - started:.1f}s; {args.size_mib} MiB file; {settings}"
    )
    results = []
    try:
        for kind in args.drivers.split(","):
            sides = {
                "ours": make_ours(kind, server, settings),
                "theirs": theirs_side(kind, server, settings),
            }
            times = measure(kind, sides, source, size, args.runs, expect, out)
            for op in ("upload", "download"):
                ours, theirs = times[("ours", op)], times[("theirs", op)]
                results.append((kind, op, sides["theirs"].name, ours, theirs))
    finally:
        server.stop()
        if args.workdir:
            shutil.rmtree(work / "swift", ignore_errors=True)
            os.unlink(source)
        else:
            shutil.rmtree(work, ignore_errors=True)

    mb = size / 1e6
    print(
        f"\n{'driver':6} {'op':8} {'ours s':>7} {'(med)':>6} {'MB/s':>6}  "
        f"{'theirs s':>8} {'(med)':>6} {'MB/s':>6}  {'ratio':>5}  result"
    )
    failed = False
    for kind, op, theirs_name, ours_runs, theirs_runs in results:
        ours, theirs = min(ours_runs), min(theirs_runs)
        ratio = theirs / ours  # throughput ours / theirs
        verdict = "PASS" if ratio >= TARGET else "FAIL"
        failed |= verdict == "FAIL"
        print(
            f"{kind:6} {op:8} {ours:7.2f} {statistics.median(ours_runs):6.2f} "
            f"{mb / ours:6.1f}  {theirs:8.2f} {statistics.median(theirs_runs):6.2f} "
            f"{mb / theirs:6.1f}  {ratio:5.2f}  {verdict}  vs {theirs_name}"
        )
    print(f"target: ours/theirs >= {TARGET} (best of {args.runs} alternating runs)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
