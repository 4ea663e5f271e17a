#!/usr/bin/env python3
"""Benchmark ``ims-img convert`` against ``qemu-img convert``, side by side.

Builds a test disk with the shared mkdisk.py (45% zero, 25% random, 30% text
MiBs), prepares qcow2/vmdk/vhdx sources with qemu-img, then times each
conversion alternately (ours, qemu, ours, qemu, ...) and keeps the best (or
median) of ``--runs``. Our side always runs the ``ims-img convert`` CLI as a
child process, as users do (start-up included, with ims byte-compiled first
as an install is), so its peak RSS and CPU time come from the kernel
(wait4). Both wall times (best and median) and both CPU times (user+sys) are
printed: on a shared machine CPU time is the steadier figure. A last section
converts an 8 GiB sparse disk to check that memory does not grow with disk
size.

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
    target: float  # required speed ratio ours/qemu; 0: shown for information only
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
        "raw->zvhd2 digest=on (info)",
        "raw",
        ["-f", "raw", "-O", "zvhd2", "-o", "digest=on"],
        ["-f", "raw", "-c", "-O", "qcow2", "-o", "compression_type=zstd"],
        0,
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


def byte_compile() -> str:
    """Byte-compile the ims package, as ``pip install`` does; say what was done.

    A dev checkout run with PYTHONDONTWRITEBYTECODE (or never imported yet)
    would otherwise compile every module of ims-img on every run, which is
    start-up time an installed ims-img does not have.
    """
    cmd = [ims_img()[0]]
    python = sys.executable
    if cmd[0] != python:
        with open(cmd[0], "rb") as script:
            first = script.readline()
        if first.startswith(b"#!"):
            python = first[2:].decode().strip().split()[0]
    code = "import ims, os; print(os.path.dirname(ims.__file__))"
    found = subprocess.run([python, "-c", code], capture_output=True, text=True)
    if found.returncode:
        return "ims package not found: not byte-compiled"
    package = found.stdout.strip()
    subprocess.run([python, "-m", "compileall", "-q", package], check=True)
    return f"byte-compiled {package} as an install would"


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
    wall: dict[str, list[float]] = {"ours": [], "qemu": []}
    cpu: dict[str, list[float]] = {"ours": [], "qemu": []}
    rss = []
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
            wall[side].append(seconds)
            if side == "ours":
                rss.append(peak)
    pick = min if stat == "best" else statistics.median
    ours_s, qemu_s = pick(wall["ours"]), pick(wall["qemu"])
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
        "median_ratio": statistics.median(wall["qemu"]) / statistics.median(wall["ours"]),
        "wall": {side: (min(v), statistics.median(v)) for side, v in wall.items()},
        "cpu": {side: statistics.median(v) for side, v in cpu.items()},
        "ours_size": ours_size,
        "qemu_size": qemu_size,
        "rss_mib": max(rss) / 1024,
        "cpu_ratio": statistics.median(cpu["qemu"]) / statistics.median(cpu["ours"]),
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
    print(byte_compile())
    load_before = os.getloadavg()[0]
    startup = min(timed([*ims_img(), "--help"])[2] for _ in range(3))
    results = []
    for case in cases:
        print(f"running {case.name} ...", flush=True)
        results.append(run_case(case, sources[case.source], args.workdir, args.runs, args.stat,
                                virtual))  # fmt: skip

    print()
    print("ratio = qemu-img wall time / ours (the target is on the --stat time); cpu ratio = the")
    print("same for CPU time (user+sys, median), which other work on the machine skews far less")
    print(f"load average: {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} now")
    print(f"disk: {virtual // MiB} MiB from mkdisk.py, {args.runs} run(s) a side alternating, "
          f"{args.stat} time, {os.cpu_count()} CPUs")  # fmt: skip
    print(f"ims-img start-up (--help): {startup:.3f} s CPU")
    head = (
        f"{'conversion':<28}{'ours wall best/med':>19}{'qemu wall best/med':>19}{'ratio':>6}"
        f"{'(med)':>6}{'target':>7}{'ours cpu':>9}{'qemu cpu':>9}{'ratio':>6}"
        f"{'ours size':>11}{'qemu size':>11}{'RSS':>6}  result"
    )
    print(head)
    print("-" * len(head))
    failed = 0
    for row in results:
        case = row["case"]
        if "skip" in row:
            print(f"{case.name:<28}{'':>97}  SKIP ({row['skip']})")
            continue
        verdict = "PASS" if row["ok"] else "FAIL"
        if not case.target:
            verdict = "info"
        failed += not row["ok"]
        (ob, om), (qb, qm) = row["wall"]["ours"], row["wall"]["qemu"]
        print(
            f"{case.name:<28}{ob:>10.2f}/{om:<5.2f}s  {qb:>10.2f}/{qm:<5.2f}s  "
            f"{row['ratio']:>4.2f}{row['median_ratio']:>6.2f}"
            f"{f'{case.target:.1f}x' if case.target else '-':>7}"
            f"{row['cpu']['ours']:>8.2f}s{row['cpu']['qemu']:>8.2f}s{row['cpu_ratio']:>6.2f}"
            f"{row['ours_size'] / MiB:>10.1f}M{row['qemu_size'] / MiB:>10.1f}M"
            f"{row['rss_mib']:>6.0f}  {verdict} {row['note']}"
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
