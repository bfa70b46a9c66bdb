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
    per-step lists (at least ``t`` and ``dt``).  An optional class method ``validate_options(model, initial,
    options, times=None)`` checks the option values cheaply, without building the solver
    (:func:`check_option_values`: configuration files and sweeps are checked with it before any run).
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


class _Validated(Exception):
    """Raised by a dry spectral backend where the solver would be built: every value before it was accepted."""

    def __init__(self, options):
        super().__init__("validated")
        self.options = options


def _dry_spectral(cls, model, initial, options: dict) -> dict:
    """The options of a spectral(-like) backend checked by its own ``__init__``, stopped where it would build the
    basis and the attention (``_setup``): names, values and the initial density are checked, nothing is allocated
    (the memory estimate is left to the run: a sweep is read on one machine and run on others).  Returns the
    options as the run would use them."""
    from .._validate import exponential_filter

    exponential_filter(options.get("filter"))        # the backend compares its items with 0 unchecked
    dry = type(cls.__name__, (cls,), {"_setup": lambda self, lmax: _raise(_Validated(dict(self.options)))})
    try:
        dry(model, initial, **options)
    except _Validated as done:
        return done.options
    return dict(options)      # pragma: no cover - a backend whose __init__ never calls _setup was fully built


def _raise(err):
    raise err


def _dry_hybrid(cls, model, initial, options: dict) -> dict:
    """The hybrid's own options (particle backend and its options, ``oversample``, the monitor) checked by its
    ``__init__`` on two probe tokens (the particle phase from the start), then the options of its spectral phase
    as it passes them (see HybridBackend.__init__), dry."""
    from .._measures import Particles, ZonalDensity
    from ._hybrid import _same
    from ._spectral import _OPTIONS as spectral_defaults
    from ._spectral import SpectralBackend

    zonal = isinstance(initial, ZonalDensity) or (isinstance(initial, (list, tuple)) and initial
                                                  and isinstance(initial[0], ZonalDensity))
    if zonal or isinstance(initial, Particles):
        probe = initial if zonal else Particles(initial.positions[:2], None,
                                                None if initial.radii is None else initial.radii[:2])
    else:
        probe = Particles.uniform(2, getattr(model, "d", 3), seed=0)
    hybrid = cls(model, probe, **options)           # a zonal start is refused here, before any work
    opts = dict(hybrid.options)
    if isinstance(initial, Particles):
        return opts
    spectral = {k: v for k, v in opts.items() if k in spectral_defaults and k not in ("on_resolution_loss", "lmax_max")
                and (k in options or not _same(v, spectral_defaults[k]))}
    if opts["lmax_max"] is None:
        spectral["on_resolution_loss"] = "stop"
    else:
        spectral.update(on_resolution_loss="refine", lmax_max=opts["lmax_max"])
    _dry_spectral(SpectralBackend, model, initial, spectral)
    return opts


def check_option_values(name: str, model, initial, options: dict, times=None) -> None:
    """Check the values of a run's backend options (not only their names) for ``model`` and ``initial``, and with
    the save ``times`` the number of fixed steps, cheaply and without running anything: what the backend would
    refuse when the run starts is refused now (``meanfield run`` checks every configuration file with it before
    the first run, a sweep every task before the first task).

    A backend with the class method ``validate_options(model, initial, options, times)`` checks itself (the
    particle backends: on two probe tokens); the built-in spectral and hybrid backends are run through their
    ``__init__`` up to where they would build the solver.  A third-party backend without ``validate_options`` is
    checked when its run starts.  Warnings are left to the run (they would show twice).
    """
    import warnings

    from ._stepper import check_fixed_step_count

    from .._memory import unchecked

    cls = get_backend(name)
    with warnings.catch_warnings(), unchecked():      # memory: the run's machine checks it (sweep workers)
        warnings.simplefilter("ignore")
        hook = getattr(cls, "validate_options", None)
        if hook is not None:
            resolved = hook(model, initial, options, times)
        else:
            from ._hybrid import HybridBackend
            from ._spectral import SpectralBackend

            if isinstance(cls, type) and issubclass(cls, SpectralBackend):
                resolved = _dry_spectral(cls, model, initial, options)
            elif isinstance(cls, type) and issubclass(cls, HybridBackend):
                resolved = _dry_hybrid(cls, model, initial, options)
            else:
                return
    if times is not None and len(times):
        check_fixed_step_count(resolved if isinstance(resolved, dict) else options, times[0], times[-1])
