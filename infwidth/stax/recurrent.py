"""Recurrent layers with weights shared across time: `SimpleRNN` (Elman).

``z_t = W_std / sqrt(n) W s_{t-1} + U_std / sqrt(d) U x_t + b_std b``, ``s_t = phi(z_t)``,
``s_{-1} = 0``, over sequences in the NT layout ``(N, T, d)``; the layer returns every state,
``(N, T, n)``. In the infinite-width limit (Yang 2019, "Wide feedforward or recurrent neural
networks of any architecture are Gaussian processes", arXiv:1910.12478; the NTK: Alemohammad
et al. 2021, "The recurrent neural tangent kernel", arXiv:2006.10246) the pre-activations are a
Gaussian process over (input, time) whose covariance satisfies, because ``W`` is the same at
every step,

    K_z(t, t') = W_std**2 E[phi(z_{t-1}) phi(z'_{t'-1})] + K_ux(t, t'),
    ntk_z(t, t') = K_z(t, t') + W_std**2 (E[phi' phi'] ntk_z)(t-1, t'-1) + U_std**2 ntk_x(t, t'),

with ``K_ux = U_std**2 x_t . x'_t' / d + b_std**2`` (the terms at ``t - 1 = -1`` vanish). Each
application of the map fixes one more step, so ``T`` applications give the exact kernel. The
expectations are the activation's own dual kernel (any activation layer of `infwidth.stax`
with a kernel, e.g. `Relu()`, `Erf()`, `Tanh()`), applied to all time pairs at once.

GRU and LSTM are not provided: their limits exist (Yang 2019 covers them as tensor programs),
but their gates multiply a sigmoid of one Gaussian by a state that is itself a product of
earlier gates, so the state is not a function of one Gaussian vector of fixed size: its
covariance needs expectations over the joint Gaussian of all gate pre-activations at all
earlier steps, a dimension that grows with ``T``, with no closed recursion of the kind above.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._layer import Layer, check_nonnegative, check_positive_int, check_shape, make_layer
from .activations import Relu
from .dense import Dense


def _shift(cov, time_axes: int = 2):
    """cov[..., t, t'] -> cov[..., t - 1, t' - 1], zero where t = 0 or t' = 0."""
    if cov is None:
        return None
    pads = [(0, 0)] * (cov.ndim - time_axes) + [(1, 0)] * time_axes
    idx = (Ellipsis,) + (slice(None, -1),) * time_axes
    return jnp.pad(cov, pads)[idx]


def SimpleRNN(out_dim: int, W_std: float = 1.0, U_std: float = 1.0, b_std: float | None = None,
              activation: Layer | None = None) -> Layer:
    """An Elman recurrent layer over sequences ``(N, T, d)``, returning all its states
    ``(N, T, out_dim)``, with its exact NNGP and NTK (the recursion in the module docstring).
    Not in neural-tangents. NTK parameterization.

    Args:
      out_dim: the width ``n`` of the state (the kernel does not depend on it).
      W_std: scale of the recurrent weights ``W`` (n x n, shared across time).
      U_std: scale of the input weights ``U`` (d x n).
      b_std: scale of the bias; ``None`` for none.
      activation: the state's activation layer (default `Relu()`), one with a kernel.

    The kernel needs the covariances between time steps (``diagonal_spatial=False``) and sees
    inputs of one spatial (time) axis; the output is not Gaussian (put a Dense next).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from infwidth import stax
      >>> init_fn, apply_fn, kernel_fn = stax.serial(
      ...     stax.SimpleRNN(64, W_std=0.9, b_std=0.1, activation=stax.Erf()),
      ...     stax.Flatten(), stax.Dense(1))
      >>> x = jax.random.normal(jax.random.PRNGKey(0), (3, 5, 2))  # 3 sequences of length 5
      >>> kernel_fn(x, get='ntk').shape
      (3, 3)
      >>> apply_fn(init_fn(jax.random.PRNGKey(1), x.shape)[1], x).shape
      (3, 1)
    """
    name = "SimpleRNN"
    out_dim = check_positive_int(out_dim, "out_dim", name)
    W_std = check_nonnegative(W_std, "W_std", name)
    U_std = check_nonnegative(U_std, "U_std", name)
    b_std = check_nonnegative(b_std, "b_std", name, allow_none=True)
    phi = Relu() if activation is None else activation
    if not (isinstance(phi, tuple) and len(phi) == 3 and all(map(callable, phi))):
        raise TypeError(f"{name}(activation={activation!r}): activation must be a layer such "
                        f"as stax.Relu() or stax.Erf().")
    _, phi_apply, phi_kernel = phi
    input_map = Dense(out_dim, U_std, b_std)

    def _check(shape):
        check_shape(shape, name, 3)
        if len(shape) != 3:
            raise ValueError(f"{name}: inputs must be sequences (N, T, d); got shape "
                             f"{tuple(shape)}.")

    def init_fn(key, input_shape):
        _check(input_shape)
        k_w, k_u, k_b = jax.random.split(key, 3)
        d = input_shape[-1]
        W = jax.random.normal(k_w, (out_dim, out_dim))
        U = jax.random.normal(k_u, (d, out_dim))
        b = None if b_std is None else jax.random.normal(k_b, (out_dim,))
        return tuple(input_shape[:-1]) + (out_dim,), (W, U, b)

    def apply_fn(params, x, **kwargs):
        W, U, b = params
        ux = U_std / x.shape[-1] ** 0.5 * jnp.einsum("ntd,dc->tnc", x, U)
        if b is not None:
            ux = ux + b_std * b[None, None]
        w = W_std / out_dim**0.5 * W

        def step(s, u):
            s = phi_apply((), s @ w + u)
            return s, s

        s0 = jnp.zeros((x.shape[0], out_dim), ux.dtype)
        return jnp.moveaxis(jax.lax.scan(step, s0, ux)[1], 0, 1)

    def kernel_map(k, **kwargs):
        if isinstance(k, (list, tuple)):
            raise ValueError(f"{name}: got {len(k)} inputs; it takes one sequence input.")
        _check(k.shape1)
        if k.diagonal_spatial:
            raise ValueError(
                f"{name}: the recurrence mixes time steps, so it needs the covariances between "
                f"them, which kernel_fn(..., diagonal_spatial=True) does not keep. Call "
                f"kernel_fn with diagonal_spatial=False (the default).")
        k_ux = input_map.kernel_fn(k)  # U x_t + b: Gaussian, covariances over time pairs
        var = W_std**2
        k_z = k_ux
        for _ in range(k.shape1[1]):  # step t of the recursion is exact after t + 1 passes
            k_phi = phi_kernel(k_z)
            ntk = None
            if k_ux.ntk is not None:
                ntk = k_ux.ntk + var * (_shift(k_phi.nngp) + _shift(k_phi.ntk))
            k_z = k_ux.replace(nngp=k_ux.nngp + var * _shift(k_phi.nngp), ntk=ntk,
                               cov1=k_ux.cov1 + var * _shift(k_phi.cov1),
                               cov2=None if k_ux.cov2 is None
                               else k_ux.cov2 + var * _shift(k_phi.cov2))
        return phi_kernel(k_z)

    return make_layer(name, init_fn, apply_fn, kernel_map, shape_fn=None)
