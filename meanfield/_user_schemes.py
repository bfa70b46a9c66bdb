"""A user's schemes: :func:`register_scheme` checks a :class:`~meanfield._schemes.Scheme` row and adds it to the one
registry, :data:`~meanfield._schemes.SCHEMES`, beside the built-in rows; :func:`unregister_scheme` removes it.

Apart from the table (``_schemes``) because the check probes the row with a :class:`~meanfield.Model`, which itself
reads the table.
"""
from __future__ import annotations

import numpy as np

from ._model import Model
from ._schemes import BUILTIN_SCHEMES, SCHEMES, Scheme, register


def register_scheme(scheme: Scheme) -> Scheme:
    """Add a user's :class:`Scheme` to :data:`SCHEMES` under ``scheme.name``, for every backend and analysis.

    The row is read as the built-in ones are (docs/tutorials/extending.md, "Adding a scheme"):
    ``speed(r, a_norm, t, model)`` and ``radial(radial_a, a_norm, r, t, model)`` take numpy arrays that broadcast (one
    value per token or grid point) and return an array of their broadcast shape; ``layer(x, attn, h, t, model)`` maps
    the (n, d) stream to the next layer.  A process that reads a result of this scheme (``mf.load``, ``meanfield info``) must register
    it first.

    Parameters
    ----------
    scheme : Scheme
        The row.  Its name must not be a built-in scheme's; registering a name again replaces the user's row.

    Returns
    -------
    Scheme
        ``scheme``, as registered.

    Raises
    ------
    TypeError
        ``scheme`` is not a Scheme, its ``speed``, ``radial`` or ``layer`` is not callable, or a flag
        (``has_radius``, ``needs_norm``, ``continuous``, …) is not a bool.
    ValueError
        The name is empty or a built-in scheme's, or a continuous scheme has no ``speed``.
    """
    if not isinstance(scheme, Scheme):
        raise TypeError(f"`scheme` must be a meanfield.Scheme; got {type(scheme).__name__}.")
    if not isinstance(scheme.name, str) or not scheme.name.strip():
        raise ValueError(f"`scheme.name` must be a non-empty string; got name={scheme.name!r}.")
    if scheme.name in BUILTIN_SCHEMES:
        raise ValueError(f"`scheme.name` must not be a built-in scheme's ({sorted(BUILTIN_SCHEMES)}); got "
                         f"name={scheme.name!r}: register a copy under a new name (dataclasses.replace(row, name=...)).")
    for key in _FLAGS:      # has_radius="no" was taken as True: a row with a radius
        if not isinstance(getattr(scheme, key), (bool, np.bool_)):
            raise TypeError(f"`scheme.{key}` must be True or False; got {key}={getattr(scheme, key)!r} for scheme "
                            f"{scheme.name!r}.")
    for key in ("speed", "radial", "layer"):
        f = getattr(scheme, key)
        if not (callable(f) or (f is None and key != "layer")):
            raise TypeError(f"`scheme.{key}` must be callable{'' if key == 'layer' else ' or None'}; got "
                            f"{key}={f!r} for scheme {scheme.name!r}.")
    if scheme.continuous and scheme.speed is None:
        raise ValueError(f"scheme {scheme.name!r}: a continuous scheme needs `speed` (s(r, a_norm, t, model)); "
                         "set continuous=False for a scheme defined only by its layer map.")
    if scheme.speed is not None and not scheme.needs_norm and _reads_a_norm(scheme):
        # the spectral backend passes ‖A‖ = 1 to a row without needs_norm: a made-up Sandwich-LN (s = r√(1 + ‖A‖²))
        # registered without it ran 0.014 off its own run with it (lmax 14, t = 0.5), silently
        raise ValueError(f"scheme {scheme.name!r}: its speed or radial law reads `a_norm` (‖A‖; a NaN there gives "
                         "NaN), so the row must set needs_norm=True.")
    return register(scheme)


_FLAGS = ("has_radius", "needs_norm", "layer_normalizes_attention", "continuous", "normalize_qkv", "uses_alpha",
          "uses_tau")


def _reads_a_norm(scheme) -> bool:
    """Whether ‖A‖ enters the speed or the radial law (a NaN ‖A‖ gives NaN), probed at t = 0 with a default Model;
    a row that cannot be evaluated there (e.g. it needs τ) is left to the run."""
    nan, one = np.array([np.nan]), np.ones(1)
    try:
        with np.errstate(all="ignore"):
            used = bool(np.isnan(scheme.speed(one, nan, 0.0, Model(1.0))).any())
            if scheme.radial is not None:
                used |= bool(np.isnan(scheme.radial(one, nan, one, 0.0, Model(1.0))).any())
    except Exception:       # noqa: BLE001 (the row's own error shows when it runs, with its model)
        return False
    return used


def unregister_scheme(name: str) -> None:
    """Remove a scheme added by :func:`register_scheme` (the built-in ones stay).

    Parameters
    ----------
    name : str
        The user scheme's name.

    Raises
    ------
    TypeError
        ``name`` is not a string.
    ValueError
        ``name`` is a built-in scheme, or no registered scheme.
    """
    if not isinstance(name, str):       # a list raised "unhashable type: 'list'"
        raise TypeError(f"`name` must be a string, the name of a scheme added by register_scheme; got {name!r}.")
    if name in BUILTIN_SCHEMES:
        raise ValueError(f"`name` must be a scheme added by register_scheme; {name!r} is built in.")
    if name not in SCHEMES:
        raise ValueError(f"`name` must be a registered user scheme; got name={name!r} (registered: {sorted(SCHEMES)}).")
    del SCHEMES[name]
