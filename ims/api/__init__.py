"""The HTTP layer: translates requests to core calls and results to responses."""
