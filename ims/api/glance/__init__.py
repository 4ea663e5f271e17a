"""The OpenStack Image API v2 dialect."""
