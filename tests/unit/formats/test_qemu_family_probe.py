"""The probe chain names QEMU-family images, falls back to raw, refuses polyglots."""

from __future__ import annotations

import io

import pytest
from qemu_family_samples import iso_image, pattern_disk, qcow1_image, qcow2_image, qed_image

from ims import errors
from ims.disk import registry

DISK = pattern_disk(64 * 1024, seed=2)


@pytest.mark.parametrize(
    "name,image",
    [
        ("qcow2", qcow2_image(DISK)),
        ("qcow2", qcow2_image(DISK, compat="0.10")),
        ("qcow", qcow1_image(DISK)),
        ("qed", qed_image(DISK)),
        ("iso", iso_image()),
        ("raw", DISK),
        ("raw", b""),
    ],
)
def test_detect(name, image):
    assert registry.detect(io.BytesIO(image)) == name


def test_qcow2_iso_polyglot_refused():
    # A qcow2 header smuggled in front of an ISO volume: two formats claim it.
    image = bytearray(iso_image())
    header = qcow2_image(DISK)[:512]
    image[:512] = header
    with pytest.raises(errors.ImageFormatError, match="several formats"):
        registry.detect(io.BytesIO(bytes(image)))
