"""Fitting the hyperparameters of an infinite-width kernel (W_std, b_std, activation
parameters, the noise level) by maximizing the evidence, the leave-one-out likelihood or a
validation objective with an optax optimizer, the whole loop compiled once (``lax.scan``)."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .likelihood import (
    _kernel,
    _posterior,
    check_diag_reg,
    check_get,
    check_targets,
    evidence_from_kernel,
    loo_from_kernel,
    noise_variance,
)

OBJECTIVES = ("evidence", "loo", "validation", "validation_mse")


class FitResult(NamedTuple):
    """What `fit` returns.

    Attributes:
      hparams: the fitted hyperparameters, a dict like ``init_hparams`` (``'diag_reg'``
        included when it was learned).
      losses: ``(steps + 1,)`` numpy array: the loss before each step and after the last one.
        The loss is minus the objective per observation (``N * K`` of them; validation: of the
        validation set), so that step sizes do not depend on the data size.
      objective: the name of the objective that was maximized.
    """

    hparams: dict
    losses: Any
    objective: str


def _transform(constraint, name):
    """``(to_value, to_unconstrained, inside)`` for one constraint."""
    if constraint in (None, "real"):
        return (lambda u: u), (lambda v: v), (lambda v: np.all(np.isfinite(v))), "real"
    if constraint == "positive":
        return (jnp.exp, jnp.log, lambda v: np.all(np.isfinite(v) & (v > 0)), "positive (> 0)")
    if (isinstance(constraint, (tuple, list)) and len(constraint) == 2
            and all(isinstance(c, (int, float)) for c in constraint)
            and constraint[0] < constraint[1]):
        lo, hi = float(constraint[0]), float(constraint[1])

        def to_value(u):
            return lo + (hi - lo) * jax.nn.sigmoid(u)

        def to_u(v):
            t = (v - lo) / (hi - lo)
            return jnp.log(t) - jnp.log1p(-t)

        return to_value, to_u, lambda v: np.all((v > lo) & (v < hi)), f"in ({lo:g}, {hi:g})"
    raise ValueError(f"fit(constraints[{name!r}]={constraint!r}): a constraint is 'positive', "
                     f"'real' (or None) or a (low, high) pair of numbers with low < high.")


def _objective_fn(objective, get, absolute, x, y, validation_data):
    """``loss(kernel_fn, diag_reg)``: minus the objective per observation."""
    if objective in ("evidence", "loo"):
        n_obs = y.size
        of_kernel = evidence_from_kernel if objective == "evidence" else loo_from_kernel

        def loss(kernel_fn, diag_reg):
            k = _kernel(kernel_fn, x, None, get)
            return -of_kernel(k, y.astype(k.dtype), noise_variance(k, diag_reg, absolute)) / n_obs

        return loss
    x_val, y_val = validation_data

    def loss(kernel_fn, diag_reg):
        mean, var = _posterior(kernel_fn, x, y, x_val, diag_reg, get, absolute)
        if objective == "validation_mse":
            return jnp.mean((y_val - mean) ** 2)
        return jnp.mean(0.5 * jnp.log(2 * math.pi * var) + 0.5 * (y_val - mean) ** 2 / var)

    return loss


# With at most this many scalar hyperparameters, the kernel's derivatives in them are taken in
# forward mode (one JVP per hyperparameter), which is several times cheaper than reverse mode
# through the layers' kernel maps; the linear algebra stays in reverse mode.
_FORWARD_MODE_MAX = 16


def _forward_over_parameters(matrices, scalar):
    """``u -> scalar(matrices(u))`` whose gradient is ``<d scalar / d matrices, d matrices /
    d u>``: the matrices' tangents by ``jax.linearize`` over the basis of ``u``, the scalar's
    cotangents by ``jax.grad``."""
    from jax.flatten_util import ravel_pytree

    @jax.custom_vjp
    def loss(u):
        return scalar(matrices(u))

    def fwd(u):
        flat, unravel = ravel_pytree(u)
        mats, lin = jax.linearize(lambda f: matrices(unravel(f)), flat)
        tangents = jax.vmap(lin)(jnp.eye(flat.shape[0], dtype=flat.dtype))
        value, cot = jax.value_and_grad(scalar)(mats)
        grad = sum(jnp.tensordot(t, c, axes=c.ndim) for t, c in
                   zip(jax.tree_util.tree_leaves(tangents), jax.tree_util.tree_leaves(cot)))
        return value, unravel(grad)

    def bwd(grad, ct):
        return (jax.tree_util.tree_map(lambda g: ct * g, grad),)

    loss.defvjp(fwd, bwd)
    return loss


def _default_optimizer():
    try:
        import optax
    except ImportError as e:  # pragma: no cover - optax is in the [optax] extra
        raise ImportError("infwidth.gp.fit needs optax: pip install 'infwidth[optax]'.") from e
    return optax.lbfgs()


def fit(make_kernel_fn, init_hparams: dict, x, y, optimizer=None, steps: int = 30,
        constraints: dict | None = None, *, diag_reg=None, get: str = "nngp",
        objective: str = "evidence", validation_data=None,
        diag_reg_absolute_scale: bool = False) -> FitResult:
    """Fits kernel hyperparameters by gradient-based maximization of a GP objective.

    ``make_kernel_fn(hparams)`` builds the ``kernel_fn`` from a dict of hyperparameters (each a
    scalar or an array, e.g. ``{'W_std': 1.5, 'b_std': 0.1}``); it is called with traced
    values, so every stax layer's hyperparameters can come from it. Each hyperparameter is
    optimized in an unconstrained coordinate: ``log`` for ``'positive'`` (the default for every
    name), a logit for ``(low, high)``, itself for ``'real'``. The noise level is learned when
    ``init_hparams`` has a ``'diag_reg'`` entry (positive by default); otherwise ``diag_reg`` is
    fixed. Steps whose objective is not finite are rejected (the parameters stay where they
    were), so the result never holds NaN.

    Objectives (all maximized; the loss is minus the objective per observation):
    ``'evidence'`` (`log_marginal_likelihood`, type-II maximum likelihood, Rasmussen &
    Williams 2006 ch. 5.4.1), ``'loo'`` (`leave_one_out_log_likelihood`, ch. 5.4.2),
    ``'validation'`` (`validation_log_likelihood` on ``validation_data=(x_val, y_val)``) and
    ``'validation_mse'`` (minus `validation_mse`).

    Args:
      make_kernel_fn: ``hparams dict -> kernel_fn``.
      init_hparams: starting values, inside their constraints.
      x, y: training inputs and targets ``(N,)`` or ``(N, K)``.
      optimizer: an optax ``GradientTransformation``; default ``optax.lbfgs()`` (with its
        line search), which needs few steps. First-order ones such as ``optax.adam(0.05)``
        need a few hundred.
      steps: optimizer steps.
      constraints: ``{name: 'positive' | 'real' | None | (low, high)}``; unnamed
        hyperparameters are ``'positive'``.
      diag_reg: the fixed noise variance when it is not learned (> 0).
      get: ``'nngp'`` or ``'ntk'``.
      objective: ``'evidence'``, ``'loo'``, ``'validation'`` or ``'validation_mse'``.
      validation_data: ``(x_val, y_val)`` for the validation objectives.
      diag_reg_absolute_scale: ``diag_reg`` in absolute units instead of the mean kernel
        diagonal.

    Returns:
      a `FitResult` ``(hparams, losses, objective)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from infwidth import stax, gp
      >>> x = jax.random.normal(jax.random.PRNGKey(0), (40, 3))
      >>> y = jnp.sin(x[:, 0]) + 0.1 * jax.random.normal(jax.random.PRNGKey(1), (40,))
      >>> def make_kernel_fn(h):
      ...     return stax.serial(stax.Dense(1, h['W_std'], h['b_std']), stax.Relu(),
      ...                        stax.Dense(1, h['W_std'], h['b_std'])).kernel_fn
      >>> result = gp.fit(make_kernel_fn, {'W_std': 1.0, 'b_std': 0.5, 'diag_reg': 0.1}, x, y,
      ...                 steps=10)
      >>> bool(result.losses[-1] < result.losses[0])
      True
    """
    where = "fit"
    if not callable(make_kernel_fn):
        raise TypeError(f"fit(make_kernel_fn={make_kernel_fn!r}): must be a function from a dict "
                        f"of hyperparameters to a kernel_fn.")
    if not isinstance(init_hparams, dict) or not init_hparams:
        raise TypeError(f"fit(init_hparams={init_hparams!r}): must be a non-empty dict "
                        f"{{name: value}}.")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"fit(steps={steps!r}): steps must be a positive integer.")
    if objective not in OBJECTIVES:
        raise ValueError(f"fit(objective={objective!r}): must be one of "
                         f"{', '.join(repr(o) for o in OBJECTIVES)}.")
    check_get(get, where)
    constraints = dict(constraints or {})
    unknown = set(constraints) - set(init_hparams)
    if unknown:
        raise ValueError(f"fit(constraints=...): {sorted(unknown)} are not in init_hparams "
                         f"({sorted(init_hparams)}).")
    learn_noise = "diag_reg" in init_hparams
    if not learn_noise:
        if diag_reg is None:
            raise ValueError("fit: give the noise variance, diag_reg=... (> 0), or learn it by "
                             "putting 'diag_reg' in init_hparams.")
        check_diag_reg(diag_reg, where)
    elif diag_reg is not None:
        raise ValueError("fit: 'diag_reg' is both in init_hparams (learned) and given as "
                         "diag_reg=... (fixed); keep one.")
    y = check_targets(x, y, where)
    if objective.startswith("validation"):
        if validation_data is None or len(validation_data) != 2:
            raise ValueError(f"fit(objective={objective!r}): pass validation_data=(x_val, y_val).")
        x_val, y_val = validation_data
        y_val = check_targets(x_val, y_val, where, "x_val", "y_val")
        if y_val.shape[1] != y.shape[1]:
            raise ValueError(f"fit: y has {y.shape[1]} output columns but y_val has "
                             f"{y_val.shape[1]}.")
        validation_data = (jnp.asarray(x_val), y_val)
    elif validation_data is not None:
        raise ValueError(f"fit(objective={objective!r}): validation_data is only used by the "
                         f"'validation' and 'validation_mse' objectives.")

    dtype = jnp.result_type(float)
    transforms, u0 = {}, {}
    for name, value in init_hparams.items():
        to_value, to_u, inside, domain = _transform(constraints.get(name, "positive"), name)
        try:
            v = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"fit(init_hparams[{name!r}]={value!r}): must be a number or an "
                            f"array of numbers.") from None
        if not inside(v):
            raise ValueError(f"fit(init_hparams[{name!r}]={value!r}): outside its domain, "
                             f"{domain}; start inside it or change constraints[{name!r}].")
        transforms[name] = to_value
        u0[name] = jnp.asarray(to_u(jnp.asarray(v, dtype)), dtype)

    x = jnp.asarray(x)
    loss_of = _objective_fn(objective, get, diag_reg_absolute_scale, x, y, validation_data)

    def values(u):
        return {k: transforms[k](u[k]) for k in u}

    def kernel_and_noise(u):
        h = values(u)
        noise = h.pop("diag_reg") if learn_noise else diag_reg
        return make_kernel_fn(h), noise

    n_params = sum(int(np.size(v)) for v in u0.values())
    if objective in ("evidence", "loo") and n_params <= _FORWARD_MODE_MAX:
        def matrices(u):
            kernel_fn, noise = kernel_and_noise(u)
            k = _kernel(kernel_fn, x, None, get)
            return k, noise_variance(k, noise, diag_reg_absolute_scale)

        of_kernel = evidence_from_kernel if objective == "evidence" else loo_from_kernel
        loss = _forward_over_parameters(
            matrices, lambda m: -of_kernel(m[0], y.astype(m[0].dtype), m[1]) / y.size)
    else:
        def loss(u):
            return loss_of(*kernel_and_noise(u))

    opt = _default_optimizer() if optimizer is None else optimizer
    # The objectives need the whole N x N kernel anyway: evaluate it in one piece rather than
    # in automatic tiles, whose loop is slow to differentiate (tiling is decided while tracing).
    from ..stax import tile_memory

    saved = tile_memory()
    tile_memory(0)
    try:
        u_final, losses = _run(loss, u0, opt, int(steps))
    finally:
        tile_memory(saved)
    losses = np.asarray(losses)
    if not np.isfinite(losses[0]):
        raise ValueError(f"fit: the objective is not finite at init_hparams={init_hparams!r}; "
                         f"increase diag_reg, use float64 (jax.config.update('jax_enable_x64', "
                         f"True)) or start elsewhere.")
    arrays = {k: np.asarray(v) for k, v in values(u_final).items()}
    hparams: dict[str, Any] = {k: (float(v) if v.ndim == 0 else v) for k, v in arrays.items()}
    return FitResult(hparams, losses, objective)


def _run(loss, u0, opt, steps):
    import optax

    state0 = jax.eval_shape(opt.init, u0)
    has_linesearch = optax.tree_utils.tree_get(state0, "value") is not None
    if has_linesearch:  # reuse the value and gradient the line search computed
        value_and_grad = optax.value_and_grad_from_state(loss)
    else:
        plain = jax.value_and_grad(loss)

        def value_and_grad(u, state):
            return plain(u)

    def finite(tree):
        leaves = jax.tree_util.tree_leaves(tree)
        return jnp.all(jnp.array([jnp.all(jnp.isfinite(v)) for v in leaves]))

    def select(ok, a, b):
        return jax.tree_util.tree_map(lambda p, q: jnp.where(ok, p, q), a, b)

    def step(carry, _):
        # (u, state): the current point; (good_u, good_state): the last point whose loss and
        # gradient were finite. A step that lands where they are not is undone.
        u, state, good_u, good_state = carry
        value, grad = value_and_grad(u, state=state)
        ok = finite((value, grad))
        u, state = select(ok, u, good_u), select(ok, state, good_state)
        good_u, good_state = u, state
        value, grad = jax.lax.cond(ok, lambda: (value, grad),
                                   lambda: value_and_grad(good_u, state=good_state))
        updates, state = opt.update(grad, state, u, value=value, grad=grad, value_fn=loss)
        new_u = optax.apply_updates(u, updates)
        new_u = select(finite(new_u), new_u, u)
        return (new_u, state, good_u, good_state), value

    @jax.jit
    def run(u0):
        state = opt.init(u0)
        (u, _, good_u, _), values = jax.lax.scan(step, (u0, state, u0, state), None,
                                                 length=steps)
        last = loss(u)
        u = select(jnp.isfinite(last), u, good_u)
        return u, jnp.concatenate([values, jnp.where(jnp.isfinite(last), last, values[-1:])[:1]])

    return run(u0)
