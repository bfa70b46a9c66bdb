"""Deferred imports of heavy libraries, so that ``import meanfield`` stays fast."""


class LazyModule:
    """Stands for a module and imports it on first attribute access (``special = LazyModule("scipy.special")``)."""

    def __init__(self, name: str):
        self._name = name
        self._module = None

    def __getattr__(self, attr):
        if self._module is None:
            import importlib

            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)
