"""The HTTP edge: requests in, commands and queries out (see edge.app)."""
