"""infwidth.predict.kernel_regression: the three solvers against closed forms (float64).

* matrix-free CG (Nystrom-preconditioned, streamed kernel tiles) agrees with the dense Cholesky
  solve to 1e-8, and an interrupted solve resumed from its checkpoint ends where an
  uninterrupted one does; a solve that does not converge raises, naming the residual;
* 'features' equals ridge regression on the whole feature matrix computed at once, and its
  variance equals the GP posterior variance of the kernel Phi Phi^T (computed directly);
* two processes under jax.distributed (2 CPU devices each) give the single-process results.
"""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from infwidth import predict, stax
from infwidth.features import feature_fn
from infwidth.predict import NotConvergedError


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True), jax.numpy_rank_promotion("raise"):
        yield


NET = stax.serial(stax.Dense(1, W_std=1.5, b_std=0.1), stax.Relu(),
                  stax.Dense(1, W_std=1.2, b_std=0.2))


def _data(n=200, d=5, n_test=30, seed=0):
    rng = np.random.RandomState(seed)
    x = rng.randn(n, d)
    return x, np.sin(x[:, :2]) + 0.1 * rng.randn(n, 2), rng.randn(n_test, d)


def _dense(x, y, x_test, lam_rel):
    """The posterior mean from the dense kernel with numpy's solver (independent of infwidth's
    solvers)."""
    kernel = jax.jit(NET.kernel_fn, static_argnames="get")
    k = np.asarray(kernel(x, x, get="nngp"))
    lam = lam_rel * np.mean(np.diag(k))
    k_tx = np.asarray(kernel(x_test, x, get="nngp"))
    return k_tx @ np.linalg.solve(k + lam * np.eye(len(x)), y)


def test_cg_and_cholesky_agree_with_the_dense_solve(tmp_path):
    x, y, xt = _data()
    want = _dense(x, y, xt, 1e-3)
    chol = predict.kernel_regression(NET.kernel_fn, x, y, solver="cholesky", diag_reg=1e-3)
    np.testing.assert_allclose(chol(xt), want, atol=1e-8 * np.abs(want).max())
    shapes = []

    def spy(a, b=None, get=None):  # records the kernel tiles CG asks for
        shapes.append((a.shape[0], a.shape[0] if b is None else b.shape[0]))
        return NET.kernel_fn(a, b, get)

    kw = dict(solver="cg", diag_reg=1e-3, tol=1e-11, tile_size=64, rank=32)
    cg = predict.kernel_regression(spy, x, y, **kw)
    assert max(max(s) for s in shapes) <= 64  # matrix-free: never more than a tile
    np.testing.assert_allclose(cg(xt), want, atol=1e-8 * np.abs(want).max())
    assert 0 < cg.info["iterations"] < len(x) and cg.info["residual"] <= 1e-11
    # interrupted after 5 iterations, then resumed from the checkpoint: the same end point
    path = tmp_path / "cg.npz"
    with pytest.raises(NotConvergedError, match=r"maxiter=5 .*residual"):
        predict.kernel_regression(spy, x, y, maxiter=5, checkpoint=path, **kw)
    resumed = predict.kernel_regression(spy, x, y, checkpoint=path, **kw)
    assert resumed.info["resumed_from"] == 5
    assert resumed.info["iterations"] == cg.info["iterations"]
    np.testing.assert_allclose(resumed(xt), cg(xt), rtol=0, atol=1e-12 * np.abs(want).max())
    with pytest.raises(ValueError, match="saved for another problem"):
        predict.kernel_regression(spy, x, 2 * y, checkpoint=path, **kw)


def test_features_solver_is_ridge_regression_on_the_features():
    x, y, xt = _data(n=150)
    key, m, lam_rel = jax.random.PRNGKey(3), 96, 1e-2
    fit = predict.kernel_regression(NET.kernel_fn, x, y, solver="features", n_features=m,
                                    key=key, diag_reg=lam_rel, tile_size=16, compute_var=True)
    out = fit(xt)
    phi = feature_fn(NET, key, m, get="nngp")
    f, ft = np.asarray(phi(x)), np.asarray(phi(xt))
    k = f @ f.T  # the GP with kernel Phi Phi^T, solved in the N x N form
    lam = lam_rel * np.mean(np.diag(k))
    reg = np.linalg.inv(k + lam * np.eye(len(x)))
    np.testing.assert_allclose(out.mean, ft @ f.T @ reg @ y, rtol=1e-7, atol=1e-9)
    var = np.sum(ft * ft, 1) - np.einsum("ij,jk,ik->i", ft @ f.T, reg, ft @ f.T)
    np.testing.assert_allclose(out.variance, var, rtol=1e-6, atol=1e-9)
    if jax.device_count() == 1:  # 150 rows in tiles of 16: 10 tiles, 8 per chunk on one device
        assert fit.info["chunks"] == 2


