"""Backends register themselves with :func:`meanfield._simulate.register_backend` on import."""
