"""Lazy vs rich training, measured: kernel movement across widths under 'ntk' and 'mup', the
output multiplier alpha, and the muP coordinate check. Every check is a trend fitted over at
least three widths (or alphas), with the tolerance stated next to it.

Setting: 8 training inputs on a sphere of radius 2 in R^4, targets sign(x_0), full-batch
gradient descent on half the mean squared error, one-hidden-layer ReLU networks (two hidden
layers for the coordinate check).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infwidth import mup, stax
from infwidth.analysis import kernel_movement, track_training, weight_movement
from infwidth.parameterization import ABC

WIDTHS = [128, 512, 2048]


def _data(n, seed):
    x = jax.random.normal(jax.random.PRNGKey(seed), (n, 4))
    return 2 * x / jnp.linalg.norm(x, axis=1, keepdims=True)


X = _data(8, 0)
Y = jnp.sign(X[:, :1])
X_TEST = _data(16, 5)


def _slope(xs, ys):
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def _movement(parameterization, width, steps=20, lr=1.0, check_recorded=False):
    init_fn, apply_fn, _ = stax.serial(stax.Dense(width, parameterization=parameterization),
                                       stax.Relu(),
                                       stax.Dense(1, parameterization=parameterization))
    _, p0 = init_fn(jax.random.PRNGKey(0), X.shape)
    if parameterization == "mup":
        rates, opt = mup.mup_learning_rates(p0), mup.sgd(lr, p0)
    else:
        rates, opt = None, lr
    tr = track_training(apply_fn, p0, X, Y, opt, steps, record_every=steps, lr_scales=rates)
    assert tr.loss[-1] < 0.1 * tr.loss[0], "the network did not train"
    if check_recorded:  # the recorded movement is kernel_movement of the same parameters
        assert np.isclose(tr.kernel_movement[-1],
                          kernel_movement(apply_fn, p0, tr.params, X, lr_scales=rates),
                          rtol=1e-3)
        assert np.isclose(tr.weight_movement[-1], weight_movement(p0, tr.params), rtol=1e-4)
    return tr.kernel_movement[-1]


@pytest.mark.float32_stream  # other draws: a task the width-128 net fits more slowly
def test_ntk_kernel_movement_vanishes_with_width():
    """'ntk': ||K_t - K_0|| / ||K_0|| after 20 steps shrinks with width.

    Theory bounds it by O(1/sqrt(width)) (Lee et al. 2019, arXiv:1902.06720) and predicts
    O(1/width) for the mean change (Dyer & Gur-Ari 2019, arXiv:1909.11304); measured here:
    slope about -0.6. Tolerance: the fitted log-log slope lies in [-1.2, -0.35], and the
    movement at width 2048 is below 0.05.
    """
    moves = [_movement("ntk", w, check_recorded=w == WIDTHS[0]) for w in WIDTHS]
    slope = _slope(WIDTHS, moves)
    assert -1.2 < slope < -0.35, (moves, slope)
    assert moves[-1] < 0.05, moves


@pytest.mark.float32_stream
def test_mup_kernel_movement_stays_order_one():
    """'mup' (SGD with muP learning rates): the learning-rate-weighted NTK moves by O(1) at
    every width. Measured: about 1.7 at each width. Tolerance: |slope| < 0.15 and movement
    above 0.5 at every width."""
    moves = [_movement("mup", w, check_recorded=w == WIDTHS[0]) for w in WIDTHS]
    slope = _slope(WIDTHS, moves)
    assert abs(slope) < 0.15, (moves, slope)
    assert min(moves) > 0.5, moves


def test_output_multiplier_moves_between_rich_and_lazy():
    """alpha * f trained with learning rate 1 / alpha**2 (Chizat et al. 2019,
    arXiv:1812.07956), targets shifted by f_0 so that f_t - f_0 fits sign(x_0).

    Measured at width 512 after 20 steps, on 16 held-out inputs: distance from the
    linearization about 0.18 / 0.03 / 0.008 and kernel movement about 3 / 0.07 / 0.01 for
    alpha = 0.03 / 0.3 / 3. Tolerance: both decrease monotonically in alpha with fitted
    log-log slope below -0.3; at alpha = 0.03 the distance exceeds 0.1 (does not track the
    linearization) and at alpha = 3 it is below 0.02 (tracks it).
    """
    alphas = [0.03, 0.3, 3.0]
    dist, move = [], []
    for alpha in alphas:
        init_fn, apply_fn, _ = stax.serial(stax.Dense(512), stax.Relu(), stax.Dense(1),
                                           stax.OutputScale(alpha))
        _, p0 = init_fn(jax.random.PRNGKey(0), X.shape)
        tr = track_training(apply_fn, p0, X, Y + apply_fn(p0, X), 1.0 / alpha**2, 20,
                            record_every=20, x_eval=X_TEST)
        dist.append(tr.linearization_distance[-1])
        move.append(tr.kernel_movement[-1])
    for values in (dist, move):
        assert all(a > b for a, b in zip(values, values[1:])), (dist, move)
        assert _slope(alphas, values) < -0.3, (dist, move)
    assert dist[0] > 0.1 and dist[-1] < 0.02, dist


def _two_hidden(parameterization):
    def layers(n):
        return [stax.Dense(n, parameterization=parameterization), stax.Relu(),
                stax.Dense(n, parameterization=parameterization), stax.Relu(),
                stax.Dense(1, parameterization=parameterization)]
    return layers


@pytest.mark.parametrize("parameterization", [
    pytest.param("mup", marks=pytest.mark.float32_stream), "standard"])
def test_coordinate_check_sgd(parameterization):
    """Sizes after 3 SGD steps at widths 128 / 512 / 2048 (Yang et al. 2022, arXiv:2203.03466).

    muP (learning rate 0.5 with muP per-layer rates): every layer's activation and its change
    since initialisation are flat in width; measured exponents within +-0.05. Tolerance:
    |exponent| < 0.15 for every layer.
    Standard parameterization (one learning rate, 0.02, for all layers): the updates grow;
    measured exponents about +0.45 (second hidden layer) and +1.0 (readout). Tolerance: above
    0.25 and 0.7; the readout's activation itself grows too (measured about +0.8, bound 0.5).
    """
    x = jax.random.normal(jax.random.PRNGKey(0), (16, 8))
    y = jnp.sign(x[:, :1])
    opt = (lambda p: mup.sgd(0.5, p)) if parameterization == "mup" else 0.02
    res = mup.coord_check(_two_hidden(parameterization), x, y, WIDTHS, opt, steps=3)
    upd, act = res.width_exponents("update"), res.width_exponents("activation")
    assert res.names[2] == "2:Dense" and res.names[4] == "4:Dense"
    if parameterization == "mup":
        assert np.all(np.abs(upd) < 0.15), upd
        assert np.all(np.abs(act) < 0.15), act
        assert res.loss[:, -1].max() < res.loss[:, 0].min(), res.loss
    else:
        assert upd[2] > 0.25 and upd[4] > 0.7, upd
        assert act[4] > 0.5, act


@pytest.mark.parametrize("parameterization", ["mup", "standard"])
def test_coordinate_check_adam(parameterization):
    """Adam, learning rate 0.02, 3 steps, widths 128 / 512 / 2048.

    muP (`mup.adam`, rates 1 / fan_in): update exponents measured within 0.06; tolerance
    |exponent| < 0.15 for every layer, and for the hidden activations. (The readout's output
    itself shrinks like width**-1/2 here: muP's readout starts near zero and 3 small steps do
    not yet dominate it.) Standard parameterization with plain optax.adam: hidden updates grow
    like width (measured +1.0, readout +1.9); tolerance above 0.7 and 1.5.
    """
    optax = pytest.importorskip("optax")
    x = jax.random.normal(jax.random.PRNGKey(0), (16, 8))
    y = jnp.sign(x[:, :1])
    opt = (lambda p: mup.adam(0.02, p)) if parameterization == "mup" else optax.adam(0.02)
    res = mup.coord_check(_two_hidden(parameterization), x, y, WIDTHS, opt, steps=3)
    upd, act = res.width_exponents("update"), res.width_exponents("activation")
    if parameterization == "mup":
        assert np.all(np.abs(upd) < 0.15), upd
        assert np.all(np.abs(act[:4]) < 0.15), act
    else:
        assert upd[2] > 0.7 and upd[4] > 1.5, upd


# --- general abc-parameterizations (Yang & Hu 2021, arXiv:2011.14522) ----------------------

# muP as in Tensor Programs IV (SGD): a = (-1/2, 0, 1/2), b = 1/2, c = 0; the input layer's n is
# its output width.
TP4_MUP = [ABC(-0.5, 0.5, 0.0, n="fan_out"), None, ABC(0.0, 0.5, 0.0), None, ABC(0.5, 0.5, 0.0)]
# The same under the SGD symmetry (a, b, c) -> (a + 1/2, b - 1/2, c - 1): multipliers instead
# of small initialisations and learning rates growing like n.
TP4_MUP_SHIFTED = [ABC(0.0, 0.0, -1.0, n="fan_out"), None, ABC(0.5, 0.0, -1.0), None,
                   ABC(1.0, 0.0, -1.0)]
NTK_ABC = [ABC(0.5, 0.0, 0.0), None, ABC(0.5, 0.0, 0.0), None, ABC(0.5, 0.0, 0.0)]


@functools.cache
def _abc_coord_check(name):
    optax = pytest.importorskip("optax")
    abcs = {"tp4": TP4_MUP, "shifted": TP4_MUP_SHIFTED, "ntk": NTK_ABC}[name]

    def layers(n):
        return [stax.Dense(n, parameterization=abcs[0]), stax.Relu(),
                stax.Dense(n, parameterization=abcs[2]), stax.Relu(),
                stax.Dense(1, parameterization=abcs[4])]

    def opt(p):
        rates = mup.abc_learning_rates(p, abcs)
        return optax.chain(optax.sgd(0.5), mup.scale_learning_rates(rates))

    x = jax.random.normal(jax.random.PRNGKey(0), (16, 8))
    return mup.coord_check(layers, x, jnp.sign(x[:, :1]), [64, 256, 1024], opt, steps=3)


def test_abc_symmetry_gives_the_same_training():
    """Two abc-parameterizations related by (a + t, b - t, c - 2t) train identically under SGD
    (Yang & Hu 2021, Section 3): same activations and updates at every width and step.
    Tolerance: relative difference below 1e-4 (float32)."""
    a, b = _abc_coord_check("tp4"), _abc_coord_check("shifted")
    assert np.abs(a.update - b.update).max() < 1e-4 * np.abs(a.update).max()
    assert np.abs(a.activation - b.activation).max() < 1e-4 * np.abs(a.activation).max()
    assert np.allclose(a.loss, b.loss, rtol=1e-4)


def test_abc_mup_is_flat_and_abc_ntk_freezes():
    """TP4's muP as an ABC: update exponents flat (measured within +-0.06; tolerance 0.15).
    The NTK parameterization as ABC(1/2, 0, 0) with one learning rate: the hidden layers'
    updates shrink with width (measured -0.33; tolerance below -0.2)."""
    flat = _abc_coord_check("tp4").width_exponents("update")
    assert np.all(np.abs(flat) < 0.15), flat
    lazy = _abc_coord_check("ntk").width_exponents("update")
    assert np.all(lazy[:4] < -0.2), lazy


# --- bad input ---------------------------------------------------------------------------


def test_bad_arguments_of_the_training_tools():
    init_fn, apply_fn, _ = stax.serial(stax.Dense(8), stax.Relu(), stax.Dense(1))
    _, p0 = init_fn(jax.random.PRNGKey(0), X.shape)
    with pytest.raises(ValueError, match=r"mup_learning_rates\(optimizer='rmsprop'\)"):
        mup.mup_learning_rates(p0, "rmsprop")
    with pytest.raises(ValueError, match="same structure as params"):
        mup.mup_learning_rates(p0, "sgd", base_params=p0[:1])
    with pytest.raises(ValueError, match="must be a prefix of params"):
        mup.abc_learning_rates(p0, [None, None])
    with pytest.raises(TypeError, match=r"optimizer must be a positive learning rate"):
        track_training(apply_fn, p0, X, Y, optimizer=-1.0, steps=2)
    with pytest.raises(ValueError, match=r"track_training\(steps=0\)"):
        track_training(apply_fn, p0, X, Y, optimizer=0.1, steps=0)
    with pytest.raises(ValueError, match="at least two widths"):
        mup.coord_check(lambda n: [stax.Dense(n)], X, Y, [64], 0.1)
    with pytest.raises(ValueError, match="different structures"):
        weight_movement(p0, p0[:1])
    zero = jax.tree_util.tree_map(lambda a: 0.0, p0)
    with pytest.raises(ValueError, match=r"kernel_movement|empirical_kernel.*must be positive"):
        kernel_movement(apply_fn, p0, p0, X, lr_scales=zero)
