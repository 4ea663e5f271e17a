"""DiskReader.readinto fills a caller's buffer exactly as read() returns bytes.

The copy engine reads uncompressed sources into one reused buffer
(iter_blocks(reuse=True)); every reader must agree with its own read().
"""

from __future__ import annotations

import io
import random

import pytest
from qemu_family_samples import MemDisk, pattern_disk, qcow1_image, qcow2_image, qed_image
from vmfmt_images import vdi_image, vhd_image, vhdx_image, vmdk_image

from ims import errors
from ims.disk.copy import iter_blocks
from ims.drivers.formats.qcow import QcowFormat
from ims.drivers.formats.qcow2 import Qcow2Format
from ims.drivers.formats.qed import QedFormat
from ims.drivers.formats.raw import RawFormat
from ims.drivers.formats.vdi import VdiFormat
from ims.drivers.formats.vhd import VhdFormat
from ims.drivers.formats.vhdx import VhdxFormat
from ims.drivers.formats.vmdk import VmdkFormat

MiB = 1024 * 1024


def _disk(size: int = 3 * MiB + 12800) -> bytes:
    data = bytearray(pattern_disk(size, seed=5))
    data[MiB : MiB + 300_000] = bytes(300_000)  # a zero run inside a MiB
    return bytes(data)


DISK = _disk()
MIB_DISK = DISK[: 3 * MiB]  # formats that need whole sectors/blocks

CASES = {
    "raw": (RawFormat(), lambda: DISK, DISK),
    "qcow2": (Qcow2Format(), lambda: qcow2_image(DISK), DISK),
    "qcow2-compressed": (Qcow2Format(), lambda: qcow2_image(DISK, compress="on"), DISK),
    "qcow": (QcowFormat(), lambda: qcow1_image(MIB_DISK), MIB_DISK),
    "qcow-compressed": (QcowFormat(), lambda: qcow1_image(MIB_DISK, compress=True), MIB_DISK),
    "qed": (QedFormat(), lambda: qed_image(MIB_DISK), MIB_DISK),
    "vhdx": (VhdxFormat(), lambda: vhdx_image(MIB_DISK), MIB_DISK),
    "vhd": (VhdFormat(), lambda: vhd_image(MIB_DISK), MIB_DISK),
    "vdi": (VdiFormat(), lambda: vdi_image(MIB_DISK), MIB_DISK),
    "vmdk": (VmdkFormat(), lambda: vmdk_image(MIB_DISK), MIB_DISK),
    "vmdk-stream": (VmdkFormat(), lambda: vmdk_image(MIB_DISK, "streamOptimized"), MIB_DISK),
}


@pytest.fixture(params=sorted(CASES))
def opened(request, tmp_path):
    fmt, build, disk = CASES[request.param]
    path = tmp_path / "image"
    path.write_bytes(build())
    with open(path, "rb") as file:
        reader = fmt.open(file)
        yield reader, disk
        reader.close()


def test_readinto_matches_read(opened):
    reader, disk = opened
    rng = random.Random(1)
    spans = [(0, len(disk)), (0, 1), (len(disk) - 1, 1), (MiB - 7, 300_123), (MiB, 300_000)]
    spans += [(rng.randrange(len(disk)), rng.randrange(1, MiB)) for _ in range(20)]
    for offset, length in spans:
        length = min(length, len(disk) - offset)
        buf = bytearray(b"\xee" * (length + 2))
        reader.readinto(offset, memoryview(buf)[1 : 1 + length])
        assert bytes(buf[1 : 1 + length]) == disk[offset : offset + length], (offset, length)
        assert buf[0] == buf[-1] == 0xEE  # nothing written outside the view


def test_readinto_refuses_ranges_outside_the_disk(opened):
    reader, disk = opened
    with pytest.raises((errors.Invalid, ValueError)):
        reader.readinto(len(disk) - 10, memoryview(bytearray(11)))


def test_iter_blocks_reuse_yields_the_disk(opened):
    reader, disk = opened
    out = bytearray(len(disk))
    views = set()
    for offset, length, data in iter_blocks(reader, 256 * 1024, reuse=True):
        if data is not None:
            out[offset : offset + length] = data
            if isinstance(data, memoryview):
                views.add(id(data.obj))
    assert bytes(out) == disk
    # A direct reader refills one buffer; the others hand out bytes.
    assert len(views) <= 1
    assert bool(views) == reader.direct_readinto


def test_readinto_default_copies_read():
    reader = MemDisk(DISK)
    assert reader.direct_readinto is False
    buf = bytearray(100)
    reader.readinto(MiB - 50, memoryview(buf))
    assert bytes(buf) == DISK[MiB - 50 : MiB + 50]


def test_raw_readinto_past_the_file_reads_zeros():
    """An ISO volume rounded up past the file: the missing tail reads as zeros."""
    from ims.drivers.formats import _qemu
    from ims.drivers.formats.raw import RawReader

    reader = RawReader(_qemu.FileView(io.BytesIO(b"abc"), "raw"), virtual_size=8)
    buf = bytearray(b"\xff" * 8)
    reader.readinto(0, memoryview(buf))
    assert bytes(buf) == b"abc" + bytes(5)
