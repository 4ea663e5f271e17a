#!/usr/bin/env python3
"""Time images moving through IMS to the S3 and Swift stores against the stores' own clients.

usage: bench/stores.py [--size-mib N] [--runs N] [--threads N] [--s3-part-mib N]
                       [--swift-segment-mib N] [--drivers s3,swift] [--workdir DIR]
                       [--ours api|driver|MODULE:FUNCTION] [--big-mib N]
                       [--set GROUP.OPTION=VALUE ...]

Starts a real Swift with s3api on loopback (tests/real/swift_server.py),
writes an N MiB random file (default 1024) and, for each store, moves that
file up and down with both sides in the same run, alternating which goes first:

- ours (``--ours api``, the default): a real ``ims-api`` under gunicorn with
  the two stores as backends (``s3`` on s3api, ``swift``), on IMS's default
  part sizes and threads (``--set group.option=value`` changes them). The
  file goes up with ``PUT /v2/images/{id}/file`` (sent with sendfile,
  Content-Length set) and comes back with ``GET /v2/images/{id}/file`` into a
  file; the image's size and checksum are checked after every upload, the
  download against the source on the first run. ``--ours driver`` calls the
  store drivers' ``add()`` and ``get()`` in this process instead, with the
  references' part size and threads;
- theirs: boto3 ``upload_file``/``download_file`` (``--s3-part-mib`` parts and
  threshold, ``--threads`` concurrency); ``swift upload --use-slo -S
  <--swift-segment-mib> --segment-threads <--threads>`` and ``swift download``
  (both with ``--ignore-checksum``).

It prints, per side, the best and the median seconds of the alternating runs,
the best MB/s and the median CPU seconds of every process involved (client,
ims-api, Swift's servers: the machine may be shared, CPU time is the figure
that noise moves least), and the ratio ours/theirs in throughput of the best
runs, with PASS when that ratio is at least 0.8, and the ceiling the CPU
sets on that ratio (ours' least CPU seconds spread over every core: the
store's servers run on the same cores). Through the API it also
prints the peak RSS of the ims-api workers during each operation;
``--big-mib N`` then moves an N MiB (sparse) image through each store and
prints that peak against the 200 MiB bound.

The "ours" side is a function ``(kinds, env) -> {kind: Side}``; pass
``--ours module:function`` to time another path against the same references.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import http.client
import importlib
import json
import os
import resource
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

from bench.api import peak_rss_mib, worker_pids  # noqa: E402
from tests.functional.servers import IMSServer  # noqa: E402
from tests.real import store_backends as backends  # noqa: E402
from tests.real.swift_server import SwiftServer  # noqa: E402

MiB = 1 << 20
READ_CHUNK = 4 * MiB
TARGET = 0.8
RSS_LIMIT_MIB = 200
SWIFT_CLI = shutil.which("swift", path="/usr/bin") or "swift"
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclasses.dataclass(frozen=True)
class Settings:
    threads: int
    s3_part: int  # bytes
    swift_segment: int  # bytes


@dataclasses.dataclass
class Env:
    """What a side factory may use: the servers, the settings, a place for files."""

    server: SwiftServer
    settings: Settings
    work: Path
    source: str
    #: Closes what the factories start (servers), when the bench ends.
    stack: contextlib.ExitStack
    #: Processes whose CPU time counts, by group, besides this one and its children.
    pids: dict[str, Callable[[], list[int]]]
    #: Processes whose peak RSS is reported (set by a factory that starts a server).
    rss_pids: Callable[[], list[int]] = list
    #: ims.conf options over IMS's defaults ({group: {option: value}}), for the API side.
    ims_conf: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)


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


# -- ours: the driver, called directly ---------------------------------------


def store_options(kind: str, settings: Settings) -> dict[str, int]:
    """The driver options matching the references' part size and concurrency."""
    if kind == "s3":
        mib = settings.s3_part // MiB
        return {
            "s3_store_large_object_size": mib,
            "s3_store_large_object_chunk_size": mib,
            "s3_store_thread_pools": settings.threads,
        }
    mib = settings.swift_segment // MiB
    return {
        "swift_store_large_object_size": mib,
        "swift_store_large_object_chunk_size": mib,
        "swift_store_thread_pools": settings.threads,
    }


class DriverSide:
    """Ours, without the API: an IMS store driver called in this process."""

    name = "ims driver"

    def __init__(self, kind: str, env: Env) -> None:
        options = store_options(kind, env.settings)
        self.store = backends.make_store(kind, env.server, env.work, **options)

    def upload(self, path: str, size: int) -> str:
        return self.store.add(str(uuid.uuid4()), file_chunks(path), size).url

    def download(self, handle: str, out: str) -> None:
        with open(out, "wb") as dst:
            for chunk in self.store.get(handle):
                dst.write(chunk)

    def remove(self, handle: str) -> None:
        self.store.delete(handle)


