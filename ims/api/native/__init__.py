"""The IMS native API dialect (cloudimages, jobs)."""
