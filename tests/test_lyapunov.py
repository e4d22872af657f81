"""Analytic Lyapunov spectrum and the discrete Moran equation (theory section 5)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import ortho_group

from pifskit import Chain, PifsError, get_schedule, make_chain
from pifskit.geometry import expansion_function
from pifskit.lyapunov import kaplan_yorke, lyapunov_exponents, moran_function
from pifskit.spectra import Spectrum, powerlaw


def classical_ky(ex):
    ex = np.sort(ex)[::-1]
    S = np.cumsum(ex)
    if ex[0] < 0:
        return 0.0
    if S[-1] >= 0:
        return float(ex.size)
    k = np.max(np.nonzero(S >= 0)[0]) + 1
    return k + S[k - 1] / abs(ex[k])


def test_exponents_equal_benettin_qr_on_explicit_matrices(rng):
    # the chain's Jacobian in a random basis: J_t = U diag(f_t(lambda)) U^T; Benettin QR recovers sum log f
    d = 12
    lam = np.sort(rng.lognormal(0, 2, d))[::-1]
    U = ortho_group.rvs(d, random_state=1)
    ch = make_chain(get_schedule("sd"), 15, "trailing")
    f = expansion_function(ch, lam)
    ex = lyapunov_exponents(ch, Spectrum(lam))

    def benettin(Q):
        acc = np.zeros(Q.shape[1])
        for ft in f:  # test-side reference loop over steps
            Q, R = np.linalg.qr((U * ft) @ U.T @ Q)
            acc += np.log(np.abs(np.diag(R)))
        return acc

    # frame started on the principal axes, ordered by exponent: exact
    order = np.argsort(-ex)
    np.testing.assert_allclose(benettin(U[:, order]), ex, rtol=1e-9)
    # finite time, random frame: k-volume growth never exceeds the top-k exponents' sum
    partial = np.cumsum(benettin(np.linalg.qr(rng.standard_normal((d, d)))[0]))
    assert (partial <= np.cumsum(ex) + 1e-9).all()
    assert partial[-1] == pytest.approx(np.sum(ex), rel=1e-9)  # the full volume is frame-independent


def test_moran_root_equals_classical_formula(rng):
    ch = make_chain(get_schedule("sd"), 10, "trailing")
    sp = powerlaw(16, 3, 2.0, 0.205)
    ex = lyapunov_exponents(ch, sp)
    D = kaplan_yorke(ex)
    assert D == pytest.approx(classical_ky(ex), rel=1e-12)
    assert abs(moran_function(ex, D)) < 1e-9 * np.abs(ex).max()
    assert 0 < D < sp.d


def test_ky_edge_cases():
    assert kaplan_yorke([-0.1, -1.0]) == 0.0
    assert kaplan_yorke([0.5, 0.2, -0.1]) == 3.0
    assert kaplan_yorke([1.0, -2.0]) == pytest.approx(1.5)
    assert kaplan_yorke([1.0, 0.5, -3.0]) == pytest.approx(2.5)
    assert kaplan_yorke([2.0, -np.inf]) == 1.0
    with pytest.raises(PifsError):
        kaplan_yorke([])
    with pytest.raises(PifsError):
        kaplan_yorke([np.nan, 1.0])


@given(st.lists(st.floats(-50, 50, allow_nan=False), min_size=1, max_size=40), st.floats(0.01, 100))
def test_ky_properties(ex, scale):
    ex = np.array(ex)
    D = kaplan_yorke(ex)
    assert 0 <= D <= ex.size
    assert D == pytest.approx(classical_ky(ex), rel=1e-9, abs=1e-9)
    assert kaplan_yorke(scale * ex) == pytest.approx(D, rel=1e-9, abs=1e-9)  # invariant to positive scaling


def test_moran_function_piecewise_linear():
    ex = np.array([1.0, 0.5, -2.0])
    D = np.array([0.0, 1.0, 1.5, 2.0, 2.75, 3.0])
    np.testing.assert_allclose(moran_function(ex, D), [0.0, 1.0, 1.25, 1.5, 0.0, -0.5])


def test_exponents_sorted_and_expanded():
    sp = powerlaw(8, 2, 1.5, 1.0)
    ch = make_chain(get_schedule("cosine"), 12, "uniform")
    ex = lyapunov_exponents(ch, sp)
    assert ex.shape == (sp.d,)
    assert (np.diff(ex) <= 0).all()
    # surrogate exponent of each eigenvalue, directly
    direct = np.log(expansion_function(ch, sp.eigenvalues)).sum(axis=0)
    np.testing.assert_allclose(ex, direct, rtol=1e-12)


def test_clean_endpoint_zero_eigenvalue_gives_minus_inf():
    ch = Chain(np.array([-2.0, 0.0, np.inf]))
    ex = lyapunov_exponents(ch, Spectrum(np.array([3.0, 1.0, 0.0])))
    assert ex[-1] == -np.inf
    assert 0 <= kaplan_yorke(ex) <= 3
