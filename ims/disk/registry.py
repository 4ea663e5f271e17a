"""Find format plugins and tell, from content alone, which format a file is.

Probing is a resolver chain: every detectable format looks at the same
sample; raw is only the answer when nothing else claims the file, and a
file that two formats claim is refused (header smuggling).
"""

from __future__ import annotations

import functools
import importlib
import os
from typing import BinaryIO

from ims import errors
from ims.disk.model import PROBE_HEAD, PROBE_TAIL, Sample
from ims.drivers.formats.base import DiskFormat

NAMESPACE = "ims.formats"

#: The plugins IMS itself ships: the ``ims.formats`` entry points of setup.cfg,
#: repeated so that ``load`` need not scan every installed distribution (a
#: unit test keeps the two equal).
BUILTIN = {
    "raw": "ims.drivers.formats.raw:RawFormat",
    "iso": "ims.drivers.formats.iso:IsoFormat",
    "qcow": "ims.drivers.formats.qcow:QcowFormat",
    "qcow2": "ims.drivers.formats.qcow2:Qcow2Format",
    "qed": "ims.drivers.formats.qed:QedFormat",
    "vmdk": "ims.drivers.formats.vmdk:VmdkFormat",
    "vhd": "ims.drivers.formats.vhd:VhdFormat",
    "vhdx": "ims.drivers.formats.vhdx:VhdxFormat",
    "vdi": "ims.drivers.formats.vdi:VdiFormat",
    "zvhd": "ims.drivers.formats.zvhd:ZvhdFormat",
    "zvhd2": "ims.drivers.formats.zvhd2:Zvhd2Format",
}

# NOTE(ims): an ISO 9660 image may carry an MBR/GPT for hybrid boot; the
# pair is one format, not a polyglot.
_COMPATIBLE = {frozenset({"iso", "gpt"})}


def _raise_load_failure(manager: object, entrypoint: object, exc: Exception) -> None:
    raise errors.ConfigError(reason=f"format plugin {entrypoint} failed to load: {exc}")


@functools.cache
def formats() -> dict[str, DiskFormat]:
    """Return every installed format plugin by name, loaded once."""
    from stevedore import ExtensionManager

    mgr = ExtensionManager(
        NAMESPACE,
        invoke_on_load=True,
        on_load_failure_callback=_raise_load_failure,
        propagate_map_exceptions=True,
    )
    return {ext.name: ext.obj for ext in sorted(mgr, key=lambda ext: ext.name)}


def get(name: str) -> DiskFormat:
    """Return the format plugin called ``name`` or raise Invalid."""
    try:
        return formats()[name]
    except KeyError:
        raise errors.Invalid(f"Unknown disk format '{name}'") from None


def load(name: str) -> DiskFormat:
    """Load the one format plugin called ``name`` without loading the others.

    PERF(ims): a command that names its formats (``ims-img convert -f -O``)
    should not pay for importing every plugin, nor for stevedore's scan of
    every installed distribution's entry points (tenths of a second when its
    cache is cold). A name IMS ships is imported directly; any other name
    goes through the entry points, so third-party plugins still load.
    """
    target = BUILTIN.get(name)
    if target is None:
        return _load_entry_point(name)
    module, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)()
    except Exception as ex:
        raise errors.ConfigError(reason=f"format plugin {name} failed to load: {ex}") from ex


def _load_entry_point(name: str) -> DiskFormat:
    from stevedore import DriverManager
    from stevedore.exception import NoMatches

    try:
        manager = DriverManager(
            NAMESPACE, name, invoke_on_load=True, on_load_failure_callback=_raise_load_failure
        )
    except NoMatches:
        raise errors.Invalid(f"Unknown disk format '{name}'") from None
    return manager.driver


def sample_file(file: BinaryIO) -> Sample:
    """Read the probe sample (head and tail) of a seekable file."""
    file.seek(0, os.SEEK_END)
    size = file.tell()
    file.seek(0)
    head = file.read(PROBE_HEAD)
    tail = b""
    if size:
        start = max(0, size - PROBE_TAIL)
        file.seek(start)
        tail = file.read(size - start)
    file.seek(0)
    return Sample(head=head, tail=tail, size=size)


def probe(sample: Sample) -> str:
    """Name the one format that claims ``sample``; "raw" if none does.

    Raises ImageFormatError when more than one format claims it.
    """
    matches = sorted(
        name for name, fmt in formats().items() if fmt.detectable and _safe_probe(fmt, sample)
    )
    if not matches:
        return "raw"
    if len(matches) == 1 or frozenset(matches) in _COMPATIBLE:
        return matches[0]
    raise errors.ImageFormatError(
        format="image", reason=f"content matches several formats ({', '.join(matches)})"
    )


def _safe_probe(fmt: DiskFormat, sample: Sample) -> bool:
    try:
        return bool(fmt.probe(sample))
    except errors.ImageFormatError:
        return False


def detect(file: BinaryIO) -> str:
    """Name the format of a seekable file from its content."""
    return probe(sample_file(file))
