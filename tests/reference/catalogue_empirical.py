"""Small networks written as plain JAX functions ``f(params, x)`` (so that neural-tangents'
and infwidth's empirical kernels see exactly the same function and parameters), with the
``(trace_axes, diagonal_axes)`` combinations to check on each."""

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_HI = lax.Precision.HIGHEST


def _dense(x, w, b=None):
    y = jnp.dot(x, w, precision=_HI) / np.sqrt(w.shape[0])
    return y if b is None else y + b


def mlp(p, x):
    w1, b1, w2, b2, w3 = p
    h = jax.nn.relu(_dense(x, w1, b1))
    h = jax.nn.relu(_dense(h, w2, b2))
    return _dense(h, w3)


def conv(p, x):
    w1, b1, w2, b2 = p
    dn = ("NHWC", "HWIO", "NHWC")
    h = lax.conv_general_dilated(x, w1, (1, 1), "SAME", dimension_numbers=dn, precision=_HI)
    h = jnp.tanh(h / np.sqrt(np.prod(w1.shape[:3])) + b1)
    y = lax.conv_general_dilated(h, w2, (1, 1), "VALID", dimension_numbers=dn, precision=_HI)
    return y / np.sqrt(np.prod(w2.shape[:3])) + b2


def residual(p, x):
    w0, w1, b1, w2 = p
    h = _dense(x, w0)
    h = h + jnp.tanh(_dense(h, w1, b1))
    h = h + jax.nn.relu(_dense(h, w1))  # w1 used twice: no structure to exploit
    return _dense(h, w2)


def attention(p, x):
    wq, wk, wv, wo = p
    q, k, v = _dense(x, wq), _dense(x, wk), _dense(x, wv)
    logits = jnp.einsum("ntd,nsd->nts", q, k, precision=_HI) / np.sqrt(q.shape[-1])
    a = jax.nn.softmax(logits, axis=-1)
    return _dense(jnp.einsum("nts,nsd->ntd", a, v, precision=_HI), wo)


def _params(shapes, seed):
    rng = np.random.RandomState(seed)
    return [rng.randn(*s) for s in shapes]


NETS = {
    # name: (f, parameter shapes, input shape without batch)
    "mlp": (mlp, [(4, 6), (6,), (6, 5), (5,), (5, 3)], (4,)),
    "conv": (conv, [(3, 3, 2, 4), (4,), (2, 2, 4, 3), (3,)], (5, 5, 2)),
    "residual": (residual, [(4, 5), (5, 5), (5,), (5, 3)], (4,)),
    "attention": (attention, [(3, 6), (3, 6), (3, 6), (6, 2)], (4, 3)),
}

COMBOS = {
    2: [((-1,), ()), ((), ()), ((), (0,)), ((0,), ()), ((), (-1,)), ((-1,), (0,))],
    3: [((-1,), ()), ((), ()), ((1,), ()), ((-1,), (1,)), ((), (0, 1)), ((0, 2), ())],
    4: [((-1,), ()), ((), ()), ((1, 2, 3), ()), ((-1,), (0,)), ((3,), (1, 2)), ((1,), (0, 3))],
}
OUT_NDIM = {"mlp": 2, "conv": 4, "residual": 2, "attention": 3}


def combo_name(trace_axes, diagonal_axes):
    return f"t{''.join(str(a) for a in trace_axes)}_d{''.join(str(a) for a in diagonal_axes)}"


def inputs(name, seed=1):
    """x1 (3 inputs), x2 (2 inputs) and x2same (3 inputs, for traced/diagonal batch axes)."""
    shape = NETS[name][2]
    rng = np.random.RandomState(seed)
    return rng.randn(3, *shape), rng.randn(2, *shape), rng.randn(3, *shape)


def params(name, seed=1):
    """Deterministic float64 parameters (seed 1: every ReLU unit of the MLP is alive somewhere)."""
    return _params(NETS[name][1], seed)


def needs_same_batch(trace_axes, diagonal_axes, ndim):
    return any(a % ndim == 0 for a in tuple(trace_axes) + tuple(diagonal_axes))
