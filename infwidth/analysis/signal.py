"""Signal propagation at initialisation: fixed points, sensitivities, depth scales, criticality.

Mean-field theory of deep fully connected networks ``h^{l+1} = W^{l+1} phi(h^l) + b^{l+1}`` with
``W ~ N(0, W_std**2 / width)`` and ``b ~ N(0, b_std**2)`` (Poole et al. 2016, "Exponential
expressivity in deep neural networks through transient chaos", arXiv:1606.05340; Schoenholz et
al. 2017, "Deep information propagation", arXiv:1611.01232). With ``u``, ``v`` centred Gaussians:

* the variance map ``q -> W_std**2 E[phi(u)**2] + b_std**2`` (``u ~ N(0, q)``) and its stable
  fixed point ``q*``;
* the correlation map ``c -> (W_std**2 E[phi(u) phi(v)] + b_std**2) / q*`` (``u``, ``v`` with
  variance ``q*`` and correlation ``c``) and its stable fixed point ``c*``;
* ``chi_1 = W_std**2 E[phi'(u)**2]`` at ``q*``, the slope of the correlation map at ``c = 1``
  (the growth factor of a small perturbation's squared norm per layer): ``chi_1 < 1`` is the
  ordered phase (correlations go to 1), ``chi_1 > 1`` the chaotic phase (``c* < 1``) and
  ``chi_1 = 1`` the edge of chaos;
* ``chi_c = W_std**2 E[phi'(u) phi'(v)]`` at ``(q*, c*)``, the slope at ``c*``, and
  ``chi_q = W_std**2 dE[phi(u)**2]/dq`` at ``q*``, the slope of the variance map;
* the depth scales ``xi_q = -1 / log(chi_q)`` and ``xi_c = -1 / log(chi_c)``: ``|q^l - q*|`` and
  ``|c^l - c*|`` decay like ``exp(-l / xi)``; ``xi_c`` diverges at the edge of chaos.

Nothing here is specific to an activation: the expectations are the activation layer's own
dual-kernel maps, read off by feeding its ``kernel_fn`` a hand-made Gaussian `Kernel` (the NNGP
map from ``nngp``, the derivative map ``E[phi'(u) phi'(v)]`` from ``ntk``). Every activation of
the library works, closed-form or numerical.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..kernel import Kernel

__all__ = [
    "dual_kernel",
    "SignalPropagation",
    "signal_propagation",
    "correlation_propagation",
    "critical_W_std",
    "PhaseDiagram",
    "phase_diagram",
    "plot_phase_diagram",
    "ORDERED",
    "CRITICAL",
    "CHAOTIC",
    "UNBOUNDED",
]

# Phase codes of `phase_diagram`.
ORDERED, CRITICAL, CHAOTIC, UNBOUNDED = 0, 1, 2, 3

_Q_MAX = 1e12
_CHUNK = 32  # one compiled size per activation and dtype
_JUMP = 0.02  # largest change of chi_1 across the final bracket of a continuous crossing


# ----------------------------------------------------------------------------------------------
# dual-kernel maps from an activation layer


def _name(activation) -> str:
    fn = _kernel_fn_of(activation, check=False)
    return getattr(fn, "__name__", type(activation).__name__).replace(".kernel_fn", "")


def _kernel_fn_of(activation, check: bool = True):
    if isinstance(activation, tuple) and len(activation) == 3 and callable(activation[2]):
        return activation[2]
    if hasattr(activation, "kernel_fn") and callable(activation.kernel_fn):
        return activation.kernel_fn
    if check:
        raise TypeError(
            f"signal propagation needs an activation layer (init_fn, apply_fn, kernel_fn) such as "
            f"stax.Relu() or stax.Erf(); got {type(activation).__name__} {activation!r}. A plain "
            f"function has no kernel map: wrap it with stax.elementwise(fn, name, nngp_fn)."
        )
    return activation


def _gaussian_kernel(cov12, var1, var2) -> Kernel:
    """A 1 x 1 Gaussian `Kernel` with the given covariance and variances and an all-ones NTK."""
    one = jnp.ones((1, 1), jnp.result_type(cov12))
    return Kernel(nngp=jnp.reshape(cov12, (1, 1)), ntk=one, cov1=jnp.reshape(var1, (1,)),
                  cov2=jnp.reshape(var2, (1,)), shape1=(1, 1), shape2=(1, 1), x1_is_x2=False,
                  is_gaussian=True, diagonal_batch=True, diagonal_spatial=False)


def _raw_dual(kernel_fn, cov12, var1, var2):
    out = kernel_fn(_gaussian_kernel(cov12, var1, var2))
    return out.nngp[0, 0], out.ntk[0, 0], out.cov1[0], out.cov2[0]


def _checked_kernel_fn(activation):
    """The activation's kernel_fn, after checking (once per activation) that it maps Gaussian
    Kernels."""
    _kernel_fn_of(activation)  # a TypeError for things that are not layers
    try:
        hash(activation)
    except TypeError:
        return _check_kernel_fn.__wrapped__(activation)
    return _check_kernel_fn(activation)


@functools.lru_cache(maxsize=64)
def _check_kernel_fn(activation):
    kernel_fn = _kernel_fn_of(activation)
    name = _name(activation)
    fix = ("Signal propagation needs an elementwise nonlinearity with a kernel map, e.g. "
           "stax.Relu(), stax.Erf() or stax.elementwise(fn, name, nngp_fn).")
    x = jnp.asarray([0.5, 1.0, 1.0], jnp.result_type(float))
    try:
        out = kernel_fn(_gaussian_kernel(*x))
    except Exception as err:  # noqa: BLE001 - any failure means: no usable kernel map
        raise ValueError(f"{name}: its kernel_fn cannot map a Gaussian Kernel "
                         f"({type(err).__name__}: {err}). {fix}") from err
    if not isinstance(out, Kernel) or out.ntk is None or out.nngp.shape != (1, 1):
        raise ValueError(f"{name}: its kernel_fn does not return a 1 x 1 Kernel with an NTK for a "
                         f"1 x 1 Gaussian Kernel. {fix}")
    values = np.asarray([out.nngp[0, 0], out.ntk[0, 0], out.cov1[0]])
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name}: its kernel map gives non-finite values {values.tolist()} for a "
                         f"unit-variance Gaussian. {fix}")
    return kernel_fn


def dual_kernel(activation, cov12, var1, var2=None):
    """The dual-kernel maps of an activation layer at a centred Gaussian pair ``(u, v)``.

    Returns ``(E[phi(u) phi(v)], E[phi'(u) phi'(v)])`` for ``Var u = var1``, ``Var v = var2``
    (default ``var1``) and ``Cov(u, v) = cov12``; arrays broadcast. The values come from the
    layer's own ``kernel_fn`` (Cho & Saul 2009; Daniely et al. 2016, arXiv:1602.05897).

    Example:
      >>> from infwidth import stax
      >>> from infwidth.analysis import dual_kernel
      >>> nngp, d_nngp = dual_kernel(stax.Relu(), 1., 1.)   # E[relu(u)^2] = E[1{u>0}] = 1/2
      >>> round(float(nngp), 6), round(float(d_nngp), 6)
      (0.5, 0.5)
    """
    kernel_fn = _checked_kernel_fn(activation)
    var2 = var1 if var2 is None else var2
    dtype = jnp.result_type(float)
    cov12, var1, var2 = jnp.broadcast_arrays(*(jnp.asarray(a, dtype) for a in (cov12, var1, var2)))
    shape = cov12.shape
    f = jax.vmap(lambda c, a, b: _raw_dual(kernel_fn, c, a, b)[:2])
    nngp, d_nngp = f(cov12.ravel(), var1.ravel(), var2.ravel())
    return nngp.reshape(shape), d_nngp.reshape(shape)


# ----------------------------------------------------------------------------------------------
# fixed points, slopes and depth scales


class SignalPropagation(NamedTuple):
    """Mean-field quantities of `signal_propagation` (arrays of the broadcast shape of the
    hyperparameters).

    Attributes:
      q_star: the stable fixed point of the variance map (``inf`` where the variance grows
        without bound, e.g. ReLU with ``W_std**2 > 2``).
      c_star: the stable fixed point of the correlation map (1 in the ordered phase).
      chi_1: ``W_std**2 E[phi'(u)**2]`` at ``q*``: < 1 ordered, > 1 chaotic, = 1 critical.
      chi_c: ``W_std**2 E[phi'(u) phi'(v)]`` at ``(q*, c*)``, the correlation map's slope at ``c*``.
      chi_q: the variance map's slope at ``q*``.
      xi_q, xi_c: depth scales ``-1 / log(chi_q)`` and ``-1 / log(chi_c)`` (``inf`` where the
        slope is 1 or more: no exponential approach, e.g. at the edge of chaos).

    Where ``q_star`` is ``inf`` the slopes are those at the search ceiling ``q = 1e12`` (the
    large-variance limit, e.g. ``W_std**2 / 2`` for ReLU).
    """

    q_star: Any
    c_star: Any
    chi_1: Any
    chi_c: Any
    chi_q: Any
    xi_q: Any
    xi_c: Any


def _floor(dtype):
    return 1e-30 if jnp.finfo(dtype).bits == 32 else 1e-150


def _depth_scale(chi):
    """``-1 / log(chi)``; 0 where chi <= 0 and inf where chi >= 1 (no exponential approach)."""
    log = jnp.log(jnp.clip(chi, 1e-30, 1.0))
    scale = -1.0 / jnp.where(log >= 0, -1, log)
    return jnp.where(chi <= 0, 0.0, jnp.where(log >= 0, jnp.inf, scale))


def _variance_slope(kernel_fn, q):
    """``dE[phi(u)**2]/dq``: autodiff of the diagonal map, central differences where it is not
    finite (a numerical map may not be differentiable at correlation exactly 1)."""
    def diag(v):
        return _raw_dual(kernel_fn, v, v, v)[2]

    ad = jax.jvp(diag, (q,), (jnp.ones_like(q),))[1]
    h = 1e-3 * q
    fd = (diag(q + h) - diag(q - h)) / (2 * h)
    return jnp.where(jnp.isfinite(ad), ad, fd)


def _bisect(f, lo, hi, n):
    """Root of f in [lo, hi] with f(lo) >= 0 > f(hi) (or the reverse order of lo, hi)."""
    def body(_, bounds):
        a, b = bounds
        mid = (a + b) / 2
        up = f(mid) >= 0
        return jnp.where(up, mid, a), jnp.where(up, b, mid)

    a, b = jax.lax.fori_loop(0, n, body, (lo, hi))
    return (a + b) / 2


def _propagate_one(kernel_fn, w2, b2, q0):
    dtype = jnp.result_type(w2)
    floor = _floor(dtype)
    n_bisect = 64 if jnp.finfo(dtype).bits > 32 else 40

    def q_map(q):
        return w2 * _raw_dual(kernel_fn, q, q, q)[2] + b2

    def g(log_q):
        q = jnp.exp(log_q)
        return q_map(q) - q

    # 1. The stable variance fixed point the iteration q -> q_map(q) from q0 converges to: the
    # first root of g(q) = q_map(q) - q in the direction q moves. Bracket it on a grid of powers
    # of 2 from q0 (up to _Q_MAX: unbounded; down to the floor: q* = 0), then bisect in log q.
    log_q0 = jnp.log(jnp.asarray(q0, dtype))
    g0 = g(log_q0)
    direction = jnp.where(g0 > 0, 1.0, -1.0).astype(dtype)
    log2 = jnp.log(jnp.asarray(2.0, dtype))
    n_steps = int(math.ceil(math.log2(_Q_MAX / floor))) + 1

    def search_cond(state):
        i, log_q, _ = state
        same_sign = direction * g(log_q) > 0
        inside = (log_q < jnp.log(_Q_MAX)) & (log_q > jnp.log(floor))
        return (i < n_steps) & same_sign & inside

    def search_body(state):
        i, log_q, _ = state
        return i + 1, log_q + direction * log2, log_q

    _, log_end, log_prev = jax.lax.while_loop(search_cond, search_body, (0, log_q0, log_q0))
    crossed = direction * g(log_end) <= 0
    unbounded = (direction > 0) & ~crossed
    vanished = (direction < 0) & ~crossed
    root = _bisect(lambda lq: direction * g(lq), log_prev, log_end, n_bisect)
    q = jnp.where(g0 == 0, jnp.exp(log_q0),
                  jnp.where(unbounded, _Q_MAX, jnp.where(vanished, floor, jnp.exp(root))))

    # 2. slopes at c = 1 and of the variance map
    chi_1 = w2 * _raw_dual(kernel_fn, q, q, q)[1]
    chi_q = w2 * _variance_slope(kernel_fn, q)

    # 3. The correlation fixed point: c = 1 when it is stable (chi_1 <= 1); otherwise the
    # smallest root c* of c_map(c) - c in [0, 1) (the map is increasing on [0, 1], so the
    # iteration from any c in [0, c*] converges there), by bisection in log(1 - c).
    q_next = q_map(q)

    def gc(t):  # t = log(1 - c)
        c = 1 - jnp.exp(t)
        return (w2 * _raw_dual(kernel_fn, c * q, q, q)[0] + b2) / q_next - c

    # 1 - c = sqrt(eps): close enough to 1 that c_map(c) - c = -(chi_1 - 1)(1 - c) to first
    # order, far enough that rounding of the map (~eps) does not decide the sign
    t_min = jnp.log(jnp.sqrt(jnp.asarray(jnp.finfo(dtype).eps, dtype)))
    chaotic = (chi_1 > 1) & (gc(t_min) < 0)
    t = _bisect(gc, jnp.zeros((), dtype), t_min, n_bisect)
    c = jnp.where(chaotic, jnp.where(gc(jnp.zeros((), dtype)) <= 0, 0.0, 1 - jnp.exp(t)), 1.0)
    c = c.astype(dtype)
    chi_c = jnp.where(chaotic, w2 * _raw_dual(kernel_fn, c * q, q, q)[1], chi_1)

    q_star = jnp.where(unbounded, jnp.inf, jnp.where(vanished, 0.0, q))
    return SignalPropagation(q_star, c, chi_1, chi_c, chi_q, _depth_scale(chi_q),
                             _depth_scale(chi_c))


@functools.lru_cache(maxsize=64)
def _batched(kernel_fn):
    return jax.jit(jax.vmap(functools.partial(_propagate_one, kernel_fn), in_axes=(0, 0, None)))


def _hyper(value, arg, fn):
    arr = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{fn}({arg}={value!r}): {arg} must be non-negative and finite.")
    return arr


def signal_propagation(activation, W_std, b_std=0.0, *, q0: float = 1.0) -> SignalPropagation:
    """Fixed points, sensitivities and depth scales of a deep network ``Dense(W_std, b_std)``
    followed by ``activation``, repeated (Poole et al. 2016, arXiv:1606.05340; Schoenholz et al.
    2017, arXiv:1611.01232).

    Args:
      activation: an elementwise activation layer, e.g. ``stax.Erf()``; its ``kernel_fn``
        supplies the expectations, so closed-form and numerical activations both work.
      W_std, b_std: weight and bias standard deviations (numbers or arrays; they broadcast).
      q0: the pre-activation variance of the inputs: ``q*`` is the stable fixed point the
        variance map converges to from there (it matters only where there are several, e.g.
        GELU, whose variance vanishes from small ``q0`` and explodes from large ``q0`` at some
        ``W_std``).

    Returns:
      a `SignalPropagation` of arrays with the broadcast shape of ``W_std`` and ``b_std``.

    Example:
      >>> from infwidth import stax
      >>> from infwidth.analysis import signal_propagation
      >>> sp = signal_propagation(stax.Relu(), W_std=2**0.5 * 0.9, b_std=0.1)
      >>> round(float(sp.chi_1), 4), round(float(sp.q_star), 4)   # 0.81, 0.01 / (1 - 0.81)
      (0.81, 0.0526)
      >>> round(float(sp.xi_c), 3)                                 # -1 / log(0.81)
      4.746
    """
    w = _hyper(W_std, "W_std", "signal_propagation")
    b = _hyper(b_std, "b_std", "signal_propagation")
    if not q0 > 0:
        raise ValueError(f"signal_propagation(q0={q0!r}): q0 must be positive.")
    kernel_fn = _checked_kernel_fn(activation)
    w, b = np.broadcast_arrays(w, b)
    shape = w.shape
    dtype = jnp.result_type(float)
    # fixed-size chunks: one compilation per activation, whatever the grid
    w2, b2 = w.ravel() ** 2, b.ravel() ** 2
    n = w2.size
    chunk = _CHUNK
    pad = -n % chunk
    w2, b2 = np.concatenate([w2, np.ones(pad)]), np.concatenate([b2, np.zeros(pad)])
    fn = _batched(kernel_fn)
    q0 = jnp.asarray(q0, dtype)
    parts = [fn(jnp.asarray(w2[i:i + chunk], dtype), jnp.asarray(b2[i:i + chunk], dtype), q0)
             for i in range(0, n + pad, chunk)]
    return SignalPropagation(*(jnp.concatenate(x)[:n].reshape(shape) for x in zip(*parts)))


def correlation_propagation(activation, W_std, b_std, q0, c0, depth: int):
    """Variance ``q^l`` and correlation ``c^l`` of a pair of inputs layer by layer.

    Both inputs start with pre-activation variance ``q0`` and correlation ``c0`` (layer 0); the
    maps of the module docstring give layers 1..depth. Returns two arrays of length ``depth + 1``.

    Example:
      >>> from infwidth import stax
      >>> from infwidth.analysis import correlation_propagation
      >>> q, c = correlation_propagation(stax.Relu(), 2**0.5, 0., q0=1., c0=0., depth=1)
      >>> q.round(4).tolist(), c.round(4).tolist()    # the arc-cosine map: c1 = 1/pi
      ([1.0, 1.0], [0.0, 0.3183])
    """
    w2 = float(_hyper(W_std, "W_std", "correlation_propagation")) ** 2
    b2 = float(_hyper(b_std, "b_std", "correlation_propagation")) ** 2
    if not q0 > 0 or not -1 <= c0 <= 1:
        raise ValueError(f"correlation_propagation(q0={q0!r}, c0={c0!r}): q0 must be positive and "
                         f"c0 in [-1, 1].")
    kernel_fn = _checked_kernel_fn(activation)
    dtype = jnp.result_type(float)

    def step(state, _):
        q, c = state
        nngp, _, var, _ = _raw_dual(kernel_fn, c * q, q, q)
        q_new = w2 * var + b2
        c_new = jnp.clip((w2 * nngp + b2) / q_new, -1.0, 1.0)
        return (q_new, c_new), (q_new, c_new)

    init = (jnp.asarray(q0, dtype), jnp.asarray(c0, dtype))
    _, (qs, cs) = jax.lax.scan(step, init, None, length=int(depth))
    return (np.concatenate([[q0], np.asarray(qs)]), np.concatenate([[c0], np.asarray(cs)]))


# ----------------------------------------------------------------------------------------------
# criticality


def _critical_line(activation, b_std, W_max, n_grid=32, rounds=5):
    """Smallest W_std with chi_1 = 1 for each b_std (nan where none below W_max)."""
    b = np.atleast_1d(np.asarray(b_std, np.float64))
    lo = np.full(b.shape, 0.0)
    hi = np.full(b.shape, float(W_max))
    found = np.zeros(b.shape, bool)
    for r in range(rounds):
        t = np.linspace(0.0, 1.0, n_grid)
        grid = lo[:, None] + (hi - lo)[:, None] * t[None, :]
        if r == 0:
            grid[:, 0] = 1e-3 * W_max
        b_grid = np.broadcast_to(b[:, None], grid.shape)
        chi = np.asarray(signal_propagation(activation, grid, b_grid).chi_1, np.float64)
        above = chi >= 1
        first = np.argmax(above, axis=1)
        if r == 0:
            found = above.any(axis=1)
        j = np.clip(first, 1, n_grid - 1)
        rows = np.arange(len(b))
        lo, hi = grid[rows, j - 1], grid[rows, j]
    # linear interpolation of chi_1 - 1 inside the last bracket
    chi_lo = np.asarray(signal_propagation(activation, lo, b).chi_1, np.float64)
    chi_hi = np.asarray(signal_propagation(activation, hi, b).chi_1, np.float64)
    differ = chi_hi != chi_lo
    frac = np.clip(np.where(differ, (1 - chi_lo) / np.where(differ, chi_hi - chi_lo, 1), 0.5), 0, 1)
    w = lo + frac * (hi - lo)
    # chi_1 jumps across 1 where the stable q* disappears (a saddle-node bifurcation, e.g. GELU
    # at small b_std): that is an explosion of the variance, not an edge of chaos.
    continuous = np.abs(chi_hi - chi_lo) < _JUMP
    return np.where(found & continuous, w, np.nan), np.where(found & ~continuous, w, np.nan)


def critical_W_std(activation, b_std: float = 0.0, *, W_max: float = 10.0) -> float:
    """The weight scale of the edge of chaos: the smallest ``W_std`` with ``chi_1 = 1`` at the
    fixed point ``q*`` (Poole et al. 2016, arXiv:1606.05340; Schoenholz et al. 2017,
    arXiv:1611.01232).

    Gives He initialisation ``W_std**2 = 2`` for ReLU, ``2 / (1 + alpha**2)`` for
    ``LeakyRelu(alpha)``, and ``W_std = 1 / |phi'(0)|`` for odd saturating activations at
    ``b_std = 0`` (Glorot: 1 for tanh and a unit-slope erf; ``pi / 4`` squared for ``erf``).

    Args:
      activation: an elementwise activation layer.
      b_std: the bias standard deviation.
      W_max: search ``W_std`` in ``(0, W_max]``; a ValueError says if no critical point is there.

    Example:
      >>> from infwidth import stax
      >>> from infwidth.analysis import critical_W_std
      >>> round(critical_W_std(stax.Relu()) ** 2, 4)
      2.0
      >>> round(critical_W_std(stax.LeakyRelu(0.5)) ** 2, 4)   # 2 / (1 + 0.25)
      1.6
    """
    b = float(_hyper(b_std, "b_std", "critical_W_std"))
    if not W_max > 0:
        raise ValueError(f"critical_W_std(W_max={W_max!r}): W_max must be positive.")
    edge, jump = (float(v[0]) for v in _critical_line(activation, b, W_max))
    if not math.isnan(jump):
        raise ValueError(
            f"critical_W_std({_name(activation)}, b_std={b}): chi_1 jumps over 1 at W_std = "
            f"{jump:.4g}, where the stable fixed point q* disappears and the variance explodes; "
            f"there is no edge of chaos at this b_std (see phase_diagram); try a larger b_std.")
    if math.isnan(edge):
        raise ValueError(f"critical_W_std({_name(activation)}, b_std={b}): chi_1 stays below 1 for "
                         f"every W_std up to W_max={W_max}; raise W_max.")
    return edge


# ----------------------------------------------------------------------------------------------
# phase diagram


class PhaseDiagram(NamedTuple):
    """The result of `phase_diagram`; 2-D arrays have shape ``(len(b_std), len(W_std))``.

    Attributes:
      W_std, b_std: the grid axes.
      q_star, c_star, chi_1: fixed points and sensitivity on the grid.
      phase: `ORDERED` (0), `CRITICAL` (1, ``|chi_1 - 1| <= edge_tol``), `CHAOTIC` (2) or
        `UNBOUNDED` (3, the variance grows without bound).
      critical_W_std: the edge of chaos, one ``W_std`` per ``b_std`` (nan where none in range).
      name: the activation's name.
    """

    W_std: Any
    b_std: Any
    q_star: Any
    c_star: Any
    chi_1: Any
    phase: Any
    critical_W_std: Any
    name: str


def phase_diagram(activation, W_std=None, b_std=None, *, edge_tol: float = 1e-3) -> PhaseDiagram:
    """Ordered and chaotic phases and the edge of chaos over a grid of ``(W_std, b_std)``
    (Poole et al. 2016, arXiv:1606.05340, Fig. 4; Schoenholz et al. 2017, arXiv:1611.01232).

    Args:
      activation: an elementwise activation layer.
      W_std, b_std: 1-D grids (defaults ``linspace(0.5, 4, 36)`` and ``linspace(0, 1, 21)``).
      edge_tol: grid points with ``|chi_1 - 1| <= edge_tol`` are marked `CRITICAL`.

    Example:
      >>> import numpy as np
      >>> from infwidth import stax
      >>> from infwidth.analysis import phase_diagram, ORDERED, CHAOTIC
      >>> d = phase_diagram(stax.Erf(), W_std=np.array([0.5, 3.]), b_std=np.array([0.1]))
      >>> d.phase.tolist() == [[ORDERED, CHAOTIC]]
      True
      >>> bool(0.5 < d.critical_W_std[0] < 3.)
      True
    """
    W_std = np.linspace(0.5, 4.0, 36) if W_std is None else np.asarray(W_std, np.float64)
    b_std = np.linspace(0.0, 1.0, 21) if b_std is None else np.asarray(b_std, np.float64)
    if W_std.ndim != 1 or b_std.ndim != 1 or not W_std.size or not b_std.size:
        raise ValueError(f"phase_diagram: W_std and b_std must be non-empty 1-D grids; got shapes "
                         f"{W_std.shape} and {b_std.shape}.")
    ww, bb = np.meshgrid(W_std, b_std)
    sp = signal_propagation(activation, ww, bb)
    chi = np.asarray(sp.chi_1, np.float64)
    q = np.asarray(sp.q_star, np.float64)
    phase = np.where(chi < 1 - edge_tol, ORDERED, np.where(chi > 1 + edge_tol, CHAOTIC, CRITICAL))
    phase = np.where(np.isinf(q), UNBOUNDED, phase)
    edge, _ = _critical_line(activation, b_std, W_max=float(W_std.max()))
    return PhaseDiagram(W_std, b_std, q, np.asarray(sp.c_star), chi, phase, edge, _name(activation))


def plot_phase_diagram(diagram: PhaseDiagram, ax=None):
    """Draws a `PhaseDiagram`: ``log chi_1`` in colour (blue ordered, red chaotic), the edge of
    chaos as a black line and unbounded-variance points hatched. Needs matplotlib.

    Returns the matplotlib Axes.

    Example:
      >>> import numpy as np
      >>> import matplotlib; matplotlib.use('Agg')
      >>> from infwidth import stax
      >>> from infwidth.analysis import phase_diagram, plot_phase_diagram
      >>> d = phase_diagram(stax.Erf(), np.linspace(0.5, 3, 6), np.linspace(0, 1, 3))
      >>> plot_phase_diagram(d).get_xlabel()
      'W_std'
    """
    try:
        import matplotlib.pyplot as plt
        from matplotlib.colors import TwoSlopeNorm
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("plot_phase_diagram needs matplotlib: pip install 'infwidth[plot]'"
                          ) from err
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    log_chi = np.log(np.clip(diagram.chi_1, 1e-3, 1e3))
    span = max(float(np.abs(log_chi).max()), 1e-3)
    mesh = ax.pcolormesh(diagram.W_std, diagram.b_std, log_chi, cmap="RdBu_r", shading="auto",
                         norm=TwoSlopeNorm(0.0, -span, span))
    plt.colorbar(mesh, ax=ax, label="log chi_1")
    if np.any(diagram.phase == UNBOUNDED):
        ax.contourf(diagram.W_std, diagram.b_std, (diagram.phase == UNBOUNDED).astype(float),
                    levels=[0.5, 1.5], colors="none", hatches=["//"])
    ok = np.isfinite(diagram.critical_W_std)
    ax.plot(diagram.critical_W_std[ok], diagram.b_std[ok], "k-", lw=2, label="edge of chaos")
    ax.set_xlabel("W_std")
    ax.set_ylabel("b_std")
    ax.set_title(f"{diagram.name}: ordered (blue) and chaotic (red)")
    ax.legend(loc="upper left")
    return ax
