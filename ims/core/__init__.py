"""The rules of IMS: plain Python, no HTTP."""
