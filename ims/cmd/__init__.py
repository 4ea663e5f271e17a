"""Console scripts: ims-api, ims-manage, ims-img."""
