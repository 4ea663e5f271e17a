"""Find format plugins and tell, from content alone, which format a file is.

Probing is a resolver chain: every detectable format looks at the same
sample; raw is only the answer when nothing else claims the file, and a
file that two formats claim is refused (header smuggling).
"""

from __future__ import annotations

import functools
import os
from typing import BinaryIO

from stevedore import ExtensionManager

from ims import errors
from ims.disk.model import PROBE_HEAD, PROBE_TAIL, Sample
from ims.drivers.formats.base import DiskFormat

NAMESPACE = "ims.formats"

# NOTE(ims): an ISO 9660 image may carry an MBR/GPT for hybrid boot; the
# pair is one format, not a polyglot.
_COMPATIBLE = {frozenset({"iso", "gpt"})}


def _raise_load_failure(manager: object, entrypoint: object, exc: Exception) -> None:
    raise errors.ConfigError(reason=f"format plugin {entrypoint} failed to load: {exc}")


@functools.cache
def formats() -> dict[str, DiskFormat]:
    """Return every installed format plugin by name, loaded once."""
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
