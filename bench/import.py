#!/usr/bin/env python3
"""Time creating an image from a qcow2 in object storage, against qemu-img convert.

usage: bench/import.py [--size-mib N] [--runs N] [--workdir DIR] [--store swift|s3]

Makes an N MiB test disk (default 2048) with ../shared/tools/mkdisk.py,
converts it to qcow2 with qemu-img and puts it in a bucket of a real Swift's
S3 front (tests/real/swift_server.py). Then, alternating which goes first:

- ours: ``POST /v2/cloudimages/action`` on a real ims-api (gunicorn, image
  store in the same Swift) and polling the job until the image is active as
  zvhd2: fetching the qcow2 with ranged reads, converting and storing;
- theirs: ``qemu-img convert -f qcow2 -O qcow2`` of the same file on local
  disk (and ``-O raw`` for a second reference), no network, no hashing; and
  the same convert after a boto3 download of the file from the same S3
  (what a user would do by hand: fetch, then convert).

It prints the best and median seconds per side and the ratio ours/theirs
of the best runs (the machine may be shared; the best run is the least
disturbed). The two do not do the same work: ours also reads over HTTP,
compresses (zstd) and hashes (md5 + sha512) what it stores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests  # noqa: E402
from boto3.s3.transfer import TransferConfig  # noqa: E402

from tests.functional.servers import IMSServer  # noqa: E402
from tests.real import store_backends as backends  # noqa: E402
from tests.real.swift_server import SwiftServer  # noqa: E402

MiB = 1 << 20
MKDISK = Path(__file__).resolve().parents[2] / "shared" / "tools" / "mkdisk.py"


def make_source(workdir: Path, size_mib: int) -> tuple[Path, Path]:
    raw = workdir / "disk.raw"
    subprocess.run([sys.executable, str(MKDISK), str(raw), str(size_mib)], check=True)
    qcow2 = workdir / "disk.qcow2"
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)], check=True
    )
    return raw, qcow2


def start_ims(server: SwiftServer, workdir: Path, store: str) -> IMSServer:
    tag = uuid.uuid4().hex[:8]
    image_store: dict[str, str]
    if store == "swift":
        image_store = {
            k: str(v) for k, v in backends.swift_options(server, f"images-{tag}").items()
        }
        image_store.update(
            {"swift_store_large_object_size": "64", "swift_store_large_object_chunk_size": "64",
             "swift_store_thread_pools": "4"}
        )  # fmt: skip
    else:
        image_store = {k: str(v) for k, v in backends.s3_options(server, f"images-{tag}").items()}
        image_store.update(
            {"s3_store_large_object_chunk_size": "32", "s3_store_thread_pools": "4"}
        )
    ims = IMSServer(
        workdir,
        extra_conf={
            "DEFAULT": {"enabled_backends": f"images:{store}"},
            "glance_store": {"default_backend": "images"},
            "images": image_store,
            "imaging": {"object_store": "obs", "object_store_type": "s3"},
            "obs": {k: str(v) for k, v in backends.s3_options(server, f"obs-{tag}").items()},
            "jobs": {"poll_interval": "0.1"},
        },
    )
    return ims.start()


def ours(ims: IMSServer, project: str, ref: str, timeout: float = 3600) -> float:
    """Seconds from the create request to an active image."""
    http = requests.Session()
    http.headers.update({"X-Project-Id": project, "X-Roles": "member"})
    start = time.perf_counter()
    resp = http.post(
        f"{ims.url}/v2/cloudimages/action",
        json={"name": "bench", "image_url": ref, "min_disk": 1024, "os_version": "Other"},
        timeout=60,
    )
    resp.raise_for_status()
    job_id = resp.json()["job_id"]
    while True:
        job = http.get(f"{ims.url}/v1/{project}/jobs/{job_id}", timeout=60).json()
        if job["status"] == "SUCCESS":
            break
        if job["status"] == "FAIL":
            raise SystemExit(f"import failed: {job['fail_reason']}")
        if time.perf_counter() - start > timeout:
            raise SystemExit("import timed out")
        time.sleep(0.05)
    elapsed = time.perf_counter() - start
    image_id = job["entities"]["image_id"]
    image = http.get(f"{ims.url}/v2/images/{image_id}", timeout=60).json()
    assert image["status"] == "active" and image["disk_format"] == "zvhd2", image
    http.delete(f"{ims.url}/v2/images/{image_id}", timeout=60)
    return elapsed


def theirs(source: Path, fmt: str, workdir: Path) -> float:
    out = workdir / f"out.{fmt}"
    start = time.perf_counter()
    subprocess.run(
        ["qemu-img", "convert", "-f", "qcow2", "-O", fmt, str(source), str(out)], check=True
    )
    os.sync()  # ours is durable when it answers; count the flush for theirs too
    elapsed = time.perf_counter() - start
    out.unlink()
    return elapsed


def fetch_then_convert(s3: object, bucket: str, key: str, workdir: Path) -> float:
    local = workdir / "fetched.qcow2"
    start = time.perf_counter()
    s3.download_file(bucket, key, str(local))  # type: ignore[attr-defined]
    elapsed = time.perf_counter() - start
    elapsed += theirs(local, "qcow2", workdir)
    local.unlink()
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=2048)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--store", choices=("swift", "s3"), default="swift")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    if shutil.which("qemu-img") is None:
        raise SystemExit("needs qemu-img")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="ims-bench-import-"))
    workdir.mkdir(parents=True, exist_ok=True)
    raw, qcow2 = make_source(workdir, args.size_mib)
    print(
        f"disk: {args.size_mib} MiB raw, qcow2 {qcow2.stat().st_size / MiB:.0f} MiB; "
        f"{os.cpu_count()} CPUs"
    )
    server = SwiftServer()
    server.start(workdir / "swift")
    ims = None
    try:
        ims = start_ims(server, workdir, args.store)
        project = uuid.uuid4().hex
        bucket = f"{project}-bench"
        s3 = backends.s3_client(server)
        s3.create_bucket(Bucket=bucket)
        config = TransferConfig(multipart_threshold=64 * MiB, multipart_chunksize=64 * MiB)
        s3.upload_file(str(qcow2), bucket, "disk.qcow2", Config=config)
        ref = f"{bucket}:disk.qcow2"
        times: dict[str, list[float]] = {"ours": [], "qcow2": [], "raw": [], "fetch": []}
        for run in range(args.runs):
            order = list(times) if run % 2 == 0 else list(reversed(times))
            for side in order:
                if side == "ours":
                    times[side].append(ours(ims, project, ref))
                elif side == "fetch":
                    times[side].append(fetch_then_convert(s3, bucket, "disk.qcow2", workdir))
                else:
                    times[side].append(theirs(qcow2, side, workdir))
        labels = {
            "ours": f"IMS create from S3 -> zvhd2 in {args.store}",
            "qcow2": "qemu-img convert qcow2 -> qcow2 (local)",
            "raw": "qemu-img convert qcow2 -> raw (local)",
            "fetch": "S3 download + qemu-img convert -> qcow2",
        }
        for side, label in labels.items():
            best, median = min(times[side]), statistics.median(times[side])
            rate = args.size_mib / best
            print(f"{label:45s} best {best:7.2f} s  median {median:7.2f} s  {rate:7.1f} MiB/s")
        best = min(times["ours"])
        for ref_side in ("qcow2", "raw", "fetch"):
            print(f"ratio ours/{ref_side} (time, best runs): {best / min(times[ref_side]):.2f}")
    finally:
        if ims is not None:
            ims.stop()
        server.stop()
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
