#!/usr/bin/env python3
"""Benchmark ``ims-img convert`` against ``qemu-img convert``, side by side.

Builds a test disk with the shared mkdisk.py (45% zero, 25% random, 30% text
MiBs), prepares qcow2/vmdk/vhdx sources with qemu-img, then times each
conversion alternately (ours, qemu, ours, qemu, ...) and keeps the best (or
median) of ``--runs``. Our side always runs as a child process, so its peak
RSS comes from the kernel (wait4 ru_maxrss). A last section converts an
8 GiB sparse disk to check that memory does not grow with disk size.

    python bench/convert.py                      # 2 GiB disk, 3 runs each
    python bench/convert.py --size-mib 256 --runs 1 --only zvhd,zvhd2
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MiB = 1024 * 1024


@dataclasses.dataclass
class Case:
    name: str
    source: str  # key of the prepared sources
    ours: list[str]  # ims-img convert args after "convert"
    qemu: list[str]  # qemu-img convert args after "convert"
    target: float  # required speed ratio ours/qemu
    check_size: bool = False  # our output must be no larger


CASES = [
    Case("raw->qcow2", "raw", ["-f", "raw", "-O", "qcow2"], ["-f", "raw", "-O", "qcow2"], 1.0),
    Case("qcow2->raw", "qcow2", ["-f", "qcow2", "-O", "raw"], ["-f", "qcow2", "-O", "raw"], 1.0),
    Case(
        "vmdk(stream)->qcow2",
        "vmdk",
        ["-f", "vmdk", "-O", "qcow2"],
        ["-f", "vmdk", "-O", "qcow2"],
        1.0,
    ),
    Case("vhdx->raw", "vhdx", ["-f", "vhdx", "-O", "raw"], ["-f", "vhdx", "-O", "raw"], 1.0),
    Case(
        "raw->zvhd2 | qcow2 -c zstd",
        "raw",
        ["-f", "raw", "-O", "zvhd2"],
        ["-f", "raw", "-c", "-O", "qcow2", "-o", "compression_type=zstd"],
        1.5,
        check_size=True,
    ),
    Case(
        "raw->zvhd2 digest=off",
        "raw",
        ["-f", "raw", "-O", "zvhd2", "-o", "digest=off"],
        ["-f", "raw", "-c", "-O", "qcow2", "-o", "compression_type=zstd"],
        1.5,
        check_size=True,
    ),
    Case(
        "raw->zvhd | qcow2 -c zlib",
        "raw",
        ["-f", "raw", "-O", "zvhd"],
        ["-f", "raw", "-c", "-O", "qcow2"],
        1.8,
    ),
    Case(
        "raw->vmdk streamOptimized",
        "raw",
        ["-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized"],
        ["-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized"],
        1.8,
    ),
]


def ims_img() -> list[str]:
    exe = shutil.which("ims-img") or str(Path(sys.executable).with_name("ims-img"))
    return [exe] if os.path.exists(exe) else [sys.executable, "-m", "ims.cmd.img"]


def timed(cmd: list[str]) -> tuple[float, int, float]:
    """Run ``cmd``; return (wall seconds, peak RSS in KiB, CPU seconds)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(err.decode(errors="replace").strip().splitlines()[-1:] or "failed")
    return elapsed, usage.ru_maxrss, usage.ru_utime + usage.ru_stime


def mkdisk(shared: Path, path: Path, size_mib: int) -> None:
    stamp = path.with_suffix(".size")
    if path.exists() and stamp.exists() and stamp.read_text() == str(size_mib):
        return
    tool = shared / "tools" / "mkdisk.py"
    print(f"making a {size_mib} MiB disk with {tool} ...", flush=True)
    subprocess.run([sys.executable, str(tool), str(path), str(size_mib)], check=True)
    stamp.write_text(str(size_mib))


def prepare_sources(work: Path, raw: Path) -> dict[str, Path]:
    sources = {"raw": raw}
    recipes = {
        "qcow2": ["-O", "qcow2"],
        "vmdk": ["-O", "vmdk", "-o", "subformat=streamOptimized"],
        "vhdx": ["-O", "vhdx"],
    }
    for key, args in recipes.items():
        path = work / f"disk.{key}"
        stamp = path.with_suffix(f".{key}.from")
        token = f"{raw.stat().st_size}:{raw.stat().st_mtime_ns}"
        if not (path.exists() and stamp.exists() and stamp.read_text() == token):
            print(f"preparing {path.name} with qemu-img ...", flush=True)
            subprocess.run(["qemu-img", "convert", "-f", "raw", *args, str(raw), str(path)],
                           check=True)  # fmt: skip
            stamp.write_text(token)
        sources[key] = path
    return sources


