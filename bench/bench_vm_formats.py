#!/usr/bin/env python3
"""Time IMS's VM-format readers and writers against qemu-img, side by side.

usage: bench_vm_formats.py [--size-mib N] [--workdir DIR] [--mkdisk PATH]

Makes an N MiB disk with mkdisk.py (default 512), converts it with qemu-img
to each source format, then times the same conversions both ways and prints
"ratio = qemu seconds / IMS seconds" (above 1.0 means IMS is faster), best
wall time of --repeat runs, with the CPU seconds (user+sys, all threads) too
since wall time on a busy machine says little. Cases:
vmdk streamOptimized -> raw, vhdx dynamic -> raw, vhd dynamic -> raw,
vdi dynamic -> raw, raw -> vmdk streamOptimized, raw -> vhdx, raw -> vhd.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

from ims.drivers.formats.raw import RawFormat
from ims.drivers.formats.vdi import VdiFormat
from ims.drivers.formats.vhd import VhdFormat
from ims.drivers.formats.vhdx import VhdxFormat
from ims.drivers.formats.vmdk import VmdkFormat

FORMATS = {"vmdk": VmdkFormat(), "vhdx": VhdxFormat(), "vhd": VhdFormat(), "vdi": VdiFormat()}
QEMU_NAME = {"vhd": "vpc"}


def _timed(repeat: int, func, *args) -> tuple[float, float]:
    """Return the best (wall, cpu) seconds of ``repeat`` runs; cpu counts children."""
    best = (float("inf"), float("inf"))
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu0 = time.process_time()
        start = time.perf_counter()
        func(*args)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = time.process_time() - cpu0 + (after.ru_utime - before.ru_utime)
        cpu += after.ru_stime - before.ru_stime
        best = min(best, (wall, cpu))
    return best


def _drop(path: str) -> None:
    if os.path.exists(path):
        os.unlink(path)


def _ims_convert(src: str, src_fmt, dst: str, dst_fmt, options: dict[str, str]) -> None:
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        reader = src_fmt.open(fin)
        dst_fmt.write(reader, fout, options)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--mkdisk", default="/work/shared/tools/mkdisk.py")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case; best is kept")
    args = parser.parse_args()
    work = args.workdir or tempfile.mkdtemp(prefix="ims-vmbench-")
    os.makedirs(work, exist_ok=True)
    src = os.path.join(work, "disk.raw")
    if not os.path.exists(src):
        subprocess.run([sys.executable, args.mkdisk, src, str(args.size_mib)], check=True)
    sources = {
        "vmdk": ("vmdk", ["-o", "subformat=streamOptimized"]),
        "vhdx": ("vhdx", []),
        "vhd": ("vpc", ["-o", "subformat=dynamic"]),
        "vdi": ("vdi", []),
    }
    for name, (qfmt, opts) in sources.items():
        path = os.path.join(work, f"disk.{name}")
        if not os.path.exists(path):
            subprocess.run(
                ["qemu-img", "convert", "-f", "raw", "-O", qfmt, *opts, src, path], check=True
            )
    out = os.path.join(work, "out")
    raw = RawFormat()
    rows = []

    def qemu(*argv: str) -> None:
        _drop(out)
        subprocess.run(["qemu-img", "convert", *argv, out], check=True)

    def ims(src_path: str, src_fmt, dst_fmt, opts: dict[str, str]) -> None:
        _drop(out)
        _ims_convert(src_path, src_fmt, out, dst_fmt, opts)

    for name in sources:
        path = os.path.join(work, f"disk.{name}")
        qfmt = QEMU_NAME.get(name, name)
        q = _timed(args.repeat, qemu, "-f", qfmt, "-O", "raw", path)
        i = _timed(args.repeat, ims, path, FORMATS[name], raw, {})
        rows.append((f"{name} -> raw", q, i))
    writes = [
        ("vmdk", "vmdk", {"subformat": "streamOptimized"}),
        ("vhdx", "vhdx", {}),
        ("vhd", "vpc", {"subformat": "dynamic"}),
    ]
    for name, qfmt, opts in writes:
        qopts = ["-o", ",".join(f"{k}={v}" for k, v in opts.items())] if opts else []
        q = _timed(args.repeat, qemu, "-f", "raw", "-O", qfmt, *qopts, src)
        i = _timed(args.repeat, ims, src, raw, FORMATS[name], opts)
        rows.append((f"raw -> {name} {opts.get('subformat', '')}".rstrip(), q, i))
    _drop(out)
    print(f"{'case':30} {'qemu s':>7} {'IMS s':>7} {'ratio':>6}   {'qemu cpu':>8} {'IMS cpu':>8}")
    for case, (qw, qc), (iw, ic) in rows:
        print(f"{case:30} {qw:7.2f} {iw:7.2f} {qw / iw:6.2f}   {qc:8.2f} {ic:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
