"""Bad input to the empirical kernels raises a clear error before any Jacobian is formed:
non-finite model outputs, vmap_axes that do not match the data, axes out of range, and (see
test_empirical_memory.py) explicit implementations that cannot fit in memory."""

import jax
import jax.numpy as jnp
import pytest

from infwidth.empirical import empirical_kernel_fn, empirical_nngp_fn, empirical_ntk_fn


def _f(p, x):
    return jnp.log(x @ p)  # NaN where x @ p < 0


P = jnp.ones((3, 2))


@pytest.mark.parametrize("impl", [0, 1, 2, 3])
def test_nan_output_raises_before_the_jacobians(impl, monkeypatch):
    import infwidth.empirical.ntk as ntk

    def never(*a, **k):
        raise AssertionError("a Jacobian was formed")

    for name in ntk._IMPLS:
        monkeypatch.setitem(ntk._IMPLS, name, never)
    x = jnp.array([[1.0, 2.0, 3.0], [-1.0, -2.0, -3.0]])
    with pytest.raises(ValueError, match=r"f\(params, x1\) has 2 non-finite"):
        empirical_ntk_fn(_f, implementation=impl)(x, None, P)
    good = jnp.ones((2, 3))
    with pytest.raises(ValueError, match=r"f\(params, x2\) has 2 non-finite"):
        empirical_ntk_fn(_f, vmap_axes=0, implementation=impl)(good, x, P)


def test_nan_output_raises_in_nngp_and_kernel_fn():
    x = -jnp.ones((2, 3))
    with pytest.raises(ValueError, match="non-finite"):
        empirical_nngp_fn(_f)(x, None, P)
    with pytest.raises(ValueError, match="non-finite"):
        empirical_kernel_fn(_f)(x, None, "ntk", P)


def test_finite_outputs_pass_under_jit():
    x = jnp.ones((2, 3))
    k = jax.jit(lambda a: empirical_ntk_fn(_f)(a, None, P))(x)
    assert jnp.all(jnp.isfinite(k))


def test_mismatched_vmap_axes():
    x = jnp.ones((4, 3))
    g = lambda p, a: (a @ p).T  # outputs (2, 4): the batch is axis 1 of the outputs
    with pytest.raises(ValueError, match=r"batch axes do not agree in size \(x: 4, f\(x\): 2\)"):
        empirical_ntk_fn(g, vmap_axes=0)(x, None, P)
    with pytest.raises(ValueError, match="has no axis 3"):
        empirical_ntk_fn(g, vmap_axes=(3, 1, {}))(x, None, P)
    h = lambda p, a, mask: (a @ p) * mask
    with pytest.raises(ValueError, match="mask: 1"):
        empirical_ntk_fn(h, vmap_axes=(0, 0, {"mask": 0}))(x, None, P, mask=jnp.ones((1, 2)))
    with pytest.raises(ValueError, match="'mask' has a batch axis but was not passed"):
        empirical_ntk_fn(g, vmap_axes=(0, 1, {"mask": 0}))(x, None, P)
    k = empirical_ntk_fn(g, vmap_axes=(0, 1, {}), trace_axes=(0,))(x, None, P)
    assert k.shape == (4, 4)


def test_trace_axes_out_of_range():
    with pytest.raises(ValueError, match=r"trace_axes=\(2,\)\): axis 2 is out of range"):
        empirical_ntk_fn(lambda p, a: a @ p, trace_axes=(2,))(jnp.ones((2, 3)), None, P)


def _mlp():
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    p = [jax.random.normal(k1, (50, 200)), jax.random.normal(k2, (200, 10))]
    return (lambda p, x: jax.nn.relu(x @ p[0]) @ p[1]), p, jnp.ones((6, 50))


def test_explicit_implementation_that_does_not_fit_raises_before_the_work():
    from infwidth.empirical import EmpiricalMemoryError, memory_limit

    f, p, x = _mlp()
    # Jacobian contraction holds 2 x (60 outputs x 12000 parameters) floats: about 5.8 MB
    try:
        memory_limit(2**20)
        with pytest.raises(EmpiricalMemoryError, match=r"jacobian_contraction.*exceeds the "
                           r"memory limit.*60 outputs.*12000 parameters.*vmap_axes=0"):
            empirical_ntk_fn(f, trace_axes=(), implementation=1)(x, None, p)
        # auto picks one that fits (NTK-vector products hold one block of rows) and is right
        k_auto = empirical_ntk_fn(f, trace_axes=(), implementation=0)(x, None, p)
        memory_limit(2**10)
        with pytest.raises(EmpiricalMemoryError, match="implementation='auto'"):
            empirical_ntk_fn(f, trace_axes=(), implementation=0)(x, None, p)
    finally:
        memory_limit(reset=True)
    k1 = empirical_ntk_fn(f, trace_axes=(), implementation=1)(x, None, p)
    assert float(jnp.max(jnp.abs(k_auto - k1))) <= 1e-4 * float(jnp.max(jnp.abs(k1)))


def test_auto_never_picks_what_does_not_fit(monkeypatch):
    from infwidth.empirical import _costs, memory_limit

    f, p, x = _mlp()
    picked = []
    real = _costs.choose
    monkeypatch.setattr("infwidth.empirical.ntk.choose",
                        lambda *a, **k: picked.append(real(*a, **k)) or picked[-1])
    s = _costs._Shapes(f, x, None, p, None, *(jax.eval_shape(f, p, x),) * 2,
                       [_axes_none()], {})
    mem = _costs.estimate_memory(s, 2**24, 2**25, 2**26)
    try:
        for limit in sorted(mem.values()):
            memory_limit(int(limit))
            empirical_ntk_fn(f, trace_axes=(), implementation=0)(x, None, p)
            assert mem[picked[-1]] <= limit
    finally:
        memory_limit(reset=True)


def _axes_none():
    from infwidth.empirical._axes import resolve_axes

    return resolve_axes((), (), (6, 10), (6, 10), "test")


def test_structured_fallbacks_lists_the_leaves_without_a_rule():
    from infwidth.empirical import structured_fallbacks

    def f(p, x):
        h = jnp.tanh(x @ p["w1"] + p["b1"])
        return (h @ p["w2"]) @ p["w2"].T @ p["w3"]  # w2 used twice: no structured rule

    p = {"w1": jnp.ones((3, 4)), "b1": jnp.ones(4), "w2": jnp.ones((4, 5)),
         "w3": jnp.ones((4, 2))}
    report = structured_fallbacks(f, p, jnp.ones((6, 3)))
    assert [r.path for r in report] == ["['w2']", "['b1']"]  # largest Jacobian first
    assert report[0].jacobian_entries == 12 * 20 and report[0].uses == ("dot_general", "transpose")
    assert report.structured == 2 and report.total_entries == 12 * 24
    per_example = structured_fallbacks(f, p, jnp.ones((6, 3)), vmap_axes=0)
    assert per_example[0].jacobian_entries == 2 * 20