def test_feature_tiles_are_sized_from_the_feature_map():
    """Without tile_size, 'features' picks as many inputs per tile as fit in an eighth of the
    free memory given the feature map's largest intermediate per input: image networks get
    small tiles, MLPs the 1024 cap; the tile never changes the fit."""
    from infwidth.predict._regression_solvers import TILE, feature_tile

    cnn = stax.serial(stax.Conv(1, (3, 3), padding="SAME"), stax.Relu(),
                      stax.Conv(1, (3, 3), padding="SAME"), stax.Relu(), stax.Flatten(),
                      stax.Dense(1))
    phi = feature_fn(cnn, jax.random.PRNGKey(0), 64)
    images = np.zeros((4, 16, 16, 3))
    # one image's features hold at least 16 * 16 * 64 float64 values: at most 1/8 GiB over
    # 3 * 131 kB, i.e. 341 images, in a GiB
    small = feature_tile(phi, images, 2**30)
    assert 1 <= small <= 2**30 // 8 // (3 * 16 * 16 * 64 * 8)
    assert feature_tile(phi, images, 4 * 2**30) >= 4 * small - 3  # linear in the memory
    assert feature_tile(phi, images, 1) == 1
    mlp = feature_fn(NET, jax.random.PRNGKey(0), 64)
    assert feature_tile(mlp, np.zeros((4, 3)), 2**30) == TILE == feature_tile(mlp, images, None)
    x, y, xt = _data(n=40)
    auto = predict.kernel_regression(NET.kernel_fn, x, y, solver="features", n_features=32,
                                     key=jax.random.PRNGKey(1))
    told = predict.kernel_regression(NET.kernel_fn, x, y, solver="features", n_features=32,
                                     key=jax.random.PRNGKey(1), tile_size=8)
    assert auto.info["tile_size"] == TILE and told.info["tile_size"] == 8
    np.testing.assert_allclose(auto(xt), told(xt), rtol=1e-9, atol=1e-12)


def test_bad_arguments(monkeypatch):
    x, y, _ = _data(n=20)
    kr = predict.kernel_regression
    with pytest.raises(ValueError, match="solver must be one of"):
        kr(NET.kernel_fn, x, y, solver="lu")
    with pytest.raises(ValueError, match="get must be"):
        kr(NET.kernel_fn, x, y, get="cov1")
    with pytest.raises(ValueError, match="one target row"):
        kr(NET.kernel_fn, x, y[:5])
    with pytest.raises(ValueError, match="pass n_features"):
        kr(NET.kernel_fn, x, y, solver="features")
    with pytest.raises(ValueError, match="n_features"):
        kr(NET.kernel_fn, x, y, solver="features", n_features=0, key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="variances"):
        kr(NET.kernel_fn, x, y, solver="cg", compute_var=True)
    with pytest.raises(ValueError, match="diag_reg"):
        kr(NET.kernel_fn, x, y, diag_reg=-1.0)
    monkeypatch.setattr("infwidth.predict.regression.available_bytes", lambda: 1000)
    with pytest.raises(MemoryError, match="use solver='cg' or 'features'"):
        kr(NET.kernel_fn, x, y, solver="cholesky")


def test_two_processes_give_the_single_process_result(tmp_path):
    """examples/multiprocess_regression.py: 2 processes x 2 CPU devices under jax.distributed
    (coordinator on a free local port); process 0's predictions equal those computed here, in
    one process on one device, to 1e-6."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, os.path.join(root, "examples"))
    try:
        import multiprocess_regression as example
    finally:
        sys.path.pop(0)
    out = tmp_path / "mp.npz"
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, example.__file__, "--no-check", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    with np.load(out) as got:
        assert int(got["devices"]) == 4
        one = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("tiles",))
        cg, feats, _ = example.solve(one)
        np.testing.assert_allclose(got["cg"], cg, rtol=0, atol=1e-6)
        np.testing.assert_allclose(got["features"], feats, rtol=0, atol=1e-6)
        assert np.abs(cg).max() > 0.1  # not a trivial zero prediction


def test_blocked_cholesky_and_solves():
    """The blocked factor (used above 4096 rows) against numpy, with 64-row blocks."""
    from infwidth.predict._regression_solvers import _factor, _tri_solve

    rng = np.random.RandomState(5)
    a = rng.randn(300, 300)
    a = a @ a.T / 300
    low = np.tril(_factor(a, 0.5, block=64))
    np.testing.assert_allclose(low, np.linalg.cholesky(a + 0.5 * np.eye(300)), atol=1e-12)
    b = rng.randn(300, 2)
    x = _tri_solve(low, _tri_solve(low, b, False, 64), True, 64)
    np.testing.assert_allclose(x, np.linalg.solve(a + 0.5 * np.eye(300), b), atol=1e-10)


def test_auto_picks_by_size_and_memory():
    from infwidth.predict.regression import _pick

    key = jax.random.PRNGKey(0)
    assert _pick(20_000, 8, None, None, 24 * 2**30) == "cholesky"  # 9.6 GB of 24: fits
    assert _pick(50_000, 8, None, None, 24 * 2**30) == "cg"
    assert _pick(1_000_000, 8, 2048, key, 24 * 2**30) == "features"
    assert _pick(1_000_000, 8, None, None, 24 * 2**30) == "cg"  # no features asked for
