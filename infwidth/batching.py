"""Tiled, multi-device evaluation of kernel functions: :func:`batch`.

``batch(kernel_fn, batch_size)`` returns a function with the calling convention of
``kernel_fn`` that evaluates the ``N1 x N2`` kernel in ``batch_size x batch_size`` tiles. Each
step evaluates one tile on every device of a one-axis `jax.sharding.Mesh` (axis ``'tiles'``)
through `jax.shard_map`, so the memory a device needs is set by the tile size, not by ``N``.
Results are written into numpy arrays on the host as they arrive (the device computes the next
tiles meanwhile), or assembled on the devices with ``store_on_host=False``.

* Any ``N1``, ``N2``: the last tiles are padded with copies of the last input and sliced away.
* ``x2=None``: only the tiles on and above the diagonal are computed; the others are their
  mirror images (the two batch axes swapped, and each pair of spatial axes ``(H, H')``).
* Several processes: after ``jax.distributed.initialize()`` the default mesh holds every device
  of every process; every process passes the same inputs and receives the whole kernel (see
  ``examples/multiprocess_batch.py``).

Works for analytic ``kernel_fn(x1, x2, get, **kw)`` (a `Kernel` keeps all its fields),
empirical ``kernel_fn(x1, x2, get, params)`` and Monte Carlo kernel functions (neural-tangents'
conventions): every array argument after ``x2`` is passed whole to every device, a keyword
argument given per input, ``name=(v1, v2)`` with ``v1`` of shape ``(N1, ...)`` and ``v2`` of shape
``(N2, ...)`` (or ``None`` when ``x2`` is ``None``), such as a graph's ``pattern``, is cut into
tiles with the inputs, and everything else is static.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ._checks import (
    check_bool,
    none_if_all_none,
)
from ._tiles import padded_rows, tile_pairs
from .kernel import Kernel

AXIS = "tiles"
_PROBES = ((3, 5), (7, 11))  # (rows, cols) of two abstract evaluations that locate batch axes


def batch(kernel_fn: Callable, batch_size: int = 0, device_count: int = -1,
          store_on_device: bool = True, *, devices: Sequence | None = None,
          mesh: Mesh | None = None, store_on_host: bool | None = None,
          progress: bool = False) -> Callable:
    """Evaluates ``kernel_fn`` in tiles, spread over devices, with bounded memory.

    The same function as neural-tangents' ``nt.batch``; its positional arguments
    ``(kernel_fn, batch_size, device_count, store_on_device)`` keep their meaning.

    Args:
      kernel_fn: ``kernel_fn(x1, x2=None, *args, **kwargs)`` returning a `Kernel`, an array or
        a pytree of arrays laid out ``(N1, N2, ...)``, ``(N1, ...)`` or ``(N2, ...)`` (as
        ``cov1`` / ``cov2``). It must be traceable by `jax.jit`. Keyword arguments
        ``name=(v1, v2)`` with a leading axis of N1 and N2 (or ``(v1, None)``) are tiled with
        the inputs, as in neural-tangents (e.g. ``pattern`` of `stax.Aggregate`).
      batch_size: side of the square tiles (a positive integer; inputs of any size are padded
        and the result sliced). ``0``, as in neural-tangents, means no tiling: the rows are
        split evenly over the devices.
      device_count: ``-1`` (all devices), ``0`` (one device) or how many devices to use.
      store_on_device: as in neural-tangents: return `jax.Array` s on the default device
        (default; ``.block_until_ready()`` works) or, when ``False``, numpy arrays in host
        memory. Either way the tiles are assembled in host memory as they arrive.
      store_on_host: infwidth's finer choice, overriding ``store_on_device``: ``True`` returns
        numpy arrays in host memory, ``False`` assembles the result on the devices as
        `jax.Array` s sharded by rows over the mesh (on one device when ``N1`` is not
        divisible by the number of devices), never holding it whole on the host.
      progress: show a tqdm progress bar (needs the ``progress`` extra: ``pip install tqdm``)
        with an estimate of the total time once the first tiles are done.

    Under `jax.jit` (traced inputs) and on a `Kernel` (the output of earlier layers), the
    batched function is ``kernel_fn`` itself: the call is then one traced program, and the
    automatic tiling of the layers (`infwidth.stax.tile_memory`) bounds its memory. A stax
    ``kernel_fn`` whose kernel of a pair depends on the rest of the batch (``BatchNorm``, an
    ``Index`` selecting inputs) is evaluated whole, untiled.

    Returns:
      ``batched_kernel_fn(x1, x2=None, *args, **kwargs)`` with the outputs of ``kernel_fn``.
      Its ``stats`` attribute holds the tiles, devices and timings of the last call
      (``'estimated_total_s'`` is the estimate made after the first tiles).

    The tiling follows the kernel-evaluation scheme of neural-tangents (Novak et al. 2020,
    "Neural Tangents: Fast and Easy Infinite Neural Networks in Python", arXiv:1912.02803).

    Example:
      >>> import jax, jax.numpy as jnp, numpy as np
      >>> import infwidth
      >>> from infwidth import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(512), stax.Relu(), stax.Dense(1))
      >>> x = jnp.asarray(np.random.RandomState(0).randn(10, 3))
      >>> batched = infwidth.batch(kernel_fn, batch_size=4)
      >>> k = batched(x, get=('nngp', 'ntk'))
      >>> isinstance(k.nngp, jax.Array), k.ntk.shape  # store_on_device=True: on the device
      (True, (10, 10))
      >>> bool(np.allclose(k.ntk, kernel_fn(x, get='ntk'), rtol=1e-5, atol=1e-6))
      True
    """
    if not callable(kernel_fn):
        raise TypeError(f"batch(kernel_fn={kernel_fn!r}): kernel_fn must be a function "
                        f"kernel_fn(x1, x2=None, ...).")
    if (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
            or batch_size < 0):
        raise ValueError(f"batch(batch_size={batch_size!r}): batch_size must be a positive "
                         f"integer, the side of a tile (or 0 for no tiling).")
    if (isinstance(device_count, bool) or not isinstance(device_count, (int, np.integer))
            or device_count < -1):
        raise ValueError(f"batch(device_count={device_count!r}): device_count must be -1 (all "
                         f"devices), 0 (one device) or a positive number of devices.")
    if sum(a is not None for a in (devices, mesh)) + (device_count != -1) > 1:
        raise ValueError("batch(): give at most one of devices=, mesh= and device_count=.")
    check_bool(store_on_device, "store_on_device", "batch")
    to_device = store_on_host is None and store_on_device
    store_on_host = True if store_on_host is None else check_bool(store_on_host,
                                                                  "store_on_host", "batch")
    if mesh is not None:
        _check_mesh(mesh)
    if devices is not None:
        devices = list(devices) if not isinstance(devices, jax.Device) else [devices]
        if not devices or not all(isinstance(d, jax.Device) for d in devices):
            raise ValueError(f"batch(devices={devices!r}): devices must be a non-empty list of "
                             f"jax devices, e.g. jax.devices()[:2].")
    tqdm = _import_tqdm() if progress else None
    batch_size = int(batch_size)
    cache: dict = {}

    def batched_kernel_fn(x1, x2=None, *args, **kwargs):
        x2 = none_if_all_none(x2)
        if _mixes_batch(kernel_fn):  # e.g. BatchNorm: a pair's kernel needs the whole batch
            out = kernel_fn(x1, x2, *args, **kwargs)
            batched_kernel_fn.stats = {"tiles": 1, "untiled": "kernel_fn mixes the batch"}
            if store_on_host and not to_device:
                out = jax.tree_util.tree_map(
                    lambda a: np.asarray(a) if isinstance(a, jax.Array) else a, out)
            return out
        # A mesh of jax.make_mesh has Explicit axes (sharding in types); batch manages its
        # shardings itself, on the same devices with Auto axes.
        run_mesh = (Mesh(mesh.devices, mesh.axis_names) if mesh is not None
                    else _make_mesh(devices, device_count))
        out, stats = _evaluate(kernel_fn, x1, x2, args, kwargs, batch_size=batch_size,
                               mesh=run_mesh, store_on_host=store_on_host, tqdm=tqdm,
                               cache=cache)
        batched_kernel_fn.stats = stats
        if to_device:  # neural-tangents' store_on_device=True: jax.Arrays on the device
            out = jax.tree_util.tree_map(
                lambda a: jax.device_put(a) if isinstance(a, np.ndarray) else a, out)
        return out

    batched_kernel_fn.stats = {}
    batched_kernel_fn.__name__ = f"batched_{getattr(kernel_fn, '__name__', 'kernel_fn')}"
    batched_kernel_fn.__doc__ = kernel_fn.__doc__
    return batched_kernel_fn


# ----------------------------------------------------------------------------------------------
# arguments


def _kernel_or_traced(x1, x2, kwargs) -> bool:
    leaves = jax.tree_util.tree_leaves((x1, x2, kwargs),
                                       is_leaf=lambda a: isinstance(a, Kernel))
    return any(isinstance(a, (Kernel, jax.core.Tracer)) for a in leaves)


def _import_tqdm():
    try:
        from tqdm.auto import tqdm
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("batch(progress=True) needs tqdm: pip install 'infwidth[progress]' "
                          "(or pip install tqdm), or pass progress=False.") from e
    return tqdm


def _check_mesh(mesh):
    if not isinstance(mesh, Mesh):
        raise TypeError(f"batch(mesh={type(mesh).__name__}): mesh must be a jax.sharding.Mesh, "
                        f"e.g. jax.make_mesh((jax.device_count(),), ('tiles',)).")
    if AXIS not in mesh.axis_names:
        raise ValueError(f"batch(mesh=Mesh{dict(mesh.shape)}): the mesh needs an axis named "
                         f"'{AXIS}' to spread the tiles over; build it with "
                         f"jax.make_mesh((n,), ('{AXIS}',)).")
    extra = {a: s for a, s in mesh.shape.items() if a != AXIS and s > 1}
    if extra:
        raise ValueError(f"batch(mesh=Mesh{dict(mesh.shape)}): tiles are spread over the axis "
                         f"'{AXIS}' only, so axes {extra} would repeat the same work; give "
                         f"them size 1 or use a one-axis mesh.")


def _make_mesh(devices, device_count) -> Mesh:
    if devices is None:
        devices = jax.devices()
        if device_count == 0:
            devices = devices[:1]
        elif device_count > 0:
            if device_count > len(devices):
                raise ValueError(f"batch(device_count={device_count}): only {len(devices)} "
                                 f"devices are available.")
            devices = devices[:device_count]
    return Mesh(np.array(devices), (AXIS,))


def _batch_size_of(x, name) -> int:
    leaves = jax.tree_util.tree_leaves(x)
    if not leaves or any(np.ndim(a) < 1 for a in leaves):
        raise ValueError(f"batched kernel_fn({name}): expected an array (or a pytree of arrays) "
                         f"with a leading batch axis, got {type(x).__name__}.")
    sizes = {np.shape(a)[0] for a in leaves}
    if len(sizes) != 1 or 0 in sizes:
        raise ValueError(f"batched kernel_fn({name}): all inputs need the same, non-zero "
                         f"batch size; got batch sizes {sorted(sizes)}.")
    return sizes.pop()


def _is_array(a) -> bool:
    return isinstance(a, (np.ndarray, jax.Array))


def _is_per_input(v, n1, n2, symmetric) -> bool:
    """A keyword value ``(v1, v2)`` with one entry per input of x1 and of x2."""
    if not isinstance(v, (tuple, list)) or len(v) != 2 or not _is_array(v[0]):
        return False
    if np.ndim(v[0]) < 1 or np.shape(v[0])[0] != n1:
        return False
    if v[1] is None:
        return symmetric
    return _is_array(v[1]) and np.ndim(v[1]) >= 1 and np.shape(v[1])[0] == n2


# ----------------------------------------------------------------------------------------------
# output structure


class _Trace:
    """What tracing ``kernel_fn`` once tells about its output."""

    def __init__(self):
        self.tree = None  # treedef of the output
        self.is_array = None  # per leaf
        self.statics = None  # non-array leaves (python scalars), in order
        self.names = None  # per array leaf: the field name (Kernel / namedtuple) or None
        self.diag_spatial = None  # per array leaf: Kernel.diagonal_spatial or None


def _follow(obj, key):
    for attr in ("name", "idx", "key"):
        if hasattr(key, attr):
            k = getattr(key, attr)
            return getattr(obj, k) if attr == "name" else obj[k]
    return None


def _record(trace: _Trace, out):
    with_path, tree = jax.tree_util.tree_flatten_with_path(out)
    trace.tree = tree
    trace.is_array = [_is_array(v) for _, v in with_path]
    trace.statics = [v for (_, v), a in zip(with_path, trace.is_array) if not a]
    trace.names, trace.diag_spatial = [], []
    for (path, _), a in zip(with_path, trace.is_array):
        if not a:
            continue
        key = path[-1] if path else None
        trace.names.append(getattr(key, "name", None))
        parent = out
        try:
            for k in path[:-1]:
                parent = _follow(parent, k)
        except (AttributeError, IndexError, KeyError, TypeError):
            parent = None
        trace.diag_spatial.append(parent.diagonal_spatial if isinstance(parent, Kernel)
                                  else None)


def _mixes_batch(kernel_fn) -> bool:
    """Whether a stax ``kernel_fn`` declares that a pair's kernel depends on the rest of the
    batch (`infwidth.stax._layer.LayerInfo`); such a call is never cut into tiles. Functions
    that declare nothing are tiled, as in neural-tangents."""
    info = getattr(kernel_fn, "info", None)
    return bool(getattr(info, "mixes_batch", False))


def _call_fn(kernel_fn, trace: _Trace, static_leaves, arg_tree, per_input=(),
             diagonal: bool = False):
    """``f(x1, x2, dynamic_args) -> list of output arrays``; records the output on tracing.
    With ``per_input`` keyword names, ``x1`` and ``x2`` are ``(inputs, {name: array})``.
    ``diagonal=True`` evaluates a tile on the diagonal of a symmetric kernel as what it is,
    ``kernel_fn(x1, None)`` (its x2 is the same inputs), with ``cov2`` filled from ``cov1``: layers
    such as Dropout treat an input paired with itself differently from a copy of it."""

    def f(x1, x2, dyn):
        it = iter(dyn)
        leaves = [next(it) if s is _DYNAMIC else s for s in static_leaves]
        args, kwargs = jax.tree_util.tree_unflatten(arg_tree, leaves)
        if per_input:
            (x1, p1), (x2, p2) = x1, x2
            kwargs = {**kwargs, **{k: (p1[k], None if diagonal else p2[k]) for k in per_input}}
        out = kernel_fn(x1, None if diagonal else x2, *args, **kwargs)
        if diagonal:
            out = _with_cov2(out)
        _record(trace, out)
        flat = jax.tree_util.tree_leaves(out)
        return [v for v, a in zip(flat, trace.is_array) if a]

    return f


_DYNAMIC = object()


def _with_cov2(out):
    """A ``kernel_fn(x1, None)`` output in the layout of ``kernel_fn(x1, x2)``: cov2 = cov1."""
    if isinstance(out, Kernel):
        return out.replace(cov2=out.cov1 if out.cov2 is None else out.cov2)
    if isinstance(out, tuple) and hasattr(out, "_fields") and "cov2" not in out._fields:
        return out
    if isinstance(out, tuple) and hasattr(out, "_fields") and "cov2" in out._fields:
        fields = dict(zip(out._fields, out))
        if fields["cov2"] is None and "cov1" in fields:
            fields["cov2"] = fields["cov1"]
        elif fields["cov2"] is None:
            raise ValueError("batch: get=('cov2', ...) without 'cov1' cannot be tiled when "
                             "x2=None; ask for get=('cov1', 'cov2', ...).")
        return type(out)(**fields)
    if isinstance(out, (list, tuple)):
        return type(out)(_with_cov2(o) for o in out)
    return out


def _roles(shapes_a, shapes_b) -> list[str]:
    """Which output axes are batch axes, from outputs at two probe sizes."""
    (ra, ca), (rb, cb) = _PROBES
    roles = []
    for sa, sb in zip(shapes_a, shapes_b):
        def lead(r_a, r_b, n, sa=sa, sb=sb):
            return len(sa) >= n and all(sa[k] == r_a and sb[k] == r_b for k in range(n))
        if len(sa) >= 2 and sa[:2] == (ra, ca) and sb[:2] == (rb, cb):
            roles.append("pair")
        elif lead(ra, rb, 2):
            roles.append("row_pair")
        elif lead(ca, cb, 2):
            roles.append("col_pair")
        elif lead(ra, rb, 1):
            roles.append("row")
        elif lead(ca, cb, 1):
            roles.append("col")
        elif tuple(sa) == tuple(sb):
            roles.append("const")
        else:
            raise ValueError(
                f"batch: kernel_fn returns an array of shape {sa} for inputs with {ra} and {ca} "
                f"rows; batch() needs outputs laid out (N1, N2, ...), (N1, ...) or (N2, ...).")
    return roles


def _mirror_perm(ndim: int, shape, diag_spatial) -> tuple[int, ...]:
    """Axis permutation taking K(x1, x2) to K(x2, x1): swap the batch axes and each pair of
    interleaved axes (H, H'). Without a Kernel to say so, adjacent equal sizes are taken to be
    pairs (neural-tangents' layout); the guess is checked on the first diagonal tile."""
    perm = [1, 0]
    k = 2
    while k < ndim:
        if not diag_spatial and k + 1 < ndim and shape[k] == shape[k + 1]:
            perm += [k + 1, k]
            k += 2
        else:
            perm.append(k)
            k += 1
    return tuple(perm)


# ----------------------------------------------------------------------------------------------
# evaluation


def _pad_rows(x, n):
    return jax.tree_util.tree_map(
        lambda a: a if a.shape[0] == n else np.concatenate(
            [a, np.repeat(a[-1:], n - a.shape[0], axis=0)]), x)


def _put(host, sharding):
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])


