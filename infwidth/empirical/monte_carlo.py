"""Monte Carlo estimates of the NNGP and NTK: empirical kernels averaged over random draws of the
parameters (the finite-width approximation of the infinite-width kernels)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from .._checks import none_if_all_none
from .._random import classic_stream
from .._tiles import tile_starts
from ._axes import check_axes, resolve_axes, split_kwargs
from .nngp import canonicalize_get, empirical_kernel_fn
from .ntk import DEFAULT_NTK_IMPLEMENTATION, resolve_implementation

_AXIS = "samples"


class MonteCarloEstimate(NamedTuple):
    """A Monte Carlo estimate with its standard error.

    ``mean`` is what ``kernel_fn`` returns without ``standard_error=True`` (an array, or an
    ``EmpiricalKernel`` namedtuple); ``stderr`` has the same structure and holds the standard
    error of each entry, ``sqrt(sample variance / n_samples)`` (``inf`` for a single sample).
    """

    mean: Any
    stderr: Any
    n_samples: int


def _check_n_samples(n_samples):
    caller = "monte_carlo_kernel_fn"
    if isinstance(n_samples, (int, np.integer)) and not isinstance(n_samples, bool):
        if n_samples <= 0:
            raise ValueError(f"{caller}(n_samples={n_samples}): n_samples must be positive.")
        return [int(n_samples)], False
    if isinstance(n_samples, Iterable) and not isinstance(n_samples, str):
        ns = [int(n) for n in n_samples]
        if not ns or ns[0] <= 0 or any(b <= a for a, b in zip(ns, ns[1:])):
            raise ValueError(f"{caller}(n_samples={n_samples!r}): a list of sample counts must "
                             f"be positive and strictly increasing.")
        return ns, True
    raise TypeError(f"{caller}(n_samples={n_samples!r}): n_samples must be an int or an "
                    f"increasing list of ints.")


def monte_carlo_kernel_fn(init_fn, apply_fn, key, n_samples, batch_size: int = 0,
                          device_count: int = -1, store_on_device: bool = True,
                          trace_axes=(-1,), diagonal_axes=(), vmap_axes=None,
                          implementation=DEFAULT_NTK_IMPLEMENTATION, _j_rules: bool = True,
                          _s_rules: bool = True, _fwd=None, *, standard_error: bool = False):
    """Returns ``kernel_fn(x1, x2=None, get=None, **apply_fn_kwargs)``: the average of the
    empirical NNGP/NTK of ``apply_fn`` over ``n_samples`` draws ``init_fn(key_i, x1.shape)``.

    As neural-tangents 0.6.5's ``monte_carlo_kernel_fn``: with an int ``n_samples`` the call
    returns the estimate; with an increasing list it returns a generator of running estimates,
    one per entry (reusing the earlier samples). Draws follow neural-tangents' key chain (``key,
    k = split(key)`` per draw, ``k`` split into the ``init_fn`` key and the ``rng`` passed to
    ``apply_fn`` when it takes one, on jax's classic stream: `infwidth._random`), so a key gives
    neural-tangents' estimate.
    The estimates converge to the infinite-width kernels as the width grows (Neal 1994; Lee et
    al. 2018, arXiv:1711.00165; Jacot et al. 2018, arXiv:1806.07572).

    Args:
      init_fn, apply_fn: the finite network (e.g. from ``stax``).
      key: a PRNG key.
      n_samples: an int or an increasing list of ints.
      batch_size: if positive, the kernel is computed in tiles of ``batch_size`` inputs of ``x1``
        and ``x2`` (any number of inputs; needs the batch axis 0 of the outputs not to be
        traced). Tiles follow `infwidth.batch`'s geometry (``infwidth._tiles``).
      device_count: how many devices draw samples in parallel, one draw each (-1: all
        devices, 0: one device), as in neural-tangents; the results do not depend on it.
      store_on_device: ``False`` accumulates the sums in host memory (float64).
      trace_axes, diagonal_axes, vmap_axes, implementation: see :func:`empirical_ntk_fn`.
      standard_error: if true, each result is a :class:`MonteCarloEstimate` ``(mean, stderr,
        n_samples)`` instead of the bare mean.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from infwidth import stax
      >>> from infwidth.empirical import monte_carlo_kernel_fn
      >>> init_fn, apply_fn, kernel_fn = stax.serial(stax.Dense(256), stax.Relu(), stax.Dense(1))
      >>> x = jax.random.normal(jax.random.PRNGKey(1), (3, 4))
      >>> mc = monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.PRNGKey(0), 8,
      ...                            standard_error=True)
      >>> est = mc(x, None, 'ntk')
      >>> exact = kernel_fn(x, None, 'ntk')
      >>> bool(jnp.all(jnp.abs(est.mean - exact) < 6 * est.stderr + 1e-3))
      True
    """
    caller = "monte_carlo_kernel_fn"
    if not callable(init_fn) or not callable(apply_fn):
        raise TypeError(f"{caller}: init_fn and apply_fn must be functions (e.g. from stax).")
    ns, as_generator = _check_n_samples(n_samples)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 0:
        raise ValueError(f"{caller}(batch_size={batch_size!r}): batch_size must be a "
                         f"non-negative int (0: no batching).")
    devices = _sample_devices(device_count, caller)
    check_axes(trace_axes, diagonal_axes, caller)
    resolve_implementation(implementation, caller)
    emp = empirical_kernel_fn(apply_fn, trace_axes, diagonal_axes, vmap_axes, implementation)
    t_axes, d_axes = check_axes(trace_axes, diagonal_axes, caller)
    mesh = Mesh(np.array(devices), (_AXIS,))
    takes_rng = _takes_rng(apply_fn)

    @functools.partial(jax.jit, static_argnames=("names",))
    def group(keys, x1, x2, names, kwargs):
        """Sums and sums of squares of the kernels of the draws ``keys`` (one per device)."""
        @classic_stream
        def single(k):
            init_key, dropout_key = jax.random.split(k)
            _, params = init_fn(init_key, _shapes(x1))
            extra = {"rng": dropout_key} if takes_rng and "rng" not in kwargs else {}
            return tuple(emp(x1, x2, names, params, **extra, **kwargs))

        def draws(k):  # a kernel per name (a list of them for several outputs)
            if k.shape[0] == 1:
                return jax.tree_util.tree_map(lambda a: a[None], single(k[0]))
            return jax.vmap(single)(k)

        if keys.shape[0] == len(devices) > 1:  # one draw per device, each on its own device
            # (no vmap over sharded keys: JAX cannot batch some sharded convolution
            # transposes, e.g. the Jacobian of a Conv layer in its weights)
            ks = jax.shard_map(draws, mesh=mesh, in_specs=P(_AXIS), out_specs=P(_AXIS),
                               check_vma=False)(keys)
        else:
            ks = draws(keys)
        return (jax.tree_util.tree_map(lambda a: jnp.sum(a, 0), ks),
                jax.tree_util.tree_map(lambda a: jnp.sum(a * a, 0), ks))

    def blocked(keys, x1, x2, names, kwargs):
        if batch_size == 0:
            return group(keys, x1, x2, names, kwargs)
        _, params = jax.eval_shape(lambda kk: init_fn(kk, _shapes(x1)), keys[0])
        kw1 = split_kwargs(kwargs, x1, None)[0]  # x1's share of pairs (a, b)
        if takes_rng and "rng" not in kw1:
            kw1["rng"] = keys[0]
        fx = jax.eval_shape(lambda p: apply_fn(p, x1, **kw1), params)
        ax = resolve_axes(t_axes, d_axes, jax.tree_util.tree_leaves(fx)[0].shape,
                          jax.tree_util.tree_leaves(fx)[0].shape, caller)
        xb = x1 if x2 is None else x2
        if 0 in ax.trace:
            raise ValueError(f"{caller}(batch_size={batch_size}): cannot batch when the batch "
                             f"axis 0 of the outputs is traced; use batch_size=0.")
        # the shared tile geometry: tiles of one shape, the last one overlapping the one
        # before when batch_size does not divide the inputs; tiles on the diagonal of a
        # symmetric call are evaluated with x2=None, exactly as the whole call would be
        n1, n2 = _n_inputs(x1), _n_inputs(xb)
        b1, b2 = min(batch_size, n1), min(batch_size, n2)
        starts1, starts2 = tile_starts(n1, b1), tile_starts(n2, b2)

        random_apply = takes_rng or "rng" in kwargs

        def rows(s, b):
            return lambda v: _rows(v, s, b)

        def tile(s1, s2):
            same = x2 is None and s1 == s2 and b1 == b2
            if x2 is None and not same and random_apply:
                # dropout draws its mask for the whole call, so a tile and its mirror image
                # would see different masks: both are read from one symmetric call on the two
                # row blocks (lower start first), which keeps the kernel symmetric
                lo, hi = sorted((s1, s2))

                def both(v):  # the rows of both blocks, the lower one first
                    return jax.tree_util.tree_map(
                        lambda a: jnp.concatenate([a[lo:lo + b1], a[hi:hi + b1]]), v)

                out = group(keys, both(x1), None, names, _tile_kwargs(kwargs, both, n1, both,
                                                                      n1))
                r, c = (slice(0, b1), slice(b1, 2 * b1)) if s1 == lo else \
                    (slice(b1, 2 * b1), slice(0, b1))
                return jax.tree_util.tree_map(lambda a: a[r, c], out)
            return group(keys, _rows(x1, s1, b1), None if same else _rows(xb, s2, b2), names,
                         _tile_kwargs(kwargs, rows(s1, b1), n1, rows(s2, b2), n2))

        if 0 in ax.diag:
            parts = [tile(s, s) if x2 is None else group(
                keys, _rows(x1, s, b1), _rows(xb, s, b1), names,
                _tile_kwargs(kwargs, rows(s, b1), n1, rows(s, b1), n2)) for s in starts1]
            return _join(parts, starts1, b1, 0)
        rows = [_join([tile(s1, s2) for s2 in starts2], starts2, b2, 1) for s1 in starts1]
        return _join(rows, starts1, b1, 0)

    def running(x1, x2, get, kwargs):
        names, single = canonicalize_get(get, caller)
        total = total_sq = None
        count = 0
        chain = key
        for target in ns:
            while count < target:
                # one draw per device at a time; single draws for a remainder short of that
                size = len(devices) if target - count >= len(devices) else 1
                keys, chain = _next_keys(chain, size)
                sums, sqs = blocked(keys, x1, x2, names, kwargs)
                if not store_on_device:
                    sums, sqs = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64),
                                                       (sums, sqs))
                if total is None:
                    total, total_sq = sums, sqs
                else:
                    total = jax.tree_util.tree_map(lambda a, b: a + b, total, sums)
                    total_sq = jax.tree_util.tree_map(lambda a, b: a + b, total_sq, sqs)
                count += size
            yield _result(total, total_sq, count, names, single, standard_error)

    def kernel_fn(x1, x2=None, get=None, **apply_fn_kwargs):
        gen = running(x1, none_if_all_none(x2), get, apply_fn_kwargs)
        return gen if as_generator else next(gen)

    return kernel_fn


def _takes_rng(fn) -> bool:
    """Whether ``fn`` accepts an ``rng`` keyword (neural-tangents passes one to every draw)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.name == "rng" or p.kind is p.VAR_KEYWORD for p in params)


