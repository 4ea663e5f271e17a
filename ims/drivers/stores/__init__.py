"""Image data store plugins (the ``ims.stores`` namespace)."""
