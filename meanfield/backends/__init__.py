"""The backends, one per file, listed in :data:`._registry.BUILTIN`.

Nothing is imported here: :mod:`._registry` imports the backend modules on first use of the registry, so
that ``import meanfield`` stays light.
"""