@classic_stream
def _next_keys(chain, size: int):
    """The next ``size`` draw keys of neural-tangents' chain, and the chain's new state."""
    keys = []
    for _ in range(size):
        chain, k = jax.random.split(chain)
        keys.append(k)
    return jnp.stack(keys), chain


def _shapes(x):
    """``init_fn``'s input_shape: a shape, or a list of them for a network of several inputs."""
    if isinstance(x, (list, tuple)):
        return type(x)(_shapes(a) for a in x)
    return tuple(x.shape)


def _n_inputs(x) -> int:
    return int(jax.tree_util.tree_leaves(x)[0].shape[0])


def _rows(x, start, b):
    return jax.tree_util.tree_map(lambda a: a[start:start + b], x)


def _tile_kwargs(kwargs, rows1, n1, rows2, n2):
    """Keyword arguments of one tile: the halves of pairs ``(a, b)`` whose leading axis runs
    over the inputs (``N1`` / ``N2``, e.g. `stax.Aggregate`'s ``pattern``) cut with them
    (``rows1`` / ``rows2`` take a tile's rows), as `infwidth.batch` does."""
    def per_input(v, n):
        leaves = jax.tree_util.tree_leaves(v)
        return bool(leaves) and all(getattr(a, "ndim", 0) >= 1 and a.shape[0] == n
                                    for a in leaves)

    out = {}
    for k, v in kwargs.items():
        if k != "rng" and isinstance(v, tuple) and len(v) == 2:
            a, b = v
            out[k] = (rows1(a) if per_input(a, n1) else a, rows2(b) if per_input(b, n2) else b)
        else:
            out[k] = v
    return out


