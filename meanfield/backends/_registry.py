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
    per-step lists (at least ``t`` and ``dt``).  Optional: ``options``, a dict of the options as the backend
    resolved them, which the result records (without it, the options given to :func:`simulate` are recorded, and a
    resume continues with those).  An optional class method ``validate_options(model, initial,
    options, times=None)`` checks the option values cheaply, without building the solver, and returns them as
    the run would use them (:func:`check_option_values`: configuration files and sweeps are checked with it
    before any run).  For checkpoints between save times (resume points), optional too: ``resume_options()``
    (the options that continue exactly from the current state, e.g. the step size wanted there), a hook
    ``on_step(t, h, **monitors)`` called after each step the run keeps, and ``step_marker()``, a tuple
    (t, number of logged steps, …) that changes with every change of the state, so that a Ctrl-C half-way
    through a step can tell the state is no longer the one the last ``on_step`` saw.  For a resumed run, optional:
    ``carry_steps(steps)``, called with the step log of the saved part before the continuation starts, so that
    run-wide counts (``max_steps``, a count among the diagnostics) go on as in a run never interrupted;
    ``carry_stage(t, stage)`` with the resume point's ``resume_stage()`` (an adaptive step's first stage); and
    ``carry_grid_origin(t_saved)``, the last save time before the resume point, from which the interrupted
    stretch's fixed steps or layers were counted (so that they go on on the same grid of times).
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


#: The methods :func:`meanfield.simulate` calls on every backend (the rest of :class:`Backend` is optional)
REQUIRED_METHODS = ("advance", "state", "diagnostics")


def register_backend(name: str):
    """Class decorator adding a backend to :data:`BACKENDS` under ``name`` (a built-in name is replaced).

    The class needs the methods of :class:`Backend` (docs/tutorials/extending.md has a tested example);
    :func:`meanfield.simulate` constructs it as ``cls(model, initial, **options)``.

    Parameters
    ----------
    name : str
        The name that ``simulate(..., backend=name)`` and configuration files use.

    Returns
    -------
    callable
        The decorator; it sets ``cls.name`` and returns the class.

    Raises
    ------
    TypeError
        ``name`` is not a non-empty string (e.g. ``@register_backend`` used without its name: the class was
        replaced by the decorator).
        The decorator raises it for what is not a class, or a class without ``advance``, ``state`` or
        ``diagnostics``.
    """
    if not isinstance(name, str) or not name.strip():
        raise TypeError(f"`name` must be a non-empty string, as in @register_backend(\"mine\"); got {name!r}.")

    def deco(cls):
        if not isinstance(cls, type):       # a function or an instance raised AttributeError on `cls.name`
            raise TypeError(f"@register_backend({name!r}) must decorate a class; got {cls!r}.")
        # a class without them was registered, and its first run failed inside simulate ("… has no attribute 'state'")
        missing = [m for m in REQUIRED_METHODS if not callable(getattr(cls, m, None))]
        if missing:
            raise TypeError(f"@register_backend({name!r}): class {cls.__name__} lacks the Backend method(s) {missing} "
                            "(advance(t_target) -> Status, state(), diagnostics(); see docs/tutorials/extending.md).")
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


def check_option_values(name: str, model, initial, options: dict, times=None) -> None:
    """Check the values of a run's backend options (not only their names) for ``model`` and ``initial``, and with
    the save ``times`` the number of fixed steps, cheaply and without running anything: what the backend would
    refuse when the run starts is refused now (``meanfield run`` checks every configuration file with it before
    the first run, a sweep every task before the first task).

    A backend with the class method ``validate_options(model, initial, options, times)`` checks itself (the
    particle backends on two probe tokens; spectral and hybrid run their ``__init__`` up to where they would
    build the solver).  A third-party backend without it is checked when its run starts.  Warnings are left to
    the run (they would show twice); so is the memory estimate (a sweep is read on one machine, run on others).
    """
    import warnings

    from .._memory import unchecked
    from ._stepper import check_fixed_step_count

    cls = get_backend(name)
    hook = getattr(cls, "validate_options", None)
    if hook is None:
        return
    with warnings.catch_warnings(), unchecked():      # memory: the run's machine checks it (sweep workers)
        warnings.simplefilter("ignore")
        resolved = hook(model, initial, options, times)
    if times is not None and len(times):
        check_fixed_step_count(resolved if isinstance(resolved, dict) else options, times[0], times[-1])