def driver_sides(kinds: list[str], env: Env) -> dict[str, Side]:
    return {kind: DriverSide(kind, env) for kind in kinds}


# -- ours: through the Image API ---------------------------------------------

API_HEADERS = {"X-Project-Id": "bench", "X-Roles": "admin,member,reader"}


def start_api(env: Env, kinds: list[str]) -> IMSServer:
    """Start ims-api with one backend per kind, named after its type.

    The stores run on IMS's defaults (part sizes, threads) unless ``env.ims_conf``
    says otherwise: the point is what an operator gets.
    """
    extra: dict[str, dict[str, str]] = {
        "DEFAULT": {"enabled_backends": ", ".join(f"{kind}:{kind}" for kind in kinds)},
        "glance_store": {"default_backend": kinds[0]},
    }
    for kind in kinds:
        name = f"bench-{uuid.uuid4().hex[:12]}"
        make = backends.s3_options if kind == "s3" else backends.swift_options
        extra[kind] = {key: str(value).lower() if isinstance(value, bool) else str(value)
                       for key, value in make(env.server, name).items()}  # fmt: skip
    for group, values in env.ims_conf.items():
        extra.setdefault(group, {}).update(values)
    api = IMSServer(env.work, extra_conf=extra)
    env.stack.callback(api.stop)
    api.start()
    return api


def api_pids(api: IMSServer) -> list[int]:
    """The gunicorn master and its workers."""
    assert api.proc is not None
    master = api.proc.pid
    return [master, *worker_pids(master)]


class ApiSide:
    """Ours: ims-api, over HTTP, storing into one of its backends."""

    name = "ims-api"

    def __init__(self, kind: str, api: IMSServer, expect_md5: str) -> None:
        self.kind = kind
        self.api = api
        self.expect_md5 = expect_md5

    def _connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.api.port, timeout=600)

    def _json(self, method: str, path: str, body: object = None) -> dict:
        conn = self._connection()
        try:
            headers = dict(API_HEADERS)
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        if resp.status >= 300:
            sys.exit(f"{method} {path}: {resp.status} {raw[:500]!r}")
        return json.loads(raw) if raw else {}

    def upload(self, path: str, size: int) -> str:
        image = self._json(
            "POST",
            "/v2/images",
            {"name": "bench", "disk_format": "raw", "container_format": "bare"},
        )
        conn = self._connection()
        try:
            conn.putrequest("PUT", f"/v2/images/{image['id']}/file")
            headers = {
                **API_HEADERS,
                "Content-Type": "application/octet-stream",
                "Content-Length": str(size),
                "X-Image-Meta-Store": self.kind,
            }
            for key, value in headers.items():
                conn.putheader(key, value)
            conn.endheaders()
            # PERF(ims): sendfile, so the client costs next to no CPU.
            assert conn.sock is not None
            with open(path, "rb") as src:
                conn.sock.sendfile(src)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        if resp.status != 204:
            sys.exit(f"upload to {self.kind}: {resp.status} {raw[:500]!r}")
        return str(image["id"])

    def verify(self, handle: str, size: int) -> None:
        """Check what the API says it stored (not timed)."""
        image = self._json("GET", f"/v2/images/{handle}")
        got = (image["status"], image["size"], image["checksum"], image.get("stores"))
        if got != ("active", size, self.expect_md5, self.kind):
            sys.exit(f"{self.kind}: the image is {got}, not active/{size}/{self.expect_md5}")

    def download(self, handle: str, out: str) -> None:
        conn = self._connection()
        try:
            conn.request("GET", f"/v2/images/{handle}/file", headers=API_HEADERS)
            resp = conn.getresponse()
            if resp.status != 200:
                sys.exit(f"download from {self.kind}: {resp.status} {resp.read(500)!r}")
            buf = bytearray(MiB)
            view = memoryview(buf)
            with open(out, "wb", buffering=0) as dst:
                while count := resp.readinto(buf):
                    dst.write(view[:count])
        finally:
            conn.close()

    def remove(self, handle: str) -> None:
        self._json("DELETE", f"/v2/images/{handle}")


def api_sides(kinds: list[str], env: Env) -> dict[str, Side]:
    """The default "ours" side: one ims-api with a backend per store kind."""
    api = start_api(env, kinds)
    env.pids["ims"] = lambda: api_pids(api)
    env.rss_pids = lambda: api_pids(api)[1:]
    expect_md5 = hashlib.md5(usedforsecurity=False)
    for chunk in file_chunks(env.source):
        expect_md5.update(chunk)
    return {kind: ApiSide(kind, api, expect_md5.hexdigest()) for kind in kinds}


# -- theirs ------------------------------------------------------------------


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


# -- measuring ---------------------------------------------------------------


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    for chunk in file_chunks(path):
        digest.update(chunk)
    return digest.hexdigest()


