#!/usr/bin/env python3
"""Time IMS's VM-format readers and writers against qemu-img, side by side.

usage: bench_vm_formats.py [--size-mib N] [--workdir DIR] [--mkdisk PATH]

Makes an N MiB disk with mkdisk.py (default 512), converts it with qemu-img
to each source format, then times the same conversions both ways and prints
"ratio = qemu seconds / IMS seconds" (above 1.0 means IMS is faster). Cases:
vmdk streamOptimized -> raw, vhdx dynamic -> raw, vhd dynamic -> raw,
vdi dynamic -> raw, raw -> vmdk streamOptimized, raw -> vhdx, raw -> vhd.
"""

from __future__ import annotations

import argparse
import os
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


def _timed(func) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


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
    for name in sources:
        path = os.path.join(work, f"disk.{name}")
        qfmt = QEMU_NAME.get(name, name)
        _drop(out)
        q = _timed(
            lambda path=path, qfmt=qfmt: subprocess.run(
                ["qemu-img", "convert", "-f", qfmt, "-O", "raw", path, out], check=True
            )
        )
        _drop(out)
        i = _timed(lambda path=path, name=name: _ims_convert(path, FORMATS[name], out, raw, {}))
        rows.append((f"{name} -> raw", q, i))
    writes = [
        ("vmdk", "vmdk", {"subformat": "streamOptimized"}),
        ("vhdx", "vhdx", {}),
        ("vhd", "vpc", {"subformat": "dynamic"}),
    ]
    for name, qfmt, opts in writes:
        qopts = [f"{k}={v}" for k, v in opts.items()]
        _drop(out)
        q = _timed(
            lambda qfmt=qfmt, qopts=qopts: subprocess.run(
                ["qemu-img", "convert", "-f", "raw", "-O", qfmt]
                + (["-o", ",".join(qopts)] if qopts else [])
                + [src, out],
                check=True,
            )
        )
        _drop(out)
        i = _timed(lambda name=name, opts=opts: _ims_convert(src, raw, out, FORMATS[name], opts))
        rows.append((f"raw -> {name} {opts.get('subformat', '')}".rstrip(), q, i))
    _drop(out)
    print(f"{'case':32} {'qemu-img s':>10} {'IMS s':>8} {'ratio':>6}")
    for case, q, i in rows:
        print(f"{case:32} {q:10.2f} {i:8.2f} {q / i:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
