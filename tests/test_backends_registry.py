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


def test_a_registered_backend_joins_the_builtins_and_unknown_names_are_refused(monkeypatch):
    monkeypatch.setattr(BACKENDS, "_classes", dict(BACKENDS._classes))
    cls = register_backend("mine")(type("Mine", (), {}))
    assert cls.name == "mine" and get_backend("mine") is cls and set(BUILTIN) < set(mf.BACKENDS)
    with pytest.raises(ValueError, match=r"`backend` must be one of \[.*'mine'.*\]; got backend='yours'"):
        get_backend("yours")
