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
      losses: ``(n + 1,)`` numpy array, ``n <= steps`` the steps taken (fewer when the fit
        converged first, see ``tol``): the loss before each step and after the last one.
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


def _objective_fn(objective, get, absolute):
    """``loss(kernel_fn, diag_reg, data)``: minus the objective per observation; ``data`` is
    ``(x, y)`` or ``(x, y, x_val, y_val)``, an argument (not a constant) of the compiled loop,
    so that XLA does not fold products of the inputs at compile time."""
    if objective in ("evidence", "loo"):
        of_kernel = evidence_from_kernel if objective == "evidence" else loo_from_kernel

        def loss(kernel_fn, diag_reg, data):
            x, y = data
            k = _kernel(kernel_fn, x, None, get)
            return -of_kernel(k, y.astype(k.dtype), noise_variance(k, diag_reg, absolute)) / y.size

        return loss

    def loss(kernel_fn, diag_reg, data):
        x, y, x_val, y_val = data
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
    d u>``: the matrices' tangents by ``jax.jvp`` along each basis vector of ``u``, the scalar's
    cotangents by ``jax.grad``."""
    from jax.flatten_util import ravel_pytree

    @jax.custom_vjp
    def loss(u):
        return scalar(matrices(u))

    def fwd(u):
        flat, unravel = ravel_pytree(u)
        # one JVP per basis direction, the primal computed once (unbatched); cheaper than
        # jax.linearize, which stores the residuals of every layer
        mats, tangents = jax.vmap(lambda t: jax.jvp(lambda f: matrices(unravel(f)), (flat,), (t,)),
                                  out_axes=(None, 0))(jnp.eye(flat.shape[0], dtype=flat.dtype))
        value, cot = jax.value_and_grad(scalar)(mats)
        grad = sum(jnp.tensordot(t, c, axes=c.ndim) for t, c in
                   zip(jax.tree_util.tree_leaves(tangents), jax.tree_util.tree_leaves(cot)))
        return value, unravel(grad)

    def bwd(grad, ct):
        return (jax.tree_util.tree_map(lambda g: ct * g, grad),)

    loss.defvjp(fwd, bwd)
    return loss


def _default_optimizer(dtype):
    """optax's L-BFGS with its zoom line search, whose sufficient-decrease test accepts an
    increase of the loss (per observation, so O(1)) up to 1e-5 in float32 and 1e-12 in
    float64, about the rounding error of a log-determinant over thousands of points: with the
    exact test, every search near a float32 optimum spends its 20 trial evaluations on
    differences below rounding."""
    try:
        import optax
    except ImportError as e:  # pragma: no cover - optax is in the [optax] extra
        raise ImportError("infwidth.gp.fit needs optax: pip install 'infwidth[optax]'.") from e
    slack = 1e-12 if dtype == jnp.float64 else 1e-5
    return optax.lbfgs(linesearch=optax.scale_by_zoom_linesearch(
        max_linesearch_steps=20, initial_guess_strategy="one", tol=slack))


def fit(make_kernel_fn, init_hparams: dict, x, y, optimizer=None, steps: int = 30,
        constraints: dict | None = None, *, diag_reg=None, get: str = "nngp",
        objective: str = "evidence", validation_data=None,
        diag_reg_absolute_scale: bool = False, tol: float | None = None,
        gtol: float | None = None) -> FitResult:
    """Fits kernel hyperparameters by gradient-based maximization of a GP objective.

    ``make_kernel_fn(hparams)`` builds the ``kernel_fn`` from a dict of hyperparameters (each a
    scalar or an array, e.g. ``{'W_std': 1.5, 'b_std': 0.1}``); it is called with traced
    values, so every stax layer's hyperparameters can come from it. Each hyperparameter is
    optimized in an unconstrained coordinate: ``log`` for ``'positive'`` (the default for every
    name), a logit for ``(low, high)``, itself for ``'real'``. The noise level is learned when
    ``init_hparams`` has a ``'diag_reg'`` entry (positive by default); otherwise ``diag_reg`` is
    fixed. A step whose objective is not finite is undone and ends the fit (the parameters
    stay where they were), so the result never holds NaN. The fit also ends once a step
    changes the loss by at most ``tol`` relative or the gradient (in the unconstrained
    coordinates) has no entry above ``gtol``: in float32 the objective and its gradient stop
    improving within rounding after a few L-BFGS steps, and line searches there would only
    burn evaluations (at N = 2,000 a 20-step fit took 178 evaluations, ~160 of them at the
    optimum, before these stops existed). The compiled loop is kept for the next call with the
    same ``make_kernel_fn`` (the same function object) and options, so refitting on other data
    of the same shapes or from other starting values does not compile again; as with
    ``jax.jit``, a ``make_kernel_fn`` must not depend on Python state that changes between
    calls.

    Objectives (all maximized; the loss is minus the objective per observation):
    ``'evidence'`` (`log_marginal_likelihood`, type-II maximum likelihood, Rasmussen &
    Williams 2006 ch. 5.4.1), ``'loo'`` (`leave_one_out_log_likelihood`, ch. 5.4.2),
    ``'validation'`` (`validation_log_likelihood` on ``validation_data=(x_val, y_val)``) and
    ``'validation_mse'`` (minus `validation_mse`).

    Args:
      make_kernel_fn: ``hparams dict -> kernel_fn``.
      init_hparams: starting values, inside their constraints.
      x, y: training inputs and targets ``(N,)`` or ``(N, K)``.
      optimizer: an optax ``GradientTransformation``; default ``optax.lbfgs()`` with its
        zoom line search (its decrease test allowing the loss's rounding, 1e-5 in float32
        and 1e-12 in float64), which needs few steps. First-order ones such as
        ``optax.adam(0.05)`` need a few hundred.
      steps: optimizer steps.
      constraints: ``{name: 'positive' | 'real' | None | (low, high)}``; unnamed
        hyperparameters are ``'positive'``.
      diag_reg: the fixed noise variance when it is not learned (> 0).
      get: ``'nngp'`` or ``'ntk'``.
      objective: ``'evidence'``, ``'loo'``, ``'validation'`` or ``'validation_mse'``.
      validation_data: ``(x_val, y_val)`` for the validation objectives.
      diag_reg_absolute_scale: ``diag_reg`` in absolute units instead of the mean kernel
        diagonal.
      tol: stop once ``|loss_k - loss_{k-1}| <= tol * max(|loss_k|, 1)``; default ``1e-6``
        in float32 and ``1e-10`` in float64; ``0`` disables it.
      gtol: stop once no entry of the loss's gradient in the unconstrained coordinates
        exceeds ``gtol``; default ``1e-3`` in float32 (about the rounding noise of that
        gradient for a few thousand points; the loss is then within ~1e-7 of its optimum)
        and ``1e-7`` in float64; ``0`` disables it. With ``tol=0, gtol=0`` the fit takes all
        ``steps`` unless a step fails.

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
    for name, value in (("tol", tol), ("gtol", gtol)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not 0 <= value < 1):
            raise ValueError(f"fit({name}={value!r}): a tolerance is a number in [0, 1) (0 "
                             f"disables it), or None for the dtype's default.")
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
    if tol is None:
        tol = 1e-10 if dtype == jnp.float64 else 1e-6
    if gtol is None:
        gtol = 1e-7 if dtype == jnp.float64 else 1e-3
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
    data = (x, y) if validation_data is None else (x, y, *validation_data)
    loss_of = _objective_fn(objective, get, diag_reg_absolute_scale)

    def values(u):
        return {k: transforms[k](u[k]) for k in u}

    def kernel_and_noise(u):
        h = values(u)
        noise = h.pop("diag_reg") if learn_noise else diag_reg
        return make_kernel_fn(h), noise

    n_params = sum(int(np.size(v)) for v in u0.values())
    if objective in ("evidence", "loo") and n_params <= _FORWARD_MODE_MAX:
        of_kernel = evidence_from_kernel if objective == "evidence" else loo_from_kernel

        def make_loss(data):
            x, y = data

            def matrices(u):
                kernel_fn, noise = kernel_and_noise(u)
                k = _kernel(kernel_fn, x, None, get)
                return k, noise_variance(k, noise, diag_reg_absolute_scale)

            return _forward_over_parameters(
                matrices, lambda m: -of_kernel(m[0], y.astype(m[0].dtype), m[1]) / y.size)
    else:
        def make_loss(data):
            return lambda u: loss_of(*kernel_and_noise(u), data)

    opt = _default_optimizer(dtype) if optimizer is None else optimizer
    key = _cache_key(make_kernel_fn, init_hparams, constraints, learn_noise, diag_reg, get,
                     objective, diag_reg_absolute_scale, steps, tol, gtol, optimizer, dtype)
    run = _COMPILED.get(key) if key is not None else None
    if run is None:
        run = _compiled_loop(make_loss, u0, opt, int(steps), tol, gtol)
        if key is not None:
            _COMPILED[key] = run
            while len(_COMPILED) > _COMPILED_MAX:
                _COMPILED.pop(next(iter(_COMPILED)))
    # The objectives need the whole N x N kernel anyway: evaluate it in one piece rather than
    # in automatic tiles, whose loop is slow to differentiate (tiling is decided while tracing).
    from ..stax import tile_memory

    saved = tile_memory()
    tile_memory(0)
    try:
        u_final, losses, n_done = run(u0, data)
    finally:
        tile_memory(saved)
    losses = np.asarray(losses)[:int(n_done) + 1]
    if not np.isfinite(losses[0]):
        raise ValueError(f"fit: the objective is not finite at init_hparams={init_hparams!r}; "
                         f"increase diag_reg, use float64 (jax.config.update('jax_enable_x64', "
                         f"True)) or start elsewhere.")
    arrays = {k: np.asarray(v) for k, v in values(u_final).items()}
    hparams: dict[str, Any] = {k: (float(v) if v.ndim == 0 else v) for k, v in arrays.items()}
    return FitResult(hparams, losses, objective)


