"""The virtual-disk model every format reader and writer shares."""

from ims.disk.model import BLOCK_SIZE, DiskReader, Extent, ImageInfo, Sample

__all__ = ["BLOCK_SIZE", "DiskReader", "Extent", "ImageInfo", "Sample"]
