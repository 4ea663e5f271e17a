"""ims-img: inspect, check, convert, compare and map virtual-disk images.

A small qemu-img look-alike built on the IMS format plugins, so operators
can see exactly what the service sees. The format is detected from content
(never from the file name) unless ``-f`` names it.

Commands::

    ims-img info    [-f FMT] [--output human|json] FILE
    ims-img check   [-f FMT] [--output human|json] FILE
    ims-img convert [-f FMT] -O FMT [-o k=v[,k=v...]] [-p] SRC DST
    ims-img compare [-f FMT] [-F FMT] A B
    ims-img map     [-f FMT] [--output human|json] FILE

Exit codes:
    info, check, convert, map:
        0  success (check: the image is consistent)
        1  usage error, I/O error, unknown format or internal error
        2  the image is corrupt or refused (unsafe feature, bad metadata)
    compare:
        0  the images have the same virtual content
        1  the images differ (the first differing offset is printed)
        2  any error (usage, I/O, corrupt or refused image)

Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, BinaryIO, NoReturn

from ims import errors
from ims.disk import registry
from ims.disk.copy import ProgressReader
from ims.disk.model import BLOCK_SIZE, DiskReader, Extent
from ims.drivers.formats.base import DiskFormat

PROG = "ims-img"
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_BAD_IMAGE = 2
#: compare: content differs / anything went wrong.
EXIT_DIFFER = 1
EXIT_COMPARE_ERROR = 2


class UsageError(Exception):
    """A command line that does not make sense."""


class _Parser(argparse.ArgumentParser):
    # NOTE(ims): argparse exits 2 on usage errors, which ims-img reserves
    # for bad images; raise instead so each command picks its code.
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


# -- helpers -----------------------------------------------------------------


def _load_plugin(name: str) -> DiskFormat:
    """Load one format plugin by name (only it: see ``registry.load``)."""
    return registry.load(name)


def _open_image(path: str, fmt_name: str | None) -> tuple[DiskFormat, BinaryIO]:
    file = open(path, "rb")  # closed by the caller
    try:
        if fmt_name:
            fmt = _load_plugin(fmt_name)
        else:
            fmt = registry.get(registry.detect(file))
        file.seek(0)
    except BaseException:
        file.close()
        raise
    return fmt, file


def _merged(extents: Iterator[Extent]) -> Iterator[Extent]:
    """Join adjacent extents of the same kind (readers may split them)."""
    current: Extent | None = None
    for extent in extents:
        if extent.length == 0:
            continue
        if current is not None and current.zero == extent.zero and current.end == extent.offset:
            current = Extent(current.offset, current.length + extent.length, current.zero)
            continue
        if current is not None:
            yield current
        current = extent
    if current is not None:
        yield current


def _human_size(value: int) -> str:
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024 or unit == "PiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.3g} {unit}"
        size /= 1024
    return str(value)  # pragma: no cover


def _allocated(file: BinaryIO) -> int:
    """Bytes the file occupies on the host (qemu-img's actual-size)."""
    stat = os.fstat(file.fileno())
    return getattr(stat, "st_blocks", 0) * 512 or stat.st_size


class _Bar:
    """A one-line progress bar, redrawn at most ten times a second."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._last = 0.0
        self._done = -1.0

    def __call__(self, done: int, total: int) -> None:
        percent = 100.0 * done / total if total else 100.0
        now = time.monotonic()
        if percent < 100.0 and (now - self._last < 0.1 or percent == self._done):
            return
        self._last, self._done = now, percent
        self._stream.write(f"\r    ({percent:6.2f}/100%)")
        self._stream.flush()

    def finish(self) -> None:
        self(1, 1)
        self._stream.write("\n")
        self._stream.flush()


def _reuse_freed_memory() -> None:
    """Ask the C allocator to keep freed blocks for reuse (glibc; else nothing).

    PERF(ims): conversions allocate and free MiB-sized buffers all the time
    (compressed frames, inflated grains). By default glibc serves blocks
    over its mmap threshold from fresh mappings and trims freed memory back
    to the kernel, so every block costs page faults on zero-filled pages:
    ~190k faults and 10-14% of the CPU of raw->zvhd2 on the 2 GiB bench
    disk. Kept, freed memory is reused; the footprint stays the peak in use.
    """
    from ims.cmd import M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, mallopt

    mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024)  # glibc's largest allowed value
    mallopt(M_TRIM_THRESHOLD, 256 * 1024 * 1024)


def _print_json(value: Any, **kwargs: Any) -> None:
    import json  # PERF(ims): only --output json needs it, not every convert

    print(json.dumps(value, indent=4, **kwargs))


def _parse_options(text: str | None) -> dict[str, str]:
    options: dict[str, str] = {}
    for item in filter(None, (text or "").split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"option '{item}' is not key=value")
        options[key.strip()] = value.strip()
    return options


# -- commands ----------------------------------------------------------------


def cmd_info(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as stack:
        fmt, file = _open_image(args.filename, args.format)
        stack.callback(file.close)
        info = fmt.inspect(file)
        actual = _allocated(file)
    out: dict[str, Any] = {
        "virtual-size": info.virtual_size,
        "filename": args.filename,
        "format": info.format,
        "actual-size": actual,
    }
    if info.cluster_size is not None:
        out["cluster-size"] = info.cluster_size
    if info.details:
        out["format-specific"] = {"type": info.format, "data": info.details}
    if args.output == "json":
        _print_json(out, default=str)
        return EXIT_OK
    print(f"image: {args.filename}")
    print(f"file format: {info.format}")
    print(f"virtual size: {_human_size(info.virtual_size)} ({info.virtual_size} bytes)")
    print(f"disk size: {_human_size(actual)}")
    if info.cluster_size is not None:
        print(f"cluster_size: {info.cluster_size}")
    if info.details:
        print("Format specific information:")
        for key, value in info.details.items():
            print(f"    {key}: {value}")
    return EXIT_OK


def _generic_verify(fmt: DiskFormat, file: BinaryIO) -> dict[str, Any]:
    """Read every data extent once: exercises every table and payload."""
    reader = fmt.open(file)
    try:
        extents = data = 0
        for extent in reader.extents():
            extents += 1
            if extent.zero:
                continue
            pos = extent.offset
            while pos < extent.end:
                length = min(BLOCK_SIZE, extent.end - pos)
                if len(reader.read(pos, length)) != length:
                    raise errors.ImageFormatError(format=fmt.name, reason="short read")
                pos += length
                data += length
        return {"extents": extents, "data-bytes": data}
    finally:
        reader.close()


def cmd_check(args: argparse.Namespace) -> int:
    _reuse_freed_memory()
    with contextlib.ExitStack() as stack:
        fmt, file = _open_image(args.filename, args.format)
        stack.callback(file.close)
        info = fmt.inspect(file)
        verify: Callable[[BinaryIO], dict[str, Any]] | None = getattr(fmt, "verify", None)
        summary = verify(file) if verify else _generic_verify(fmt, file)
    result = {
        "filename": args.filename,
        "format": info.format,
        "check-errors": 0,
        "virtual-size": info.virtual_size,
        **summary,
    }
    if args.output == "json":
        _print_json(result)
    else:
        print("No errors were found on the image.")
        for key, value in summary.items():
            print(f"{key}: {value}")
    return EXIT_OK


def cmd_convert(args: argparse.Namespace) -> int:
    _reuse_freed_memory()
    options = _parse_options(args.options)
    target = _load_plugin(args.output_format)
    if not target.can_write():
        raise UsageError(f"format '{args.output_format}' cannot be written")
    if os.path.exists(args.dst) and os.path.exists(args.src):
        if os.path.samefile(args.src, args.dst):
            raise UsageError("source and destination are the same file")
    show = args.progress or sys.stdout.isatty()
    bar = _Bar(sys.stdout) if show else None
    with contextlib.ExitStack() as stack:
        fmt, src = _open_image(args.src, args.format)
        stack.callback(src.close)
        reader = fmt.open(src)
        stack.callback(reader.close)
        if bar:
            reader = ProgressReader(reader, bar)
        created = not os.path.exists(args.dst)
        try:
            with open(args.dst, "w+b") as dst:
                target.write(reader, dst, options)
        except BaseException:
            if created:
                with contextlib.suppress(OSError):
                    os.unlink(args.dst)
            raise
    if bar:
        bar.finish()
    return EXIT_OK


def _pieces(a: DiskReader, b: DiskReader) -> Iterator[tuple[int, int, bool, bool]]:
    """Yield (start, end, a_zero, b_zero) over the common part, lazily.

    A piece is yielded before either extent list advances, so sequential
    readers (zvhd) see reads in order.
    """
    it_a, it_b = iter(a.extents()), iter(b.extents())
    ext_a, ext_b = next(it_a, None), next(it_b, None)
    pos = 0
    end_all = min(a.virtual_size, b.virtual_size)
    while pos < end_all and ext_a is not None and ext_b is not None:
        end = min(ext_a.end, ext_b.end, end_all)
        if end > pos:
            yield pos, end, ext_a.zero, ext_b.zero
            pos = end
        if ext_a.end <= pos:
            ext_a = next(it_a, None)
        if ext_b.end <= pos:
            ext_b = next(it_b, None)


def _first_nonzero(data: bytes) -> int:
    stripped = data.lstrip(b"\0")
    return len(data) - len(stripped) if stripped else -1


def _first_diff(x: bytes, y: bytes) -> int:
    if x == y:
        return -1
    lo, hi = 0, len(x)
    # NOTE(ims): bisect on slices (memcmp) rather than a byte loop.
    while hi - lo > 64:
        mid = (lo + hi) // 2
        if x[lo:mid] != y[lo:mid]:
            hi = mid
        else:
            lo = mid
    return next(i for i in range(lo, hi) if x[i] != y[i])


def _scan_tail(reader: DiskReader, start: int) -> int:
    """Return the first non-zero offset of ``reader`` from ``start``, or -1."""
    for extent in reader.extents():
        if extent.zero or extent.end <= start:
            continue
        pos = max(start, extent.offset)
        while pos < extent.end:
            length = min(BLOCK_SIZE, extent.end - pos)
            hit = _first_nonzero(reader.read(pos, length))
            if hit >= 0:
                return pos + hit
            pos += length
    return -1


def cmd_compare(args: argparse.Namespace) -> int:
    _reuse_freed_memory()
    with contextlib.ExitStack() as stack:
        fmt_a, file_a = _open_image(args.image_a, args.format_a)
        stack.callback(file_a.close)
        fmt_b, file_b = _open_image(args.image_b, args.format_b)
        stack.callback(file_b.close)
        a = fmt_a.open(file_a)
        stack.callback(a.close)
        b = fmt_b.open(file_b)
        stack.callback(b.close)
        for start, end, zero_a, zero_b in _pieces(a, b):
            if zero_a and zero_b:
                continue
            pos = start
            while pos < end:
                length = min(BLOCK_SIZE, end - pos)
                data_a = None if zero_a else a.read(pos, length)
                data_b = None if zero_b else b.read(pos, length)
                if data_a is None:
                    hit = _first_nonzero(data_b or b"")
                elif data_b is None:
                    hit = _first_nonzero(data_a)
                else:
                    hit = _first_diff(data_a, data_b)
                if hit >= 0:
                    print(f"Content mismatch at offset {pos + hit}!")
                    return EXIT_DIFFER
                pos += length
        if a.virtual_size != b.virtual_size:
            print("Warning: Image size mismatch!")
            longer = a if a.virtual_size > b.virtual_size else b
            hit = _scan_tail(longer, min(a.virtual_size, b.virtual_size))
            if hit >= 0:
                print(f"Content mismatch at offset {hit}!")
                return EXIT_DIFFER
    print("Images are identical.")
    return EXIT_OK


def cmd_map(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as stack:
        fmt, file = _open_image(args.filename, args.format)
        stack.callback(file.close)
        reader = fmt.open(file)
        stack.callback(reader.close)
        extents = list(_merged(reader.extents())) if args.output == "json" else None
        if extents is not None:
            rows = [
                {
                    "start": e.offset,
                    "length": e.length,
                    "depth": 0,
                    "present": True,
                    "zero": e.zero,
                    "data": not e.zero,
                }
                for e in extents
            ]
            _print_json(rows)
            return EXIT_OK
        print(f"{'Offset':<20}{'Length':<20}Kind")
        for extent in _merged(reader.extents()):
            kind = "zero" if extent.zero else "data"
            print(f"{extent.offset:<#20x}{extent.length:<#20x}{kind}")
    return EXIT_OK


# -- entry point -------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Inspect and convert virtual-disk images.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def add(name: str, helptext: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=helptext, description=helptext)

    info = add("info", "Describe an image.")
    info.add_argument("-f", dest="format", help="source format (default: detect)")
    info.add_argument("--output", choices=("human", "json"), default="human")
    info.add_argument("filename")
    info.set_defaults(func=cmd_info)

    check = add("check", "Validate every table and payload of an image.")
    check.add_argument("-f", dest="format", help="source format (default: detect)")
    check.add_argument("--output", choices=("human", "json"), default="human")
    check.add_argument("filename")
    check.set_defaults(func=cmd_check)

    conv = add("convert", "Convert an image to another format.")
    conv.add_argument("-f", dest="format", help="source format (default: detect)")
    conv.add_argument("-O", dest="output_format", required=True, help="target format")
    conv.add_argument("-o", dest="options", help="target options, k=v[,k=v...]")
    conv.add_argument("-p", dest="progress", action="store_true", help="show progress")
    conv.add_argument("src")
    conv.add_argument("dst")
    conv.set_defaults(func=cmd_convert)

    comp = add("compare", "Compare the virtual content of two images.")
    comp.add_argument("-f", dest="format_a", help="format of the first image")
    comp.add_argument("-F", dest="format_b", help="format of the second image")
    comp.add_argument("image_a")
    comp.add_argument("image_b")
    comp.set_defaults(func=cmd_compare)

    mapc = add("map", "List the data and zero extents of an image.")
    mapc.add_argument("-f", dest="format", help="source format (default: detect)")
    mapc.add_argument("--output", choices=("human", "json"), default="human")
    mapc.add_argument("filename")
    mapc.set_defaults(func=cmd_map)
    return parser


def _say(command: str, message: str) -> None:
    where = f"{PROG}: {command}: " if command else f"{PROG}: "
    sys.stderr.write(where + " ".join(str(message).split()) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ims-img; return the exit code (see the module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((arg for arg in argv if not arg.startswith("-")), "")
    is_compare = command == "compare"
    bad_image = EXIT_COMPARE_ERROR if is_compare else EXIT_BAD_IMAGE
    other = EXIT_COMPARE_ERROR if is_compare else EXIT_ERROR
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except UsageError as ex:
        _say(command, f"{ex} (see '{PROG} --help')")
        return other
    except errors.ImageFormatError as ex:
        _say(command, str(ex))
        return bad_image
    except errors.IMSError as ex:
        _say(command, str(ex))
        return other
    except BrokenPipeError:
        # NOTE(ims): the reader of our output went away (| head); be quiet.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return other
    except OSError as ex:
        name = f"{ex.filename}: " if ex.filename else ""
        _say(command, f"{name}{ex.strerror or ex}")
        return other
    except KeyboardInterrupt:
        _say(command, "interrupted")
        return 130
    except SystemExit as ex:  # --help and friends
        return int(ex.code or 0) if isinstance(ex.code, int) else EXIT_OK
    except Exception as ex:  # the CLI promises no tracebacks
        _say(command, f"internal error: {type(ex).__name__}: {ex}")
        return other


if __name__ == "__main__":
    sys.exit(main())
