"""Plugins loaded through stevedore: stores, formats, key managers."""
