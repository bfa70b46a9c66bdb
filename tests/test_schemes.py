"""The scheme table: every row is complete, and each layer map tends to its ODE row."""
import numpy as np
import pytest

import meanfield as mf
from meanfield._schemes import normalize


def test_registry_has_the_eight_schemes():
    assert set(mf.SCHEMES) == {"post-ln", "pre-ln", "mix-ln", "peri-ln", "ngpt", "ln-scaling", "qkv-norm", "angpt"}
    with pytest.raises(ValueError, match="must be one of"):
        mf.get_scheme("rms-norm")


@pytest.mark.parametrize("name", sorted(mf.SCHEMES))
def test_row_is_complete(name):
    s = mf.SCHEMES[name]
    assert s.reference and s.description and callable(s.layer)
    if s.continuous:
        assert callable(s.speed)
        assert (s.radial is not None) == s.has_radius


def _attention(beta):
    """Dense SA attention of the directions of y, for a handful of tokens."""
    def attn(y):
        th = normalize(y)
        w = np.exp(beta * th @ th.T)
        return (w / w.sum(1, keepdims=True)) @ th
    return attn


@pytest.mark.parametrize("name", sorted(n for n in mf.SCHEMES if mf.SCHEMES[n].continuous))
def test_layer_map_is_a_first_order_step_of_the_ode(name):
    """(layer(x, h) − x)/h → (r P_θA/s + θ ṙ) as h → 0, with O(h) error."""
    model = mf.Model(2.0, name, tau=10.0 if name == "mix-ln" else None)
    s = model.scheme_def
    rng = np.random.default_rng(0)
    theta = normalize(rng.standard_normal((6, 3)))
    r = 1.0 + rng.random((6, 1)) if s.has_radius else np.ones((6, 1))
    x = r * theta
    attn = _attention(2.0)
    a = attn(x)
    radial_a = np.sum(theta * a, axis=1, keepdims=True)
    a_norm = np.linalg.norm(a, axis=1, keepdims=True)
    speed = s.speed(r, a_norm, 0.0, model)
    rdot = s.radial(radial_a, a_norm, r, 0.0, model) if s.has_radius else 0.0
    exact = r * (a - radial_a * theta) / speed + theta * rdot
    errs = [np.max(np.abs((s.layer(x, attn, h, 0.0, model) - x) / h - exact)) for h in (1e-3, 5e-4)]
    assert errs[1] < 1e-2
    if errs[0] > 1e-11:                       # additive residual layers (pre-ln, peri-ln) are exact in h
        assert 1.8 < errs[0] / errs[1] < 2.2  # first order in h


def test_mix_ln_switches_at_tau():
    m = mf.Model(1.0, "mix-ln", tau=1.0)
    s = m.scheme_def
    assert s.speed(np.array(3.0), np.array(1.0), 0.5, m) == 1.0
    assert s.speed(np.array(3.0), np.array(1.0), 1.5, m) == 3.0
    assert s.radial(np.array(0.2), np.array(1.0), np.array(3.0), 0.5, m) == 0.0


def test_angpt_layer_keeps_orthogonal_inputs_on_the_sphere():
    m = mf.Model(1.0, "angpt", alpha=0.5)
    x = np.array([[1.0, 0.0, 0.0]])
    out = m.scheme_def.layer(x, lambda y: np.array([[0.0, 2.0, 0.0]]), 0.3, 0.0, m)
    assert abs(np.linalg.norm(out) - 1) < 1e-15
