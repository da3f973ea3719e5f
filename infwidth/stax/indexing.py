"""`Index` and `Slice`: numpy-style indexing of activations, and of the kernel to match."""

from __future__ import annotations

from ._layer import Layer, make_layer


class _Slice:
    """``Slice[1:3, ::2]`` returns the index ``(slice(1, 3), slice(None, None, 2))``, to pass to
    `Index` (function arguments cannot contain ``:``).

    >>> Slice[:, 1:3, 0]
    (slice(None, None, None), slice(1, 3, None), 0)
    """

    def __getitem__(self, idx):
        return idx


Slice = _Slice()


def _full_index(idx, ndim: int, name: str):
    """Expands ``idx`` (int, slice, Ellipsis or a tuple of them) to one entry per axis."""
    idx = idx if isinstance(idx, tuple) else (idx,)
    if any(i is None for i in idx):
        raise ValueError(f"{name}: None / np.newaxis is not supported; only ints, slices and "
                         f"Ellipsis.")
    n_ell = sum(i is Ellipsis for i in idx)
    if n_ell > 1:
        raise ValueError(f"{name}: an index can have only one Ellipsis (...).")
    for i in idx:
        if not (i is Ellipsis or isinstance(i, slice)
                or (isinstance(i, int) and not isinstance(i, bool))):
            raise TypeError(f"{name}: index entries must be ints, slices or Ellipsis; got "
                            f"{i!r}. Build the index with stax.Slice[...].")
    if len(idx) - n_ell > ndim:
        raise ValueError(f"{name}: too many indices ({len(idx) - n_ell}) for inputs of rank "
                         f"{ndim}.")
    if n_ell:
        e = idx.index(Ellipsis)
        idx = idx[:e] + (slice(None),) * (ndim - len(idx) + 1) + idx[e + 1:]
    return idx + (slice(None),) * (ndim - len(idx))


def _index_shape(shape, full):
    out = []
    for size, i in zip(shape, full):
        if isinstance(i, slice):
            out.append(len(range(size)[i]))
        elif not -size <= i < size:
            raise IndexError(f"index {i} is out of bounds for an axis of size {size}")
    return tuple(out)


def Index(idx, batch_axis: int = 0, channel_axis: int = -1) -> Layer:
    """Indexes the activations as ``x[idx]`` (numpy semantics), as neural-tangents'
    `stax.Index`.

    The kernel is indexed to match: a slice of the batch axis selects inputs of both batches;
    an int or slice of a spatial axis selects the same positions for both members of every
    position pair (an int removes the axis). The channel axis (infinitely wide in the limit) and
    integer indexing of the batch axis are not supported by ``kernel_fn``, as in
    neural-tangents.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> _, apply_fn, kernel_fn = stax.serial(stax.Dense(4), stax.Index(stax.Slice[:, -1]))
      >>> x = jnp.ones((2, 5, 3))  # the last token of each sequence
      >>> kernel_fn(x, get='nngp').shape
      (2, 2)
    """
    name = f"Index({idx!r})"
    if batch_axis != 0 or channel_axis != -1:
        raise ValueError(f"Index(batch_axis={batch_axis}, channel_axis={channel_axis}): infwidth "
                         f"keeps the batch first and channels last; move the axes of your inputs "
                         f"with jnp.moveaxis.")

    def init_fn(key, input_shape):
        return _index_shape(tuple(input_shape), _full_index(idx, len(input_shape), name)), ()

    def apply_fn(params, x, **kwargs):
        return x[idx]

    def kernel_map(k, **kwargs):
        if isinstance(k, (list, tuple)):
            raise ValueError(f"{name}: got {len(k)} inputs; this layer takes one.")
        ndim = len(k.shape1)
        full = _full_index(idx, ndim, name)
        if full[-1] != slice(None):
            raise NotImplementedError(f"{name}: kernel_fn cannot index the channel axis, which "
                                      f"is infinitely wide in the limit; index only batch and "
                                      f"spatial axes (e.g. Slice[..., 1:3, :]).")
        if not isinstance(full[0], slice):
            raise NotImplementedError(f"{name}: kernel_fn needs the batch axis; index it with a "
                                      f"slice (e.g. Slice[2:3]) rather than an int.")
        spatial = full[1:-1]

        def index(mat, n_batch):
            if mat is None:
                return None
            per = 1 if k.diagonal_spatial else 2
            entries = (full[0],) * n_batch
            for i in spatial:
                entries += (i,) * per
            return mat[entries]

        n_cov = 1 if k.diagonal_batch else 2
        return k.replace(nngp=index(k.nngp, 2), ntk=index(k.ntk, 2),
                         cov1=index(k.cov1, n_cov), cov2=index(k.cov2, n_cov),
                         shape1=_index_shape(k.shape1, full), shape2=_index_shape(k.shape2, full))

    # an index that may select inputs makes a pair's kernel depend on the batch: never tiled
    first = idx[0] if isinstance(idx, tuple) and idx else idx
    return make_layer("Index", init_fn, apply_fn, kernel_map, shape_fn=None,
                      mixes_batch=not (isinstance(first, slice) and first == slice(None)))