def _join(parts, starts, b: int, axis: int):
    """Concatenates tiles along ``axis``, dropping the rows an overlapping last tile repeats."""
    kept, end = [], 0
    for part, start in zip(parts, starts):
        skip = end - int(start)
        kept.append(jax.tree_util.tree_map(
            lambda a, skip=skip: jax.lax.slice_in_dim(a, skip, a.shape[axis], axis=axis), part))
        end = int(start) + b
    return jax.tree_util.tree_map(lambda *p: jnp.concatenate(p, axis), *kept)


def _sample_devices(device_count, caller: str) -> list:
    """The devices the draws are spread over: -1 all, 0 one, k the first k (as neural-tangents)."""
    devices = jax.devices()
    if (isinstance(device_count, bool) or not isinstance(device_count, (int, np.integer))
            or device_count < -1):
        raise ValueError(f"{caller}(device_count={device_count!r}): device_count must be -1 "
                         f"(all devices), 0 (one device) or a positive number of devices.")
    if device_count > len(devices):
        raise ValueError(f"{caller}(device_count={device_count}): only {len(devices)} devices "
                         f"are available.")
    return devices if device_count == -1 else devices[:max(int(device_count), 1)]


def _result(total, total_sq, n, names, single, standard_error):
    from .nngp import _namedtuple

    mean = jax.tree_util.tree_map(lambda a: a / n, total)

    def pack(parts):
        return parts[0] if single else _namedtuple(names)(*parts)

    if not standard_error:
        return pack(mean)

    def stderr(m, s):
        if n < 2:
            return jnp.full(jnp.shape(m), jnp.inf, jnp.result_type(m))
        var = jnp.maximum(s / n - m * m, 0.0) * n / (n - 1)
        return jnp.sqrt(var / n)

    return MonteCarloEstimate(pack(mean), pack(jax.tree_util.tree_map(stderr, mean, total_sq)), n)
