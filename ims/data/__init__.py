"""Data files shipped with IMS (read with importlib.resources)."""
