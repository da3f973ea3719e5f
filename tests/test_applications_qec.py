"""The [[5,1,3]] decoder (infwidth.applications.qec): the code's algebra, the exact
maximum-likelihood table against Monte Carlo and against the closed-form bound, and kernel
(NNGP / NTK) decoders against the optimal decoder at several physical error rates."""

import itertools

import numpy as np
import pytest
from helpers import x64

from infwidth import stax
from infwidth.applications import qec

CODE = qec.five_qubit_code()
NET = stax.serial(stax.Dense(1, W_std=1.5, b_std=0.1), stax.Relu(),
                  stax.Dense(1, W_std=1.5, b_std=0.1), stax.Relu(), stax.Dense(1))


def _group(gens):
    return [np.sum([g for g, c in zip(gens, cs) if c], axis=0) % 2 if any(cs)
            else np.zeros(gens.shape[1], np.int64)
            for cs in itertools.product([0, 1], repeat=len(gens))]


def test_stabilizers_and_logicals():
    g = CODE.stabilizers
    assert [qec.to_string(s) for s in g] == ["XZZXI", "IXZZX", "XIXZZ", "ZXIXZ"]
    assert not qec.symplectic_product(g[:, None], g[None]).any()          # abelian
    for logical in (CODE.logical_x, CODE.logical_z):
        assert not qec.symplectic_product(g, logical).any()              # in the normalizer
    assert int(qec.symplectic_product(CODE.logical_x, CODE.logical_z)) == 1
    group = {tuple(s) for s in _group(g)}
    assert len(group) == 16                                              # independent
    y_l = (CODE.logical_x + CODE.logical_z) % 2
    for logical in (CODE.logical_x, CODE.logical_z, y_l):                # not stabilizers
        assert all(tuple((logical + s) % 2) not in group for s in map(np.array, group))
    # pure errors: syndrome s, commuting with both logicals
    idx = qec.syndrome_index(qec.syndromes(CODE, CODE.pure_errors))
    assert idx.tolist() == list(range(16))
    assert not qec.symplectic_product(CODE.pure_errors, CODE.logical_x).any()
    assert not qec.symplectic_product(CODE.pure_errors, CODE.logical_z).any()


def test_every_weight_one_error_is_corrected():
    singles = np.stack([qec.to_symplectic("I" * q + c + "I" * (4 - q))
                        for q in range(5) for c in "XYZ"] + [qec.to_symplectic("IIIII")])
    s = qec.syndrome_index(qec.syndromes(CODE, singles))
    assert len(set(s[:15].tolist())) == 15 and 0 not in s[:15]           # a perfect code
    classes = qec.logical_classes(CODE, singles)
    for decisions in (qec.min_weight_decoder(CODE),
                      qec.ml_decoder(qec.class_probabilities(CODE, 0.1))):
        assert (decisions[s] == classes).all()
        assert qec.logical_error_rate(CODE, singles, decisions) == 0.0
    # a weight-two error is not always corrected (distance 3)
    assert qec.logical_error_rate(CODE, qec.to_symplectic("XXIII")[None],
                                  qec.min_weight_decoder(CODE)) == 1.0


@pytest.mark.parametrize("p", [0.05, 0.2])
def test_exact_table_against_sampling_and_bound(p):
    table = qec.class_probabilities(CODE, p)
    ml = qec.ml_decoder(table)
    exact = qec.exact_logical_error_rate(table, ml)
    # every weight <= 1 error is corrected, so the rate is at most P(weight >= 2), and the
    # leading term at small p is the 10 (p choose 2) ... bound, attained up to degeneracy
    bound = 1 - (1 - p) ** 5 - 5 * p * (1 - p) ** 4
    assert 0 < exact <= bound and exact > 0.9 * bound
    n = 100_000
    errors = qec.sample_depolarizing(n, p, seed=7)
    weight = (errors[:, :5] | errors[:, 5:]).sum(1)
    assert abs(np.mean(weight) - 5 * p) < 4 * np.sqrt(5 * p * (1 - p) / n)
    mc = qec.logical_error_rate(CODE, errors, ml)
    assert abs(mc - exact) < 4 * np.sqrt(exact * (1 - exact) / n), (mc, exact)
    # syndrome frequencies match the table's row sums
    freq = np.bincount(qec.syndrome_index(qec.syndromes(CODE, errors)), minlength=16) / n
    assert np.all(np.abs(freq - table.sum(1)) < 4 * np.sqrt(table.sum(1) / n) + 1e-12)


@pytest.mark.parametrize("p", [0.05, 0.15, 0.3])
def test_kernel_decoders_match_the_optimal_decoder(p):
    table = qec.class_probabilities(CODE, p)
    ml = qec.ml_decoder(table)
    test_errors = qec.sample_depolarizing(100_000, p, seed=11)
    r_ml = qec.logical_error_rate(CODE, test_errors, ml)
    sigma = np.sqrt(r_ml * (1 - r_ml) / len(test_errors))
    with x64():
        for get in ("nngp", "ntk"):
            dec = qec.kernel_decoder(NET.kernel_fn, CODE, qec.sample_depolarizing(1000, p, seed=3),
                                     get=get)
            r = qec.logical_error_rate(CODE, test_errors, dec)
            assert abs(r - r_ml) < 3 * sigma, (get, p, r, r_ml)


def test_a_decoder_that_ignores_the_syndrome_is_worse():
    """The comparison can fail: always guessing class I is far from optimal."""
    table = qec.class_probabilities(CODE, 0.1)
    blind = np.zeros(16, np.int64)
    assert qec.exact_logical_error_rate(table, blind) > 3 * qec.exact_logical_error_rate(
        table, qec.ml_decoder(table))


def test_bad_inputs():
    with pytest.raises(ValueError, match="letters I, X, Y, Z"):
        qec.to_symplectic("XQ")
    with pytest.raises(ValueError, match=r"p=1.5.*\[0, 1\]"):
        qec.class_probabilities(CODE, 1.5)
    with pytest.raises(ValueError, match="n_samples"):
        qec.sample_depolarizing(0, 0.1)
    with pytest.raises(ValueError, match="get must be"):
        qec.kernel_decoder(NET.kernel_fn, CODE, qec.sample_depolarizing(10, 0.1), get="cov1")
    with pytest.raises(ValueError, match="symplectic bits"):
        qec.syndromes(CODE, np.zeros((3, 8)))


def test_kernel_decoder_is_kernel_regression_on_all_samples():
    """The 16-syndrome solve equals plain ridge regression on every sample (the N x N solve,
    ridge 1e-3 times the mean diagonal), with a training set that misses some syndromes."""
    with x64():
        for p, n in ((0.03, 150),):
            errors = qec.sample_depolarizing(n, p, seed=5)
            x, y, x_all = qec._training_data(CODE, errors)
            for get in ("ntk",):
                k = np.asarray(NET.kernel_fn(x, None, get))
                k_star = np.asarray(NET.kernel_fn(x_all, x, get))
                alpha = np.linalg.solve(k + 1e-3 * np.trace(k) / n * np.eye(n), y)
                full = np.argmax(k_star @ alpha, axis=1)
                assert (qec.kernel_decoder(NET.kernel_fn, CODE, errors, get) == full).all()