def _shard_map(body, mesh, n_split=2):
    """``body`` on every device of ``mesh``: the first two arguments split over the 'tiles' axis,
    the third replicated, and (``n_split=3``) a fourth split too. Without replication checks:
    derivatives taken inside ``kernel_fn`` (empirical and Monte Carlo kernels) must stay per
    device, not be summed over devices as those of a replicated value would be."""
    in_specs = (P(AXIS), P(AXIS), P()) + (P(AXIS),) * (n_split - 2)
    specs = dict(mesh=mesh, in_specs=in_specs, out_specs=P(AXIS))
    if hasattr(jax, "shard_map"):
        return jax.shard_map(body, check_vma=False, **specs)
    from jax.experimental.shard_map import shard_map  # JAX < 0.7

    return shard_map(body, check_rep=False, **specs)


def _fetch(arr) -> np.ndarray:
    if arr.is_fully_addressable:
        return np.asarray(arr)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(arr, tiled=True))


def _evaluate(kernel_fn, x1, x2, args, kwargs, *, batch_size, mesh, store_on_host, tqdm, cache):
    t_start = time.perf_counter()
    if _kernel_or_traced(x1, x2, kwargs):
        # under jit (or on a Kernel of an earlier layer) the call is one traced program: the
        # layers' automatic tiling (`infwidth.stax.tile_memory`) bounds its memory instead
        out = kernel_fn(x1, x2, *args, **kwargs)
        return out, {"tiles": 0, "devices": 1, "traced": True,
                     "elapsed_s": time.perf_counter() - t_start}
    symmetric = x2 is None or x2 is x1  # as kernel_fn: x2 is x1 means x1_is_x2
    x1 = jax.tree_util.tree_map(np.asarray, x1)
    n1 = _batch_size_of(x1, "x1")
    x2 = x1 if symmetric else jax.tree_util.tree_map(np.asarray, x2)
    n2 = _batch_size_of(x2, "x2")
    if jax.tree_util.tree_structure(x1) != jax.tree_util.tree_structure(x2):
        raise ValueError("batched kernel_fn(x1, x2): x1 and x2 must have the same structure.")
    raw = (x1, None if symmetric else x2, kwargs)
    # Keyword arguments given per input, as neural-tangents does (e.g. a graph's
    # pattern=(A1, A2), A1 of shape (N1, ...), A2 of shape (N2, ...) or None for x2=None), are
    # cut into tiles with the inputs.
    per_input = {k: v for k, v in kwargs.items() if _is_per_input(v, n1, n2, symmetric)}
    if per_input:
        kwargs = {k: v for k, v in kwargs.items() if k not in per_input}
        x1 = (x1, {k: np.asarray(v[0]) for k, v in per_input.items()})
        x2 = x1 if symmetric else (x2, {k: np.asarray(v[1]) for k, v in per_input.items()})
    per_input_names = tuple(sorted(per_input))
    n_dev = mesh.shape[AXIS]

    if batch_size:
        br, bc = min(batch_size, n1), min(batch_size, n2)
    else:
        br, bc = -(-n1 // n_dev), n2
    sym_tiles = symmetric and br == bc
    n_rows, n_cols = -(-n1 // br), -(-n2 // bc)

    # Split the extra arguments into arrays (passed to every device) and static values.
    arg_leaves, arg_tree = jax.tree_util.tree_flatten((args, kwargs))
    dyn = [a for a in arg_leaves if _is_array(a)]
    static_leaves = tuple(_DYNAMIC if _is_array(a) else a for a in arg_leaves)

    # Locate the batch axes of every output: trace at two probe sizes (once per signature).
    signature = (static_leaves, arg_tree, per_input_names,
                 str(jax.tree_util.tree_map(lambda a: (a.shape[1:], a.dtype), (x1, x2))),
                 tuple((a.shape, a.dtype) for a in dyn))
    try:
        probed = cache.get(("probe",) + signature)
    except TypeError:  # unhashable static arguments: no caching
        probed, signature = None, None
    if probed is None:
        trace = _Trace()
        f = _call_fn(kernel_fn, trace, static_leaves, arg_tree, per_input_names)

        def spec(x, n):
            return jax.tree_util.tree_map(
                lambda a: jax.ShapeDtypeStruct((n,) + a.shape[1:], a.dtype), x)

        # an error in kernel_fn is raised here, with the caller's shapes (not the probes')
        jax.eval_shape(f, spec(x1, n1), spec(x2, n2), dyn)
        shapes = []
        for r, c in _PROBES:
            out = jax.eval_shape(f, spec(x1, r), spec(x2, c), dyn)
            shapes.append([o.shape for o in out])
        probed = (_roles(*shapes), trace.names, trace.diag_spatial)
        if signature is not None:
            cache[("probe",) + signature] = probed
    roles, names, diag_spatial = probed
    for role, name in zip(roles, names):
        if role in ("row_pair", "col_pair") and name not in ("cov1", "cov2"):
            raise ValueError("batch: kernel_fn returns an (N1, N1, ...) or (N2, N2, ...) array "
                             "that is not a Kernel's cov1/cov2; batch() cannot tile it.")

    # Tiles, padded to a multiple of the device count.
    x1p, x2p = _pad_rows(x1, padded_rows(n1, br)), _pad_rows(x2, padded_rows(n2, bc))
    tiles = tile_pairs(n_rows, n_cols, symmetric=sym_tiles)

    key = None if signature is None else (mesh, br, bc, sym_tiles) + signature
    compiled = None if key is None else cache.get(key)
    if compiled is None:
        body_trace = _Trace()
        call_tile = _call_fn(kernel_fn, body_trace, static_leaves, arg_tree, per_input_names)
        call_diagonal = _call_fn(kernel_fn, _Trace(), static_leaves, arg_tree, per_input_names,
                                 diagonal=True)

        def body(a, b, d, on_diagonal):
            a, b = jax.tree_util.tree_map(lambda v: v[0], (a, b))
            if not sym_tiles:
                return [v[None] for v in call_tile(a, b, d)]
            out = jax.lax.cond(on_diagonal[0], call_diagonal, call_tile, a, b, d)
            return [v[None] for v in out]

        compiled = (jax.jit(_shard_map(body, mesh, n_split=3)), body_trace)
        if key is not None:
            cache[key] = compiled
    tile_fn, body_trace = compiled

    in_sharding = NamedSharding(mesh, P(AXIS))
    replicated = NamedSharding(mesh, P())
    dyn_dev = [_put(np.asarray(a), replicated) for a in dyn]
    perms = [None] * len(roles)
    checked = not sym_tiles

    host = [None] * len(roles)
    device_tiles: list[list] = [[] for _ in roles]
    filled_rows, filled_cols = set(), set()

    def stack(x, idx, b):
        return jax.tree_util.tree_map(
            lambda a: _put(np.stack([a[i * b:(i + 1) * b] for i in idx]), in_sharding), x)

    def consume(group, outs):
        if not store_on_host:
            for k, (role, o) in enumerate(zip(roles, outs)):
                if role == "pair":
                    device_tiles[k].append(o)
        fetched = [None if (role == "pair" and not store_on_host) else _fetch(o)
                   for role, o in zip(roles, outs)]
        for t, (i, j) in enumerate(group):
            r0, r1 = i * br, min(n1, (i + 1) * br)
            c0, c1 = j * bc, min(n2, (j + 1) * bc)
            for k, role in enumerate(roles):
                v = fetched[k]
                if v is None:
                    continue
                v = v[t]
                if role == "pair":
                    if host[k] is None:
                        host[k] = np.empty((n1, n2) + v.shape[2:], v.dtype)
                    host[k][r0:r1, c0:c1] = v[:r1 - r0, :c1 - c0]
                    if sym_tiles and i != j:
                        m = np.transpose(v, perms[k])
                        host[k][c0:c1, r0:r1] = m[:c1 - c0, :r1 - r0]
                elif role in ("row", "row_pair") and i not in filled_rows:
                    if host[k] is None:
                        host[k] = np.empty((n1,) + v.shape[1:], v.dtype)
                    host[k][r0:r1] = v[:r1 - r0]
                elif role in ("col", "col_pair") and j not in filled_cols:
                    if host[k] is None:
                        host[k] = np.empty((n2,) + v.shape[1:], v.dtype)
                    host[k][c0:c1] = v[:c1 - c0]
                elif role == "const" and host[k] is None:
                    host[k] = v
            filled_rows.add(i)
            filled_cols.add(j)

    def check_mirror(group, outs):
        """Sets the mirror permutations; False when a diagonal tile is not symmetric under them
        (then the tiles below the diagonal are computed too)."""
        t = group.index((0, 0))
        ok = True
        for k, role in enumerate(roles):
            if role != "pair":
                continue
            shape = outs[k].shape[1:]
            perms[k] = _mirror_perm(len(shape), shape, diag_spatial[k])
            if names[k] in ("nngp", "ntk") and diag_spatial[k] is not None:
                continue  # a Kernel's layout is known
            m = min(32, shape[0])  # a corner of a diagonal tile is a diagonal block too
            v = _fetch(outs[k])[t][:m, :m]
            scale = float(np.max(np.abs(v))) if v.size else 0.0
            if not np.allclose(v, np.transpose(v, perms[k]), rtol=1e-4, atol=1e-6 * scale):
                ok = False
        return ok

    groups = [tiles[s:s + n_dev] for s in range(0, len(tiles), n_dev)]
    stats = {"tiles": len(tiles), "devices": n_dev, "tile_shape": (br, bc),
             "groups": len(groups), "mirrored": sym_tiles}
    bar = tqdm(total=len(tiles), unit="tile", desc="kernel tiles") if tqdm else None
    done_times = []
    pending = None
    g = 0
    while g < len(groups) or pending is not None:
        launched = None
        if g < len(groups):
            group = groups[g]
            padded = group + [group[-1]] * (n_dev - len(group))
            on_diagonal = _put(np.array([sym_tiles and i == j for i, j in padded]), in_sharding)
            launched = (group, tile_fn(stack(x1p, [i for i, _ in padded], br),
                                       stack(x2p, [j for _, j in padded], bc), dyn_dev,
                                       on_diagonal))
            g += 1
        if pending is not None:
            group, outs = pending
            if not checked:
                checked = True
                if not check_mirror(group, outs):
                    sym_tiles = False
                    stats["mirrored"] = False
                    lower = [(i, j) for i in range(n_rows) for j in range(i)]
                    groups += [lower[s:s + n_dev] for s in range(0, len(lower), n_dev)]
                    stats["tiles"] += len(lower)
                    stats["groups"] = len(groups)
                    if bar is not None:
                        bar.total = stats["tiles"]
            consume(group, outs)
            done_times.append(time.perf_counter())
            n_done = len(done_times)
            if n_done >= 3 and n_done < len(groups):
                # The first group pays for compilation; later ones set the pace.
                per_group = (done_times[-1] - done_times[0]) / (n_done - 1)
                estimate = done_times[-1] - t_start + per_group * (len(groups) - n_done)
                if n_done >= max(3, len(groups) // 10):
                    stats.setdefault("estimated_total_s", estimate)
                if bar is not None:
                    bar.set_postfix_str(f"total ~{estimate:.1f} s")
            if bar is not None:
                bar.update(len(group))
        pending = launched
    if bar is not None:
        bar.close()
    stats["first_group_s"] = done_times[0] - t_start
    stats["total_s"] = time.perf_counter() - t_start

    if not store_on_host:
        for k, role in enumerate(roles):
            if role == "pair":
                host[k] = _assemble_on_devices(device_tiles[k], tiles_in_order(groups, n_dev),
                                               perms[k] if sym_tiles else None, n1, n2,
                                               n_rows, n_cols, br, bc, mesh)
            elif host[k] is not None:
                host[k] = _put(host[k], replicated)

    # Rebuild the output: put static leaves back, fix shapes and the x2=None fields.
    arrays = iter(host)
    statics = iter(body_trace.statics)
    leaves = [next(arrays) if a else next(statics) for a in body_trace.is_array]
    out = jax.tree_util.tree_unflatten(body_trace.tree, leaves)
    pair_cov = None
    if any(r in ("row_pair", "col_pair") for r in roles):
        pair_cov = _full_covariances(kernel_fn, *raw, args, batch_size, mesh, store_on_host,
                                     cache, per_input)
    return _fix(out, n1, n2, symmetric, pair_cov), stats


def tiles_in_order(groups, n_dev):
    """The tile of every row of the concatenated group outputs (padded groups repeat)."""
    order = []
    for group in groups:
        order += group + [group[-1]] * (n_dev - len(group))
    return order


def _assemble_on_devices(parts, order, perm, n1, n2, n_rows, n_cols, br, bc, mesh):
    """Puts tiles computed on the devices together into one (N1, N2, ...) jax.Array."""
    index = {t: k for k, t in enumerate(order)}
    src = np.zeros((n_rows, n_cols), np.int32)
    flip = np.zeros((n_rows, n_cols), bool)
    for i in range(n_rows):
        for j in range(n_cols):
            if (i, j) in index:
                src[i, j] = index[(i, j)]
            else:
                src[i, j], flip[i, j] = index[(j, i)], True
    n_dev = mesh.shape[AXIS]
    spec = P(AXIS) if n1 % n_dev == 0 else (P(None, AXIS) if n2 % n_dev == 0 else None)
    if spec is None:  # no even split: the whole kernel goes to the first device
        first = mesh.devices.flat[0]
        parts = [jax.device_put(p, first) for p in parts]
        out_sharding = jax.sharding.SingleDeviceSharding(first)
    else:
        out_sharding = NamedSharding(mesh, spec)

    def assemble(*parts):
        import jax.numpy as jnp

        tiles = jnp.concatenate(parts)
        grid = tiles[src]  # (R, C, br, bc, ...)
        if flip.any():
            mirrored = jnp.transpose(tiles, (0,) + tuple(p + 1 for p in perm))[src]
            mask = flip.reshape(flip.shape + (1,) * (grid.ndim - 2))
            grid = jnp.where(mask, mirrored, grid)
        grid = jnp.moveaxis(grid, 1, 2)  # (R, br, C, bc, ...)
        full = grid.reshape((n_rows * br, n_cols * bc) + grid.shape[4:])
        return full[:n1, :n2]

    return jax.jit(assemble, out_shardings=out_sharding)(*parts)


def _full_covariances(kernel_fn, x1, x2, kwargs, args, batch_size, mesh, store_on_host, cache,
                      per_input):
    """cov1 / cov2 of ``diagonal_batch=False`` Kernels: the NNGP of each batch with itself."""
    def nngp(x, side):
        a, kw = list(args), dict(kwargs)
        kw.update({k: (v[side], None) for k, v in per_input.items()})
        if a and "get" not in kw:
            a[0] = "nngp"
        else:
            kw["get"] = "nngp"
        out, _ = _evaluate(kernel_fn, x, None, tuple(a), kw, batch_size=batch_size, mesh=mesh,
                           store_on_host=store_on_host, tqdm=None, cache=cache)
        return out

    return nngp(x1, 0), (None if x2 is None else nngp(x2, 1))


def _fix(out, n1, n2, symmetric, pair_cov):
    """Batch sizes in shape1/shape2, x1_is_x2 and cov2=None for x2=None, full covariances."""
    def fix_fields(fields: dict) -> dict:
        if "shape1" in fields and isinstance(fields["shape1"], tuple):
            fields["shape1"] = (n1,) + tuple(fields["shape1"][1:])
        if "shape2" in fields and isinstance(fields["shape2"], tuple):
            fields["shape2"] = (n2,) + tuple(fields["shape2"][1:])
        if "x1_is_x2" in fields:
            fields["x1_is_x2"] = symmetric
        if pair_cov is not None:
            for name, value in zip(("cov1", "cov2"), pair_cov):
                if name in fields and fields[name] is not None:
                    fields[name] = value
        if symmetric and "cov2" in fields:
            fields["cov2"] = None
        return fields

    if isinstance(out, Kernel):
        names = ("cov1", "cov2", "shape1", "shape2", "x1_is_x2")
        return out.replace(**fix_fields({n: getattr(out, n) for n in names}))
    if isinstance(out, tuple) and hasattr(out, "_fields"):
        return type(out)(**fix_fields(dict(zip(out._fields, out))))
    if isinstance(out, (list, tuple)):
        return type(out)(_fix(o, n1, n2, symmetric, pair_cov) for o in out)
    if isinstance(out, dict):
        return {k: _fix(v, n1, n2, symmetric, pair_cov) for k, v in out.items()}
    return out

