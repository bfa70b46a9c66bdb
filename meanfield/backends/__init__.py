"""The backends, one per file; each registers itself with :func:`._registry.register_backend` on import.

Nothing is imported here: :mod:`._registry` imports the backend modules on first use of the registry, so
that ``import meanfield`` stays light.
"""
