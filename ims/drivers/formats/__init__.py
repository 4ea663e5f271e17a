"""Disk-image format plugins (the ``ims.formats`` namespace)."""
