"""The base interface of a disk-image format plugin (``ims.formats``).

A format is one module with one ``DiskFormat`` subclass and one entry point
line in setup.cfg. Readers and inspectors treat every file as hostile: they
validate tables before trusting them, never read outside the given file and
bound every allocation. Any problem with the content is raised as
``ims.errors.ImageFormatError`` (or ``UnsafeImage`` for a refused feature),
never as another exception type.
"""

from __future__ import annotations

import abc
from typing import BinaryIO

from ims.disk.model import DiskReader, ImageInfo, Sample


class DiskFormat(abc.ABC):
    """One disk-image format: detection, inspection, reading, writing."""

    #: The short name used in entry points, disk_format and ``-f/-O``.
    name: str = ""
    #: True when ``write`` works on a forward-only stream (object stores).
    streaming_write: bool = False
    #: True when ``probe`` can say yes; raw is the fallback and never probes.
    detectable: bool = True

    @abc.abstractmethod
    def probe(self, sample: Sample) -> bool:
        """Tell cheaply whether the sample looks like this format."""

    @abc.abstractmethod
    def inspect(self, file: BinaryIO) -> ImageInfo:
        """Validate the image's metadata and describe it.

        ``file`` is seekable and readable. Raises ``ImageFormatError`` for a
        malformed image and ``UnsafeImage`` for a refused feature.
        """

    @abc.abstractmethod
    def open(self, file: BinaryIO) -> DiskReader:
        """Inspect, then return a reader of the virtual disk."""

    def can_write(self) -> bool:
        """Tell whether this format has a writer."""
        return False

    def write(
        self, reader: DiskReader, out: BinaryIO, options: dict[str, str] | None = None
    ) -> None:
        """Write ``reader``'s disk to ``out`` in this format.

        When ``streaming_write`` is true, ``out`` only needs ``write``;
        otherwise it must also be seekable. Unknown options raise ``Invalid``.
        """
        raise NotImplementedError(f"{self.name} has no writer")