def process_cpu(pid: int) -> float:
    """User + system seconds of a live process (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def reset_peak_rss(pid: int) -> None:
    # Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0).
    with contextlib.suppress(OSError), open(f"/proc/{pid}/clear_refs", "w") as refs:
        refs.write("5")


@dataclasses.dataclass
class Sample:
    seconds: float
    cpu: float
    rss_mib: float | None
    #: CPU seconds by group (client, swift, ims).
    split: dict[str, float]


class Meter:
    """Wall time, CPU time of every process involved and the API's peak RSS."""

    def __init__(self, env: Env) -> None:
        self.env = env

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far: this process and its children ("client"), and each group."""
        own = resource.getrusage(resource.RUSAGE_SELF)
        # The swift CLI runs as children, counted once they are waited for.
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        used = {"client": own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime}
        for group, pids in self.env.pids.items():
            used[group] = sum(process_cpu(pid) for pid in pids())
        return used

    def __call__(self, func: Callable[[], object], track_rss: bool) -> Sample:
        workers = self.env.rss_pids() if track_rss else []
        for pid in workers:
            reset_peak_rss(pid)
        before = self.cpu()
        started = time.perf_counter()
        func()
        seconds = time.perf_counter() - started
        split = {group: used - before[group] for group, used in self.cpu().items()}
        rss = max((peak_rss_mib(pid) for pid in workers), default=None)
        return Sample(seconds, sum(split.values()), rss, split)


def describe(sample: Sample) -> str:
    split = " ".join(f"{group} {used:.1f}" for group, used in sample.split.items())
    rss = "" if sample.rss_mib is None else f", peak worker RSS {sample.rss_mib:.0f} MiB"
    return f"{sample.seconds:6.2f}s cpu {sample.cpu:5.1f}s ({split}){rss}"


def measure(
    kind: str,
    sides: dict[str, Side],
    meter: Meter,
    source: str,
    size: int,
    runs: int,
    expect: str,
    out: str,
) -> dict[tuple[str, str], list[Sample]]:
    """Alternate the sides, upload then download, ``runs`` times each."""
    samples: dict[tuple[str, str], list[Sample]] = {}
    for run in range(runs):
        order = ["ours", "theirs"] if run % 2 == 0 else ["theirs", "ours"]
        for who in order:
            side = sides[who]
            handle = ""

            def up(side: Side = side) -> None:
                nonlocal handle
                handle = side.upload(source, size)

            ours = who == "ours"
            samples.setdefault((who, "upload"), []).append(meter(up, ours))
            verify = getattr(side, "verify", None)
            if verify is not None:
                verify(handle, size)
            samples.setdefault((who, "download"), []).append(
                meter(lambda side=side, handle=handle: side.download(handle, out), ours)
            )
            if run == 0 and (os.path.getsize(out) != size or sha256(out) != expect):
                sys.exit(f"{kind} {who}: downloaded data differs from the source")
            os.unlink(out)
            side.remove(handle)
            for op in ("upload", "download"):
                print(
                    f"  run {run + 1} {kind:5} {who:6} {op:8} {describe(samples[(who, op)][-1])}"
                )
    return samples


def big_image(kind: str, side: Side, meter: Meter, work: Path, size_mib: int) -> str:
    """Move a sparse image of ``size_mib`` through the API; report the workers' peak RSS."""
    path = str(work / "big.bin")
    with open(path, "wb") as dst:
        dst.truncate(size_mib * MiB)
    handle = ""

    def up() -> None:
        nonlocal handle
        handle = side.upload(path, size_mib * MiB)

    try:
        upload = meter(up, True)
        download = meter(lambda: side.download(handle, os.devnull), True)
        side.remove(handle)
    finally:
        os.unlink(path)
    peak = max(upload.rss_mib or 0.0, download.rss_mib or 0.0)
    verdict = "PASS" if peak < RSS_LIMIT_MIB else "FAIL"
    return (
        f"{kind:6} {size_mib} MiB image: up {upload.seconds:.1f}s, down {download.seconds:.1f}s, "
        f"peak worker RSS up {upload.rss_mib:.0f} MiB, down {download.rss_mib:.0f} MiB "
        f"(< {RSS_LIMIT_MIB}: {verdict})"
    )


