"""The registry of backends: ``BUILTIN``, ``BACKENDS``, ``get_backend`` and ``register_backend``.

The built-in backends are listed in :data:`BUILTIN` and imported on first use of the registry, which
keeps ``import meanfield`` light while ``meanfield.BACKENDS`` always lists every backend.  Third-party
backends join with the class decorator :func:`register_backend`.
"""
from __future__ import annotations

from collections.abc import Mapping
from importlib import import_module
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


BUILTIN = {  # name: (module of meanfield.backends, class), one backend per module
    "spectral": ("_spectral", "SpectralBackend"),
    "particles": ("_particles", "ParticlesBackend"),
    "particles-sh": ("_particles_sh", "ParticlesSHBackend"),
    "hybrid": ("_hybrid", "HybridBackend"),
}


class _BackendRegistry(Mapping):
    """{name: backend class}; the built-in backends are imported on first use."""

    def __init__(self):
        self._classes: dict[str, type] = {}
        self._builtins_loaded = False

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
    """Class decorator adding a backend to :data:`BACKENDS` under ``name`` (a built-in name is replaced)."""
    def deco(cls):
        _load_backends()
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
    if not BACKENDS._builtins_loaded:
        for name, (module, cls) in BUILTIN.items():
            BACKENDS._classes.setdefault(name, getattr(import_module(f".{module}", __package__), cls))
        BACKENDS._builtins_loaded = True      # only once all of them imported