# Compiled fitting loops of recent calls, so that fitting the same model again (other data of
# the same shapes, other starting values) does not compile again: keyed by the function that
# builds the kernel and every option the loop closes over; least recently added dropped first.
_COMPILED: dict = {}
_COMPILED_MAX = 16


def _cache_key(make_kernel_fn, init_hparams, constraints, learn_noise, diag_reg, get, objective,
               absolute, steps, tol, gtol, optimizer, dtype):
    """A hashable key of what a compiled loop depends on besides its arguments, or None."""
    try:
        fixed = None if learn_noise else (np.asarray(diag_reg).tobytes(),
                                          np.shape(diag_reg))
        key = (make_kernel_fn, tuple((k, np.shape(v)) for k, v in init_hparams.items()),
               tuple(sorted((k, str(v)) for k, v in constraints.items())), learn_noise, fixed,
               get, objective, absolute, int(steps), tol, gtol,
               "default" if optimizer is None else optimizer, str(dtype))
        hash(key)
    except TypeError:
        return None
    return key


def _compiled_loop(make_loss, u0, opt, steps, tol, gtol):
    """The jitted ``run(u0, data) -> (u, losses, n_done)``: ``n_done <= steps`` optimizer
    steps taken; ``losses[:n_done + 1]`` the loss before each of them and at ``u``. One
    compiled ``while_loop`` whose body evaluates the loss and its gradient once (optax's line
    search evaluates its own trial points) and stops early once a step changes the loss by at
    most ``tol`` relative or the gradient's largest entry is at most ``gtol``."""
    import optax

    state0 = jax.eval_shape(opt.init, u0)
    has_linesearch = optax.tree_utils.tree_get(state0, "value") is not None

    def finite(tree):
        leaves = jax.tree_util.tree_leaves(tree)
        return jnp.all(jnp.array([jnp.all(jnp.isfinite(v)) for v in leaves]))

    def select(ok, a, b):
        return jax.tree_util.tree_map(lambda p, q: jnp.where(ok, p, q), a, b)

    @jax.jit
    def run(u0, data):
        loss = make_loss(data)
        plain = jax.value_and_grad(loss)
        state = opt.init(u0)
        if has_linesearch:
            # The line search stores the value and gradient at the point it accepts; the
            # starting point's are computed here, so the loop body never evaluates the loss
            # itself (one compiled copy of the loss and its gradient fewer).
            value0, grad0 = plain(u0)
            state = optax.tree_utils.tree_set(state, value=value0, grad=grad0)

            def value_and_grad(u, state):
                return (optax.tree_utils.tree_get(state, "value"),
                        optax.tree_utils.tree_get(state, "grad"))
        else:
            value0, grad0 = jax.eval_shape(plain, u0)

            def value_and_grad(u, state):
                return plain(u)

        losses = jnp.full((steps + 1,), jnp.nan, value0.dtype)
        zeros = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), grad0)
        init = (jnp.int32(0), jnp.bool_(False), u0, state, u0, state,
                jnp.asarray(jnp.inf, value0.dtype), zeros, losses)

        def body(carry):
            # (u, state): the current point; (good_*): the last point whose loss and gradient
            # were finite, with them. A step that lands where they are not is undone, and the
            # loop stops there (the same update from the same point would repeat it).
            i, _, u, state, good_u, good_state, good_value, good_grad, losses = carry
            value, grad = value_and_grad(u, state=state)
            ok = finite((value, grad))
            u, state = select(ok, u, good_u), select(ok, state, good_state)
            value, grad = select(ok, (value, grad), (good_value, good_grad))
            change = jnp.abs(value - good_value)
            largest = jnp.max(jnp.array([jnp.max(jnp.abs(g))
                                         for g in jax.tree_util.tree_leaves(grad)]))
            converged = (((tol > 0) & (change <= tol * jnp.maximum(jnp.abs(value), 1)))
                         | ((gtol > 0) & (largest <= gtol)))
            losses = losses.at[i].set(value)
            done = ~ok | converged | (i == steps)

            def update(u, state):
                updates, state = opt.update(grad, state, u, value=value, grad=grad,
                                            value_fn=loss)
                new_u = optax.apply_updates(u, updates)
                return select(finite(new_u), new_u, u), state

            new_u, new_state = jax.lax.cond(done, lambda u, s: (u, s), update, u, state)
            return (i + 1, done, new_u, new_state, u, state, value, grad, losses)

        i, _, u, _, _, _, _, _, losses = jax.lax.while_loop(
            lambda c: ~c[1], body, init)
        return u, losses, i - 1

    return run
