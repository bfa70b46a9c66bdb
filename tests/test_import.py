"""`import meanfield` stays light: heavy libraries are imported on first use, never at import."""
import subprocess
import sys


def test_import_does_not_load_heavy_libraries():
    code = ("import sys, meanfield; heavy = ('pyshtools', 'matplotlib', 'dask', 'distributed', 'h5py', 'basix', "
            "'scipy.stats', 'scipy.optimize', 'scipy.integrate', 'ducc0', 'tqdm'); "
            "print(sorted(m for m in sys.modules if m.startswith(heavy)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_lazy_public_names_resolve():
    import meanfield as mf

    for name in mf._LAZY:
        assert getattr(mf, name) is not None
    assert set(mf._LAZY) <= set(dir(mf))


def test_star_import_gives_every_public_name():
    import meanfield as mf
    ns = {}
    exec("from meanfield import *", ns)
    assert set(mf._LAZY) <= set(ns) and {"simulate", "Density", "energy", "growth_rate"} <= set(ns)
    assert not any(name.startswith("_") for name in mf.__all__)
