"""The backend registry (meanfield/backends/_registry.py)."""
import subprocess
import sys

import pytest

import meanfield as mf
from meanfield.backends._registry import BACKENDS, BUILTIN, get_backend, register_backend


def test_every_builtin_backend_is_listed_under_its_own_name():
    assert set(BUILTIN) <= set(mf.BACKENDS)
    for name in BUILTIN:
        assert get_backend(name).name == name and BACKENDS[name] is get_backend(name)


def test_import_meanfield_imports_no_backend_until_the_registry_is_used():
    code = ("import sys, meanfield as mf; mods = [m for m in sys.modules if m.startswith('meanfield.backends._')]; "
            "print(sorted(mods)); len(mf.BACKENDS); print('meanfield.backends._spectral' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "['meanfield.backends._registry']" and out[1] == "True"


def _minimal_class(name):
    """A class with the methods register_backend asks for (what they do does not matter to registration)."""
    return type(name, (), {m: (lambda self, *a: None) for m in ("advance", "state", "diagnostics")})


def test_a_registered_backend_joins_the_builtins_and_unknown_names_are_refused(monkeypatch):
    len(BACKENDS)       # the built-ins loaded first: the restored registry keeps them (run alone, it lost them)
    monkeypatch.setattr(BACKENDS, "_classes", dict(BACKENDS._classes))
    cls = register_backend("mine")(_minimal_class("Mine"))
    assert cls.name == "mine" and get_backend("mine") is cls and set(BUILTIN) < set(mf.BACKENDS)
    with pytest.raises(ValueError, match=r"`backend` must be one of \[.*'mine'.*\]; got backend='yours'"):
        get_backend("yours")


class _Euler:
    """The Backend protocol's minimal methods (no ``options`` attribute): explicit Euler steps of Post-LN tokens."""

    def __init__(self, model, initial, step=0.01):
        self.model, self.p, self.h, self.t = model, initial, float(step), 0.0
        self.detail, self.step_log = "", {"t": [], "dt": []}

    @classmethod
    def option_defaults(cls):
        return {"step": 0.01}

    def advance(self, t_target):
        import numpy as np

        while self.t < t_target:
            h = min(self.h, t_target - self.t)
            v, _ = mf.particle_velocity(self.model, self.p, self.t)
            x = self.p.directions + h * v
            self.p = mf.Particles(x / np.linalg.norm(x, axis=1, keepdims=True))
            self.t = t_target if h == t_target - self.t else self.t + h
            self.step_log["t"].append(self.t)
            self.step_log["dt"].append(h)
        return mf.Status.OK

    def state(self):
        return self.p

    def diagnostics(self):
        return {"mean_alignment": mf.mean_alignment(self.p)}


def test_a_minimal_third_party_backend_keeps_its_options_through_save_and_resume(monkeypatch, tmp_path):
    """A backend without an ``options`` attribute (the protocol does not ask for one) had its options recorded as
    {}: its file said "the backend's defaults", and resume continued with step=0.01 instead of the run's 0.05, 4.4e-4
    off the uninterrupted run (20 tokens, t = 0.5).  Now the options as given are recorded: the same bits."""
    len(BACKENDS)
    monkeypatch.setattr(BACKENDS, "_classes", dict(BACKENDS._classes))
    register_backend("euler-test")(_Euler)
    model, p = mf.Model(1.0), mf.Particles.uniform(20, 3, seed=1)
    whole = mf.simulate(model, p, 0.5, backend="euler-test", step=0.05)
    assert whole.options == {"step": 0.05}
    mf.simulate(model, p, 0.25, backend="euler-test", step=0.05, checkpoint=tmp_path / "ck.h5")
    assert mf.load(tmp_path / "ck.h5").options == {"step": 0.05}
    resumed = mf.resume(tmp_path / "ck.h5", t_final=0.5)
    assert (resumed.final.directions == whole.final.directions).all()


def test_register_backend_is_public_and_refuses_a_missing_name(monkeypatch):
    """``@register_backend`` without its name replaced the class by the inner decorator, silently."""
    len(BACKENDS)       # the built-ins loaded first: the restored registry keeps them
    monkeypatch.setattr(BACKENDS, "_classes", dict(BACKENDS._classes))
    assert mf.register_backend is register_backend
    with pytest.raises(TypeError, match=r"`name` must be a non-empty string, as in @register_backend\(\"mine\"\)"):
        register_backend(type("Mine", (), {}))
    assert set(mf.BACKENDS) == set(BUILTIN)


def test_register_backend_refuses_what_is_not_a_class(monkeypatch):
    """A function (or an instance) under @register_backend("x") raised AttributeError on ``cls.name``, or was kept
    with a ``name`` set on it; it is refused by name, and the registry is unchanged."""
    len(BACKENDS)
    monkeypatch.setattr(BACKENDS, "_classes", dict(BACKENDS._classes))

    def stepper(model, initial):
        return None

    for obj in (42, stepper):
        with pytest.raises(TypeError, match=r"@register_backend\('x'\) must decorate a class; got "):
            register_backend("x")(obj)
    assert set(mf.BACKENDS) == set(BUILTIN)


def test_register_backend_refuses_a_class_without_the_backend_methods(monkeypatch):
    """A class without advance/state/diagnostics was registered, and its first run failed inside simulate with
    "AttributeError: 'Mine' object has no attribute 'state'"."""
    monkeypatch.setattr(BACKENDS, "_classes", dict(BACKENDS._classes))
    half = type("Half", (), {"advance": lambda self, t: None, "state": 1})
    with pytest.raises(TypeError, match=r"class Half lacks the Backend method\(s\) \['state', 'diagnostics'\]"):
        register_backend("half")(half)
    assert "half" not in BACKENDS