def run_case(case: Case, src: Path, work: Path, runs: int, stat: str, virtual: int) -> dict:
    ours_out, qemu_out = work / "out.ours", work / "out.qemu"
    ours_t, qemu_t, rss = [], [], []
    cpu: dict[str, list[float]] = {"ours": [], "qemu": []}
    note = ""
    for _ in range(runs):
        for side in ("ours", "qemu"):
            out = ours_out if side == "ours" else qemu_out
            out.unlink(missing_ok=True)
            if side == "ours":
                cmd = [*ims_img(), "convert", *case.ours, str(src), str(out)]
            else:
                cmd = ["qemu-img", "convert", *case.qemu, str(src), str(out)]
            try:
                seconds, peak, cpu_s = timed(cmd)
            except RuntimeError as ex:
                return {"case": case, "skip": f"{side}: {ex}"}
            cpu[side].append(cpu_s)
            (ours_t if side == "ours" else qemu_t).append(seconds)
            if side == "ours":
                rss.append(peak)
    pick = min if stat == "best" else statistics.median
    ours_s, qemu_s = pick(ours_t), pick(qemu_t)
    ours_size, qemu_size = _allocated(ours_out), _allocated(qemu_out)
    ok = qemu_s / ours_s >= case.target
    if case.check_size and ours_size > qemu_size:
        ok = False
        note = "output larger than qemu-img's"
    result = {
        "case": case,
        "ours_mibs": virtual / MiB / ours_s,
        "qemu_mibs": virtual / MiB / qemu_s,
        "ratio": qemu_s / ours_s,
        "ours_size": ours_size,
        "qemu_size": qemu_size,
        "rss_mib": max(rss) / 1024,
        "cpu_ratio": pick(cpu["qemu"]) / pick(cpu["ours"]),
        "ok": ok,
        "note": note,
    }
    ours_out.unlink(missing_ok=True)
    qemu_out.unlink(missing_ok=True)
    return result


def _allocated(path: Path) -> int:
    """Bytes the output occupies (holes excluded), as qemu-img's disk size."""
    st = path.stat()
    return min(st.st_size, st.st_blocks * 512)


def rss_check(work: Path, gib: int, formats: list[str]) -> list[tuple[str, float, float]]:
    """Convert a sparse ``gib`` GiB raw disk with a few data MiBs; report peak RSS."""
    path = work / f"sparse{gib}g.raw"
    with open(path, "wb") as out:
        out.truncate(gib << 30)
        for index in range(16):
            out.seek(index * ((gib << 30) // 16) + 12345 * index)
            out.write(os.urandom(MiB))
    rows = []
    for fmt in formats:
        dst = work / f"sparse.{fmt}"
        dst.unlink(missing_ok=True)
        try:
            seconds, peak, _cpu = timed([*ims_img(), "convert", "-f", "raw", "-O", fmt, str(path),
                                      str(dst)])  # fmt: skip
            rows.append((fmt, peak / 1024, seconds))
        except RuntimeError as ex:
            print(f"  {fmt}: skipped ({ex})")
        dst.unlink(missing_ok=True)
    path.unlink(missing_ok=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=2048, help="test disk size (MiB)")
    parser.add_argument("--shared", type=Path, default=HERE.parent.parent / "shared",
                        help="the shared folder holding tools/mkdisk.py")  # fmt: skip
    parser.add_argument("--runs", type=int, default=3, help="runs per side (alternating)")
    parser.add_argument("--stat", choices=("best", "median"), default="best")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ims-bench"))
    parser.add_argument("--only", help="comma-separated substrings of case names")
    parser.add_argument("--rss-gib", type=int, default=8, help="sparse disk for RSS (0: skip)")
    args = parser.parse_args()

    if shutil.which("qemu-img") is None:
        print("qemu-img is not installed: nothing to compare against")
        return 1
    args.workdir.mkdir(parents=True, exist_ok=True)
    raw = args.workdir / "disk.raw"
    mkdisk(args.shared, raw, args.size_mib)
    sources = prepare_sources(args.workdir, raw)
    virtual = raw.stat().st_size

    cases = CASES
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        cases = [c for c in CASES if any(w in c.name for w in wanted)]
    results = []
    for case in cases:
        print(f"running {case.name} ...", flush=True)
        results.append(run_case(case, sources[case.source], args.workdir, args.runs, args.stat,
                                virtual))  # fmt: skip

    print()
    print("ratio = qemu-img wall time / ours (the target); cpu ratio = the same for CPU time")
    print(
        f"load average now: {os.getloadavg()[0]:.1f} (other work on the machine skews wall times)"
    )
    print(f"disk: {virtual // MiB} MiB from mkdisk.py, {args.runs} run(s) a side, "
          f"{args.stat} time, {os.cpu_count()} CPUs")  # fmt: skip
    head = f"{'conversion':<28}{'ours MiB/s':>11}{'qemu MiB/s':>11}{'ratio':>7}{'target':>8}"
    head += f"{'ours size':>12}{'qemu size':>12}{'RSS MiB':>9}{'cpu ratio':>10}  result"
    print(head)
    print("-" * len(head))
    failed = 0
    for row in results:
        case = row["case"]
        if "skip" in row:
            print(f"{case.name:<28}{'':>67}  SKIP ({row['skip']})")
            continue
        verdict = "PASS" if row["ok"] else "FAIL"
        failed += not row["ok"]
        print(
            f"{case.name:<28}{row['ours_mibs']:>11.0f}{row['qemu_mibs']:>11.0f}"
            f"{row['ratio']:>7.2f}{case.target:>7.1f}x{row['ours_size'] / MiB:>11.1f}M"
            f"{row['qemu_size'] / MiB:>11.1f}M{row['rss_mib']:>9.0f}{row['cpu_ratio']:>10.2f}"
            f"  {verdict} {row['note']}"
        )
    if args.rss_gib:
        print()
        print(f"peak RSS of ims-img convert on a sparse {args.rss_gib} GiB raw disk "
              "(target < 300 MiB):")  # fmt: skip
        for fmt, mib, seconds in rss_check(args.workdir, args.rss_gib,
                                           ["zvhd2", "zvhd", "qcow2", "vmdk", "raw"]):  # fmt: skip
            verdict = "PASS" if mib < 300 else "FAIL"
            failed += mib >= 300
            print(f"  raw -> {fmt:<6} {mib:7.0f} MiB  {seconds:6.1f} s  {verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
