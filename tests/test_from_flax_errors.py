"""from_flax refuses what it cannot map, naming the operation and the model's source line."""

import jax
import jax.numpy as jnp
import pytest

from infwidth import from_flax
from infwidth.flax_tracing import UnsupportedOperation

nn = pytest.importorskip("flax.linen")
nnx = pytest.importorskip("flax.nnx")

X = jnp.ones((3, 4))
THIS_FILE = __file__.rsplit("/", 1)[-1]


class WithSort(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.Dense(8)(x)
        return jnp.sort(h, axis=-1)  # the line the error must name


class WithArgmax(nn.Module):
    @nn.compact
    def __call__(self, x):
        return jax.nn.one_hot(jnp.argmax(nn.Dense(8)(x), axis=-1), 8)


@jax.custom_vjp
def clip_gradient(x):
    return x


clip_gradient.defvjp(lambda x: (x, None), lambda _, g: (jnp.clip(g, -1, 1),))


class WithCustomVjp(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(1)(clip_gradient(nn.Dense(8)(x)))


class WithValueBranch(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.Dense(8)(x)
        if h.sum() > 0:  # a Python branch on an activation's value
            h = nn.relu(h)
        return nn.Dense(1)(h)


class WithBatchNorm(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.BatchNorm(use_running_average=False)(nn.Dense(8)(x))
        return nn.Dense(1)(nn.relu(h))


def _line_of(cls, text):
    import inspect

    src, start = inspect.getsourcelines(cls)
    return start + next(i for i, line in enumerate(src) if text in line)


def test_sort_names_operation_and_line():
    with pytest.raises(UnsupportedOperation, match="'sort'") as info:
        from_flax(WithSort(), X)
    assert f"{THIS_FILE}:{_line_of(WithSort, 'jnp.sort')}" in str(info.value)


def test_argmax_is_refused():
    with pytest.raises(UnsupportedOperation, match="'argmax'"):
        from_flax(WithArgmax(), X)


def test_custom_vjp_is_refused():
    with pytest.raises(UnsupportedOperation, match="custom_vjp"):
        from_flax(WithCustomVjp(), X)


def test_python_branch_on_values_is_refused():
    with pytest.raises(ValueError, match="branches in Python") as info:
        from_flax(WithValueBranch(), X)
    assert f"{THIS_FILE}:{_line_of(WithValueBranch, 'h.sum() > 0')}" in str(info.value)


def test_batchnorm_in_train_mode_is_refused():
    with pytest.raises(ValueError, match="batch_stats"):
        from_flax(WithBatchNorm(), X)

    def batch_norm(params, x):  # the same statistics in a plain function
        h = x @ params["w"]
        return (h - h.mean(axis=0, keepdims=True)) / jnp.sqrt(h.var(axis=0, keepdims=True) + 1e-5)

    with pytest.raises(UnsupportedOperation, match="batch axis.*BatchNorm"):
        from_flax(batch_norm, X, params={"w": jnp.ones((4, 8))},
                  initializers={"w": jax.nn.initializers.lecun_normal()})


def test_correlated_sum_and_shared_weights_are_refused():
    def doubled(params, x):  # relu outputs have a mean, so the two branches correlate
        return jax.nn.relu(x @ params["w"]) + jax.nn.relu(x @ params["v"])

    def tied(params, x):
        return jnp.tanh(x @ params["w"]) @ params["w"]

    he = jax.nn.initializers.he_normal()
    kw = dict(params={"w": jnp.ones((4, 4)), "v": jnp.ones((4, 4))},
              initializers={"w": he, "v": he})
    with pytest.raises(UnsupportedOperation, match="correlated"):
        from_flax(doubled, X, **kw)
    kw = dict(params={"w": jnp.ones((4, 4))}, initializers={"w": he})
    with pytest.raises(UnsupportedOperation, match="second time"):
        from_flax(tied, X, **kw)


def test_unknown_and_nonzero_mean_initializers():
    def f(params, x):
        return x @ params["w"]

    with pytest.raises(ValueError, match="cannot read the variance"):
        from_flax(f, X, params={"w": jnp.ones((4, 2))}, initializers={"w": lambda k, s, d: 0})
    with pytest.raises(UnsupportedOperation, match="mean 0.5"):
        from_flax(f, X, params={"w": jnp.ones((4, 2))},
                  initializers={"w": jax.nn.initializers.uniform(1.0)})
    with pytest.raises(TypeError, match="params="):
        from_flax(f, X)


def test_mup_has_no_kernel_and_bad_arguments():
    class Tiny(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2)(x)

    _, _, kernel_fn = from_flax(Tiny(), X, parameterization="mup")
    with pytest.raises(NotImplementedError, match="mup"):
        kernel_fn(X)
    with pytest.raises(ValueError, match="parameterization"):
        from_flax(Tiny(), X, parameterization="nkt")
    with pytest.raises(ValueError, match="example_input"):
        from_flax(Tiny(), jnp.ones(4))
    with pytest.raises(TypeError, match="module"):
        from_flax(3, X)


class WithDropout(nn.Module):
    @nn.compact
    def __call__(self, x, deterministic):
        return nn.Dense(1)(nn.Dropout(0.5)(nn.relu(nn.Dense(8)(x)), deterministic=deterministic))


def test_deterministic_dropout_is_traced_through():
    # (stochastic dropout: tests/test_from_flax_dropout.py)
    init_fn, apply_fn, _ = from_flax(WithDropout(), X, deterministic=True)
    _, params = init_fn(jax.random.PRNGKey(0), X.shape)
    assert apply_fn(params, X).shape == (3, 1)
