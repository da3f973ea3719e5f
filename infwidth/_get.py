"""The one parser of ``get`` arguments, and the namedtuples results come in.

``get`` selects what a kernel function returns, as in neural-tangents: ``None`` (everything),
a name such as ``'ntk'`` (that array) or a tuple of names (a namedtuple with those fields, in
that order). One namedtuple class exists per (kind, names): ``AnalyticKernel`` for `stax`
kernels, ``EmpiricalKernel`` for empirical ones, ``MonteCarloKernel`` for Monte Carlo
estimates and ``Gaussian`` for predictions, the names neural-tangents users see.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Sequence


@functools.cache
def namedtuple_of(kind: str, names: tuple[str, ...]):
    """The namedtuple class ``kind`` with fields ``names`` (one class per combination).

    >>> namedtuple_of('AnalyticKernel', ('nngp', 'ntk'))(1, 2)
    AnalyticKernel(nngp=1, ntk=2)
    """
    return collections.namedtuple(kind, names)


def parse_get(get, allowed: Sequence[str], caller: str) -> tuple[str, ...] | None:
    """Validates ``get`` and returns it as a tuple of names (``None`` for "everything").

    Raises before any work, naming ``caller``: a type other than None/str/tuple/list, an empty
    tuple, an unknown name (listing the allowed ones) or a name asked for twice.

    >>> parse_get('ntk', ('nngp', 'ntk'), 'kernel_fn')
    ('ntk',)
    >>> parse_get(('nngp', 'nngp'), ('nngp', 'ntk'), 'kernel_fn')
    Traceback (most recent call last):
    ...
    ValueError: kernel_fn(get=('nngp', 'nngp')): 'nngp' is asked for twice; ...
    """
    if get is None:
        return None
    names = (get,) if isinstance(get, str) else get
    if not isinstance(names, (tuple, list)) or not names:
        raise TypeError(
            f"{caller}(get={get!r}): get must be None (everything), a name such as "
            f"{allowed[-1]!r}, or a non-empty tuple of names such as {tuple(allowed[:2])!r}."
        )
    for n in names:
        if not isinstance(n, str) or n not in allowed:
            raise ValueError(f"{caller}(get={get!r}): unknown kernel {n!r}; get must be made of "
                             f"{', '.join(repr(g) for g in allowed)}.")
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"{caller}(get={get!r}): {twice!r} is asked for twice; give each name "
                         f"once, e.g. get=({', '.join(repr(g) for g in allowed[:2])}).")
    return tuple(names)


def select(out, get, kind: str):
    """Picks the fields ``get`` asks for out of ``out`` (an object with those attributes, or a
    list of them): the object itself, one array, or a ``kind`` namedtuple."""
    if isinstance(out, (list, tuple)) and not hasattr(out, "_fields"):
        return type(out)(select(o, get, kind) for o in out)
    if get is None:
        return out
    if isinstance(get, str):
        return getattr(out, get)
    return namedtuple_of(kind, tuple(get))(*(getattr(out, n) for n in get))
