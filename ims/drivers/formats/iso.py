"""ISO 9660 / UDF optical disc images: detected, inspected, read as raw bytes.

Volume descriptors start at 32 KiB, one per 2 KiB sector; the identifier
sits one byte in (``CD001`` for ISO 9660, ``BEA01``/``NSR02``/``NSR03``/
``TEA01`` for the UDF volume recognition sequence). The primary volume
descriptor gives the volume size; a file shorter than that is truncated.
The disk is the whole file, so bytes a hybrid image appends after the
volume (an EFI partition, say) survive a conversion.
"""

from __future__ import annotations

import struct
from typing import Any, BinaryIO

from ims import errors
from ims.disk.model import DiskReader, ImageInfo, Sample
from ims.drivers.formats import _qemu
from ims.drivers.formats.base import DiskFormat
from ims.drivers.formats.raw import RawReader

FMT = "iso"
SECTOR = 2048
VRS_START = 16 * SECTOR
#: Descriptors we look at before giving up (a real set has a handful).
MAX_DESCRIPTORS = 64
ISO_ID = b"CD001"
UDF_IDS = (b"NSR02", b"NSR03")
VRS_IDS = (ISO_ID, b"BEA01", b"TEA01", b"BOOT2", b"CDW02", *UDF_IDS)


def _bad(reason: str) -> errors.ImageFormatError:
    return errors.ImageFormatError(format=FMT, reason=reason)


def _scan(read: Any, limit: int) -> tuple[bytes | None, bool]:
    """Walk the descriptors; return (primary volume descriptor, has UDF)."""
    pvd = None
    udf = False
    for index in range(MAX_DESCRIPTORS):
        off = VRS_START + index * SECTOR
        if off + SECTOR > limit:
            break
        desc = read(off, SECTOR)
        ident = desc[1:6]
        if ident not in VRS_IDS:
            break
        if ident in UDF_IDS:
            udf = True
        if ident == ISO_ID:
            kind = desc[0]
            if kind == 1 and pvd is None:
                pvd = desc
            if kind == 255:
                # The ISO set ends; a UDF sequence may still follow it.
                continue
    return pvd, udf


class IsoFormat(DiskFormat):
    """An ISO 9660 or UDF image."""

    name = FMT

    def probe(self, sample: Sample) -> bool:
        head = sample.head

        def read(off: int, length: int) -> bytes:
            return head[off : off + length]

        if len(head) < VRS_START + SECTOR:
            return False
        if head[VRS_START + 1 : VRS_START + 6] == ISO_ID:
            return True
        _, udf = _scan(read, len(head))
        return udf

    def _describe(self, view: _qemu.FileView) -> tuple[int, dict[str, Any]]:
        def read(off: int, length: int) -> bytes:
            return view.read_exact(off, length, "volume descriptor")

        pvd, udf = _scan(read, view.size)
        details: dict[str, Any] = {"udf": udf}
        if pvd is None:
            if not udf:
                raise _bad("no ISO 9660 primary volume descriptor or UDF descriptor")
            details["volume_size"] = None
            return view.size, details
        blocks = struct.unpack_from("<I", pvd, 80)[0]
        block_size = struct.unpack_from("<H", pvd, 128)[0]
        if block_size < 512 or block_size & (block_size - 1) or block_size > 32768:
            raise _bad(f"logical block size {block_size} is invalid")
        volume_size = blocks * block_size
        if volume_size > view.size:
            raise _bad(
                f"volume of {volume_size} bytes is larger than the file ({view.size} bytes)"
            )
        details["volume_size"] = volume_size
        details["volume_id"] = pvd[40:72].rstrip(b" \0").decode("ascii", "replace")
        return view.size, details

    def inspect(self, file: BinaryIO) -> ImageInfo:
        view = _qemu.FileView(file, FMT)
        size, details = self._describe(view)
        return ImageInfo(format=FMT, virtual_size=size, actual_size=view.size, details=details)

    def open(self, file: BinaryIO) -> DiskReader:
        view = _qemu.FileView(file, FMT)
        size, _ = self._describe(view)
        reader = RawReader(view, size)
        reader.fmt = FMT
        return reader