OURS = {"api": api_sides, "driver": driver_sides}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--s3-part-mib", type=int, default=16)
    parser.add_argument("--swift-segment-mib", type=int, default=100)
    parser.add_argument("--drivers", default="s3,swift")
    parser.add_argument("--workdir", default=None)
    parser.add_argument(
        "--ours", default="api", help="api, driver, or MODULE:FUNCTION making the ours sides"
    )
    parser.add_argument("--big-mib", type=int, default=0, help="API only: RSS check size")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="GROUP.OPTION=VALUE",
        help="API only: an ims.conf option over IMS's defaults (repeatable), e.g. "
        "s3.s3_store_thread_pools=8",
    )
    args = parser.parse_args()

    make_ours: Callable[[list[str], Env], dict[str, Side]]
    if args.ours in OURS:
        make_ours = OURS[args.ours]
    else:
        module, _, func = args.ours.partition(":")
        make_ours = getattr(importlib.import_module(module), func)
    settings = Settings(args.threads, args.s3_part_mib * MiB, args.swift_segment_mib * MiB)
    kinds = args.drivers.split(",")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="ims-storebench-"))
    work.mkdir(parents=True, exist_ok=True)
    size = args.size_mib * MiB
    source, out = str(work / "source.bin"), str(work / "download.bin")

    server = SwiftServer()
    results = []
    big_lines = []
    with contextlib.ExitStack() as stack:
        if args.workdir:
            stack.callback(shutil.rmtree, work / "swift", ignore_errors=True)
            stack.callback(contextlib.suppress(FileNotFoundError)(os.unlink), source)
        else:
            stack.callback(shutil.rmtree, work, ignore_errors=True)
        with open(source, "wb") as dst:
            for _ in range(args.size_mib):
                dst.write(os.urandom(MiB))
        expect = sha256(source)
        stack.callback(server.stop)
        started = time.perf_counter()
        server.start(work / "swift")
        print(
            f"Swift up in {time.perf_counter() - started:.1f}s; {args.size_mib} MiB file; "
            f"{settings}; ours: {args.ours}; load average {load_average()}"
        )
        env = Env(server, settings, work, source, stack, {"swift": server.pids})
        for item in args.set:
            name, _, value = item.partition("=")
            group, _, option = name.rpartition(".")
            env.ims_conf.setdefault(group or "DEFAULT", {})[option] = value
        ours_sides = make_ours(kinds, env)
        meter = Meter(env)
        for kind in kinds:
            sides = {"ours": ours_sides[kind], "theirs": theirs_side(kind, server, settings)}
            samples = measure(kind, sides, meter, source, size, args.runs, expect, out)
            for op in ("upload", "download"):
                results.append(
                    (kind, op, sides["theirs"].name, samples[("ours", op)],
                     samples[("theirs", op)])
                )  # fmt: skip
            if args.big_mib and env.rss_pids():
                big_lines.append(big_image(kind, ours_sides[kind], meter, work, args.big_mib))
        print(f"load average at the end: {load_average()}")

    return report(results, big_lines, size, args.runs)


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def report(results: list, big_lines: list[str], size: int, runs: int) -> int:
    mb = size / 1e6
    print(
        f"\n{'store':6} {'op':8} {'ours s':>7} {'(med)':>6} {'MB/s':>6} {'cpu s':>6}  "
        f"{'theirs s':>8} {'(med)':>6} {'MB/s':>6} {'cpu s':>6}  {'ratio':>5}  result"
    )
    failed = False
    for kind, op, theirs_name, ours_runs, theirs_runs in results:
        ours = min(sample.seconds for sample in ours_runs)
        theirs = min(sample.seconds for sample in theirs_runs)
        ratio = theirs / ours  # throughput ours / theirs
        verdict = "PASS" if ratio >= TARGET else "FAIL"
        failed |= verdict == "FAIL"
        print(
            f"{kind:6} {op:8} {ours:7.2f} {median(ours_runs, 'seconds'):6.2f} "
            f"{mb / ours:6.1f} {median(ours_runs, 'cpu'):6.1f}  "
            f"{theirs:8.2f} {median(theirs_runs, 'seconds'):6.2f} "
            f"{mb / theirs:6.1f} {median(theirs_runs, 'cpu'):6.1f}  "
            f"{ratio:5.2f}  {verdict}  vs {theirs_name}"
        )
        # Every process shares this machine's cores: ours cannot finish before
        # its least CPU time spread over all of them, whatever it overlaps.
        cores = os.cpu_count() or 1
        floor = min(sample.cpu for sample in ours_runs) / cores
        print(
            f"{'':16}cpu ceiling: ours needs >= {floor:.2f} s on {cores} cores, "
            f"so ratio <= {theirs / floor:.2f}"
        )
        rss = [sample.rss_mib for sample in ours_runs if sample.rss_mib is not None]
        if rss:
            print(f"{'':16}peak ims-api worker RSS {max(rss):.0f} MiB")
    print(
        f"target: ours/theirs >= {TARGET} (best of {runs} alternating runs; cpu: median, "
        "all processes)"
    )
    for line in big_lines:
        print(line)
        failed |= "FAIL" in line
    return 1 if failed else 0


def median(samples: list[Sample], field: str) -> float:
    return statistics.median(getattr(sample, field) for sample in samples)


if __name__ == "__main__":
    sys.exit(main())
