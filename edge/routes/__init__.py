"""The edge's routes, one module per actor they talk to."""
