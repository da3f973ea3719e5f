"""Which stax layer gives the dual kernel of a traced elementwise function.

The elementwise operations a model applies to one activation (``max(x, 0)``, the tanh form of
GELU, ``x * sigmoid(x)``, ...) are fused into one function ``phi``. ``phi`` is then compared on
a grid of points with the activations whose dual kernels have closed forms (arc-cosine kernels
for ``a * min(x, 0) + b * max(x, 0)``, Cho & Saul 2009; the arcsine kernel of erf, Williams 1997;
sin, exp, sign and the exact GELU, Tsuchida et al. 2021), up to a constant factor; if none
matches, the kernel is computed by Gauss-Hermite quadrature of ``phi`` itself
(`stax.ElementwiseNumerical`). A multiple ``phi(x) = c x`` is `stax.Scale`, which needs no
Gaussian input.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import erf

from .. import stax

_GRID = np.concatenate([np.linspace(-6.0, 6.0, 241), [-50.0, -20.0, 20.0, 50.0]])


def _sample(fn, dtype):
    with jax.ensure_compile_time_eval():
        return np.asarray(fn(jnp.asarray(_GRID, dtype)), dtype=np.float64)


def _close(a, b, dtype) -> bool:
    tol = 1e-10 if np.dtype(dtype) == np.float64 else 2e-6
    scale = max(np.max(np.abs(a)), np.max(np.abs(b)), 1e-30)
    return bool(np.all(np.abs(a - b) <= tol * scale))


def _gelu_exact(x):
    return 0.5 * x * (1 + erf(x / np.sqrt(2.0)))


# (name, function on numpy arrays, layer factory)
_CLOSED_FORMS = (
    ("erf", lambda t: erf(t), lambda: stax.Erf()),
    ("sin", jnp.sin, lambda: stax.Sin()),
    ("exp", jnp.exp, lambda: stax.Exp()),
    ("sign", jnp.sign, lambda: stax.Sign()),
    ("gelu", _gelu_exact, lambda: stax.Gelu()),
)


def linear_factor(fn, dtype):
    """``c`` when ``fn(x) = c * x`` on the grid, else ``None``."""
    y = _sample(fn, dtype)
    c = y[_GRID == 1.0][0] if np.any(_GRID == 1.0) else None
    if c is not None and _close(y, c * _GRID, dtype):
        return float(c)
    return None


def activation_layer(fn, dtype, deg: int = 25):
    """See `_find_activation`; the layer is built outside any trace, so that it can be kept."""
    with jax.ensure_compile_time_eval():
        return _find_activation(fn, dtype, deg)


def _find_activation(fn, dtype, deg):
    """The stax layer whose kernel map is that of ``fn`` (see the module docstring), and a name.

    >>> import jax.numpy as jnp
    >>> activation_layer(lambda x: jnp.maximum(x, 0.), jnp.float32)[1]
    'ABRelu(0.0, 1.0)'
    >>> activation_layer(jnp.tanh, jnp.float32)[1]
    'ElementwiseNumerical'
    """
    y = _sample(fn, dtype)
    one = int(np.argmin(np.abs(_GRID - 1.0)))
    minus = int(np.argmin(np.abs(_GRID + 1.0)))
    a, b = float(-y[minus]) + 0.0, float(y[one]) + 0.0
    if _close(y, b * np.maximum(_GRID, 0) + a * np.minimum(_GRID, 0), dtype):
        return stax.ABRelu(float(a), float(b)), f"ABRelu({float(a)}, {float(b)})"
    probe = int(np.argmin(np.abs(_GRID - 0.7)))
    for name, g, layer in _CLOSED_FORMS:
        gy = _sample(g, dtype)
        if gy[probe] == 0:
            continue
        c = y[probe] / gy[probe]
        if c != 0 and _close(y, c * gy, dtype):
            if _close(np.array([c]), np.array([1.0]), dtype):
                return layer(), name
            return stax.serial(layer(), stax.Scale(float(c))), f"{float(c)} * {name}"
    return stax.ElementwiseNumerical(fn, deg=deg), "ElementwiseNumerical"
