"""Cross-cutting request handling: request ids, identity, version negotiation."""
