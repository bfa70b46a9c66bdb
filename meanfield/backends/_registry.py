"""The registry of backends: ``register_backend`` (a class decorator), ``BACKENDS`` and ``get_backend``.

A backend module registers its class on import; the modules are imported on first use of the registry,
which keeps ``import meanfield`` light while ``meanfield.BACKENDS`` always lists every backend.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from .._trajectory import Status


class Backend(Protocol):
    """What :func:`simulate` needs of a backend.

    ``__init__(model, initial, **options)`` validates everything before any work (unknown options
    raise ``TypeError``: :func:`check_options`); the class method ``option_defaults()`` returns
    {option name: default}, with which configuration files are checked before any run; ``t`` is the
    current time; ``advance(t_target)`` integrates to exactly
    ``t_target`` and returns a :class:`Status` (with ``detail`` set to a diagnosis when not OK);
    ``state()`` returns an independent copy of the current state (a Density, Particles, …);
    ``diagnostics()`` returns scalar diagnostics of the current state; ``step_log`` is a dict of
    per-step lists (at least ``t`` and ``dt``).
    """

    name: str
    t: float
    detail: str
    step_log: dict

    @classmethod
    def option_defaults(cls) -> dict: ...
    def advance(self, t_target: float) -> Status: ...
    def state(self) -> Any: ...
    def diagnostics(self) -> dict: ...


class _BackendRegistry(Mapping):
    """{name: backend class}; the backend modules are imported (and register themselves) on first use,
    which keeps ``import meanfield`` light while ``meanfield.BACKENDS`` always lists every backend."""

    def __init__(self):
        self._classes: dict[str, type] = {}

    def _loaded(self) -> dict:
        _load_backends()
        return self._classes

    def __getitem__(self, name):
        return self._loaded()[name]

    def __iter__(self):
        return iter(self._loaded())

    def __len__(self):
        return len(self._loaded())

    def __repr__(self):
        return f"BACKENDS({sorted(self._loaded())})"


BACKENDS = _BackendRegistry()


def register_backend(name: str):
    """Class decorator adding a backend to :data:`BACKENDS` under ``name``."""
    def deco(cls):
        cls.name = name
        BACKENDS._classes[name] = cls
        return cls
    return deco


def get_backend(name: str) -> type:
    _load_backends()
    try:
        return BACKENDS[name]
    except (KeyError, TypeError):
        raise ValueError(f"`backend` must be one of {sorted(BACKENDS)}; got backend={name!r}.") from None


def _load_backends():
    # Backends register themselves on import; importing them here keeps `import meanfield` light.
    from . import _hybrid, _particles, _particles_sh, _spectral  # noqa: F401


def check_options(backend: str, options: dict, defaults: dict) -> dict:
    """Merge ``options`` into a backend's ``defaults``; unknown names raise TypeError listing the valid ones."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise TypeError(f"unknown option(s) {unknown} for backend={backend!r}; valid options are {sorted(defaults)}.")
    return {**defaults, **options}
