"""Building your own layers with neural-tangents' decorators: `layer`, `requires`, the
three-valued `Bool` and the `Diagonal` requirement, and `MaskedArray` / `unmask_fn`.

A custom layer is a function returning ``(init_fn, apply_fn, kernel_fn)`` where ``kernel_fn``
maps an `infwidth.Kernel` to a `Kernel`; `layer` turns it into a layer whose ``kernel_fn``
also accepts arrays, ``get=``, ``diagonal_batch=`` and ``diagonal_spatial=`` like every
built-in one, and `requires` declares what the input Kernel must hold.

>>> import jax.numpy as jnp
>>> from infwidth import stax
>>> @stax.layer
... def Double():
...     def init_fn(key, input_shape):
...         return input_shape, ()
...     def apply_fn(params, x, **kwargs):
...         return 2 * x
...     @stax.requires(diagonal_spatial=stax.Diagonal())
...     def kernel_fn(k, **kwargs):
...         return k.scale(2.)
...     return init_fn, apply_fn, kernel_fn
>>> _, _, kernel_fn = stax.serial(stax.Dense(8), Double())
>>> float(kernel_fn(jnp.ones((1, 3)), get='nngp')[0, 0])
4.0
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from ..kernel import Kernel
from ._layer import make_layer
from ._masking import MaskedArray


class Bool(enum.IntEnum):
    """Three-valued logic for `Diagonal`: ``NO < MAYBE < YES``; ``&`` is the minimum.

    >>> from infwidth.stax import Bool
    >>> Bool.YES & Bool.MAYBE
    <Bool.MAYBE: 1>
    """

    NO = 0
    MAYBE = 1
    YES = 2

    def __and__(self, other: Bool) -> Bool:
        return Bool(min(int(self), int(other)))

    __rand__ = __and__


@dataclasses.dataclass(frozen=True)
class Diagonal:
    """Whether a layer can work on kernels that keep only diagonal entries (equal inputs,
    ``diagonal_batch``, or equal positions, ``diagonal_spatial``), as in neural-tangents.

    ``input``: may this layer's input kernel be diagonal (``YES``), only if its off-diagonal
    entries vanish (``MAYBE``), or not (``NO``). ``output``: may the outputs from here to the
    network's end be diagonal (``YES``), yes after this layer but maybe not further (``MAYBE``),
    or not (``NO``). ``a & b`` combines parallel layers (the weaker of both), ``a >> b`` the
    composition ``b(a(.))``; ``bool(d)`` is whether a diagonal kernel suffices.

    >>> from infwidth.stax import Bool, Diagonal
    >>> bool(Diagonal()), bool(Diagonal(output=Bool.YES))
    (False, True)
    >>> Diagonal(output=Bool.YES) >> Diagonal(input=Bool.NO)
    Diagonal(input=<Bool.YES: 2>, output=<Bool.YES: 2>)
    """

    input: Bool = Bool.YES
    output: Bool = Bool.NO

    def __rshift__(self, other: Diagonal) -> Diagonal:
        if self.output == Bool.YES:  # diagonal from here on, whatever follows
            return self
        if self.output > Bool.NO and other.input > Bool.NO:
            first = self.input
        elif self.output == Bool.NO and other.input < Bool.YES:
            first = Bool.NO
        else:
            first = Bool(min(self.input, other.input))
        return Diagonal(input=first, output=other.output)

    def __lshift__(self, other: Diagonal) -> Diagonal:
        return other >> self

    def __and__(self, other: Diagonal) -> Diagonal:
        return Diagonal(input=self.input & other.input, output=self.output & other.output)

    __rand__ = __and__

    def __bool__(self) -> bool:
        return self.input == Bool.YES and self.output > Bool.NO


def _forbids_diagonal(requirement) -> bool:
    return requirement is False or (isinstance(requirement, Diagonal)
                                    and requirement.input == Bool.NO)


def requires(**static_reqs):
    """Decorates a ``kernel_fn(k, **kwargs)`` with checks of its input `Kernel`.

    ``diagonal_batch=`` / ``diagonal_spatial=`` (``False`` or a `Diagonal` whose ``input`` is
    ``Bool.NO``) say that the layer needs the full covariance over the batch / over positions:
    a Kernel computed with that axis diagonal raises a ValueError naming the fix.
    ``batch_axis=`` / ``channel_axis=`` state the layout the layer assumes; infwidth kernels
    are batch-first and channels-last, so other values raise. Other names are ignored (in
    neural-tangents they are passed down to the input kernel's computation).

    >>> import jax.numpy as jnp
    >>> from infwidth import stax
    >>> @stax.requires(diagonal_batch=False)
    ... def kernel_fn(k, **kwargs):
    ...     return k
    >>> k = stax.Identity().kernel_fn(jnp.ones((2, 3)), diagonal_batch=False)
    >>> kernel_fn(k) is k
    True
    >>> kernel_fn(stax.Identity().kernel_fn(jnp.ones((2, 3))))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: kernel_fn needs diagonal_batch=False, but its input kernel ... diagonal_batch=False.
    """

    def decorate(kernel_fn: Callable) -> Callable:
        @functools.wraps(kernel_fn)
        def checked(k, **kwargs):
            for kk in (k if isinstance(k, (list, tuple)) else [k]):
                if isinstance(kk, Kernel):
                    _check(kk, static_reqs, getattr(kernel_fn, "__name__", "kernel_fn"))
            return kernel_fn(k, **kwargs)

        checked.static_reqs = dict(static_reqs)
        return checked

    return decorate


def _check(k: Kernel, reqs: dict, name: str):
    for key in ("diagonal_batch", "diagonal_spatial"):
        v = reqs.get(key)
        if v is not None and getattr(k, key) is True and _forbids_diagonal(v):
            raise ValueError(f"{name} needs {key}={v}, but its input kernel was computed with "
                             f"{key}=True and lacks the off-diagonal entries; call kernel_fn "
                             f"with {key}=False.")
    ndim = len(k.shape1)
    for key, expected in (("batch_axis", 0), ("channel_axis", ndim - 1)):
        v = reqs.get(key)
        if v is not None and v % ndim != expected:
            raise ValueError(f"{name} requires {key}={v}, but infwidth kernels are batch-first "
                             f"and channels-last ({key}={expected} for {ndim}-d inputs); move "
                             f"the axes of the inputs (jnp.moveaxis) instead.")


def layer(layer_fn: Callable) -> Callable:
    """Turns a function returning ``(init_fn, apply_fn, kernel_fn)`` into a layer factory.

    The ``kernel_fn`` you write maps a `Kernel` (or a list of them, for several inputs) to a
    `Kernel`; the decorated layer's ``kernel_fn`` also accepts input arrays and the standard
    ``get``, ``diagonal_batch`` and ``diagonal_spatial`` arguments. Your ``kernel_fn`` sets the
    output's ``shape1``/``shape2`` when it changes them. A fourth returned element (a
    neural-tangents ``mask_fn(mask, input_shape)``) maps the mask of masked inputs
    (``mask_constant``); without it the mask passes through unchanged. See the module
    docstring for an example.

    >>> import jax.numpy as jnp
    >>> from infwidth import stax
    >>> Neg = stax.layer(lambda: (lambda key, s: (s, ()), lambda p, x, **kw: -x,
    ...                          lambda k, **kw: k))
    >>> stax.serial(stax.Dense(4), Neg()).kernel_fn(jnp.ones((2, 3)), get='nngp').shape
    (2, 2)
    """
    name = getattr(layer_fn, "__name__", "layer")

    @functools.wraps(layer_fn)
    def build(*args, **kwargs):
        fns = tuple(layer_fn(*args, **kwargs))
        if len(fns) not in (3, 4):
            raise ValueError(f"stax.layer({name}): the decorated function must return "
                             f"(init_fn, apply_fn, kernel_fn); it returned {len(fns)} items.")
        init_fn, apply_fn, kernel_fn = fns[:3]
        return make_layer(name, init_fn, apply_fn, kernel_fn, None,
                          mask_fn=fns[3] if len(fns) == 4 else None,
                          uses_mask=getattr(layer_fn, "_uses_mask", False))

    return build


def supports_masking(remask_kernel: bool) -> Callable:
    """neural-tangents' decorator for layers that handle masked inputs (``mask_constant``).

    Every infwidth layer carries masks, so a custom `layer` needs this only for its
    ``apply_fn`` to receive ``mask=`` (the boolean mask of its input, ``True`` where absent)
    when the input is masked; a fourth returned element ``mask_fn(mask, input_shape)`` maps the
    mask as in neural-tangents. Covariances of absent positions are always zeroed after the
    layer (the finite network zeroes every layer's masked inputs, so the kernel must too);
    ``remask_kernel`` is checked and kept for neural-tangents' code.

    >>> import jax.numpy as jnp
    >>> from infwidth import stax
    >>> @stax.layer
    ... @stax.supports_masking(remask_kernel=True)
    ... def CountPresent():
    ...     def apply_fn(params, x, mask=None, **kwargs):
    ...         return jnp.sum(~mask, axis=(1, 2)) if mask is not None else x
    ...     return (lambda key, s: (s, ()), apply_fn, lambda k, **kw: k)
    >>> x = jnp.array([[[1.], [2.], [0.]]])
    >>> CountPresent().apply_fn((), x, mask_constant=0.).masked_value.tolist()
    [2]
    """
    if not isinstance(remask_kernel, bool):
        raise TypeError(f"supports_masking(remask_kernel={remask_kernel!r}): expected True or "
                        f"False.")

    def decorate(layer_fn: Callable) -> Callable:
        @functools.wraps(layer_fn)
        def masked_layer_fn(*args, **kwargs):
            return layer_fn(*args, **kwargs)

        masked_layer_fn._uses_mask = True
        return masked_layer_fn

    return decorate


def unmask_fn(fn: Callable) -> Callable:
    """Wraps ``fn`` so that every `MaskedArray` in its output becomes a plain array with the
    masked entries set to zero (e.g. before `infwidth.empirical.monte_carlo_kernel_fn`).

    >>> import jax.numpy as jnp
    >>> from infwidth.stax import MaskedArray, unmask_fn
    >>> f = unmask_fn(lambda x: MaskedArray(x, x > 1))
    >>> f(jnp.array([1., 2.])).tolist()
    [1.0, 0.0]
    """

    def unmask(x):
        if isinstance(x, MaskedArray):
            return jax.tree_util.tree_map(
                lambda v, m: jnp.where(m, jnp.zeros((), v.dtype), v), x.masked_value, x.mask)
        return x

    @functools.wraps(fn)
    def without_mask(*args, **kwargs):
        return jax.tree_util.tree_map(unmask, fn(*args, **kwargs),
                                      is_leaf=lambda x: isinstance(x, MaskedArray))

    return without_mask
