"""`infwidth.batch`: tiled / sharded results agree with the plain kernel_fn, memory is bounded by
the tile size, bad input is refused.

Run with ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (as CI does) to spread tiles
over 4 devices; everything also passes on one device. Sizes are chosen so that N is divisible
neither by the tile size nor by the number of devices.
"""

import collections
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import rel_err, tol, x64

import infwidth
from infwidth import stax

N1, N2, TILE = 13, 6, 4
N_DEV = jax.device_count()

# Erf networks are smooth, so different tilings agree to float64 round-off. The ReLU NTK is
# not: its derivative map has a square-root singularity at correlation 1, so the diagonal moves
# by ~1e-8 in float64 whenever the batch (hence the rounding of x @ x.T) changes, even between
# two plain calls; ReLU networks are compared at tol('nt').
ERF_NET = stax.serial(stax.Dense(64, W_std=1.3, b_std=0.2), stax.Erf(),
                      stax.Dense(64, W_std=1.1, b_std=0.1), stax.Erf(), stax.Dense(1))
# A dense layer at every position of an (N, H, W, C) input: 1x1 convolutions.
RELU_NET = stax.serial(stax.Conv(64, (1, 1), W_std=1.5, b_std=0.05), stax.Relu(),
                       stax.Conv(1, (1, 1), W_std=1.5, b_std=0.05))


def _inputs(shape=(5,), seed=0):
    rng = np.random.RandomState(seed)
    return rng.randn(N1, *shape), rng.randn(N2, *shape)


def _assert_same(out, ref, rtol, on_host=True):
    """Same pytree (Kernel static fields included), same shapes, values within rtol."""
    assert jax.tree_util.tree_structure(out) == jax.tree_util.tree_structure(ref)
    for a, b in zip(jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(ref)):
        if not isinstance(b, (jax.Array, np.ndarray)):  # static fields: shape1, x1_is_x2
            assert a == b
            continue
        if on_host:  # the default (store_on_device=True, as neural-tangents): jax.Arrays
            assert isinstance(a, jax.Array), type(a)
        assert np.shape(a) == np.shape(b)
        assert rel_err(a, b) < rtol, (np.shape(a), rel_err(a, b))


@pytest.mark.parametrize("x2_given", [False, True])
@pytest.mark.parametrize("get", [None, "ntk", ("nngp", "cov1", "cov2", "shape1", "x1_is_x2")])
def test_dense_matches_plain_float64(x2_given, get):
    with x64():
        x1, x2 = _inputs()
        x2 = x2 if x2_given else None
        kernel_fn = ERF_NET.kernel_fn
        ref = kernel_fn(x1, x2, get=get)
        out = infwidth.batch(kernel_fn, TILE)(x1, x2, get=get)
        _assert_same(out, ref, tol("exact", np.float64))
        if get is None:  # every field of the Kernel, including the batch-size dependent ones
            assert out.shape1 == (N1, 1) and out.cov1.shape == (N1,)
            assert (out.cov2 is None) == (not x2_given) and out.x1_is_x2 == (not x2_given)
            if not x2_given:  # x2=x1 (the same array) means x2=None, as for kernel_fn
                _assert_same(infwidth.batch(kernel_fn, TILE)(x1, x1), ref,
                             tol("exact", np.float64))


def test_single_device_and_sharded_agree():
    """One device (nt's device_count=0), all devices, and a user-built mesh give one answer."""
    with x64():
        x1, x2 = _inputs()
        kernel_fn = ERF_NET.kernel_fn
        mesh = jax.make_mesh((N_DEV,), ("tiles",))
        outs = [infwidth.batch(kernel_fn, TILE, device_count=0)(x1, x2, get="ntk"),
                infwidth.batch(kernel_fn, TILE)(x1, x2, get="ntk"),
                infwidth.batch(kernel_fn, TILE, mesh=mesh)(x1, x2, get="ntk"),
                infwidth.batch(kernel_fn, 0)(x1, x2, get="ntk")]  # nt: 0 = rows over devices
        ref = kernel_fn(x1, x2, get="ntk")
        for out in outs:
            _assert_same(out, ref, tol("exact", np.float64))


@pytest.mark.parametrize("diagonal_spatial,x2_given", [(False, False), (True, False),
                                                      (False, True)])
def test_spatial_kernels(diagonal_spatial, x2_given):
    """Inputs (N, H, W, C): nngp (N1, N2, H, H', W, W') or (N1, N2, H, W); the mirrored tiles
    below the diagonal must swap H<->H' and W<->W' too (H = W, so a wrong swap shows)."""
    with x64():
        x1, x2 = _inputs((3, 3, 2), seed=1)
        x2 = x2 if x2_given else None
        kwargs = dict(get=None, diagonal_spatial=diagonal_spatial)
        ref = RELU_NET.kernel_fn(x1, x2, **kwargs)
        batched = infwidth.batch(RELU_NET.kernel_fn, TILE)
        out = batched(x1, x2, **kwargs)
        _assert_same(out, ref, tol("nt", np.float64))
        assert batched.stats["mirrored"] == (not x2_given)


@pytest.mark.parametrize("x2_given", [False, True])
def test_full_batch_covariances(x2_given):
    """diagonal_batch=False: cov1 is (N1, N1), cov2 (N2, N2); batch() computes them whole."""
    with x64():
        x1, x2 = _inputs()
        x2 = x2 if x2_given else None
        ref = ERF_NET.kernel_fn(x1, x2, diagonal_batch=False)
        out = infwidth.batch(ERF_NET.kernel_fn, TILE)(x1, x2, diagonal_batch=False)
        _assert_same(out, ref, tol("exact", np.float64))
        assert out.cov1.shape == (N1, N1)


def test_conv_kernels():
    """Convolutional kernels, once stax.Conv exists (issue 4)."""
    if not hasattr(stax, "Conv"):
        pytest.skip("stax.Conv is not available yet")
    net = stax.serial(stax.Conv(8, (2, 2), padding="SAME"), stax.Relu(),
                      stax.Conv(8, (2, 2), padding="CIRCULAR"))
    with x64():
        x1, _ = _inputs((3, 3, 1), seed=2)
        ref = net.kernel_fn(x1, None, get=("nngp", "ntk"))
        batched = infwidth.batch(net.kernel_fn, TILE)
        out = batched(x1, None, get=("nngp", "ntk"))
        _assert_same(out, ref, tol("nt", np.float64))
        assert out.ntk.shape == (N1, N1, 3, 3, 3, 3) and batched.stats["mirrored"]


def test_graph_kernels_with_per_input_patterns():
    """kernel_fn(x1, x2, pattern=(A1, A2)): keyword arguments given per input (nt's convention)
    are cut into tiles with the inputs."""
    if not hasattr(stax, "Aggregate"):
        pytest.skip("stax.Aggregate is not available")
    net = stax.serial(stax.Dense(8), stax.Aggregate(), stax.Relu(), stax.Dense(8),
                      stax.Aggregate())
    rng = np.random.RandomState(3)
    with x64():
        x1, x2 = _inputs((4, 3), seed=3)
        a1, a2 = ((rng.rand(n, 4, 4) < 0.4).astype(float) for n in (N1, N2))
        for x, pattern in ((None, (a1, None)), (x2, (a1, a2))):
            ref = net.kernel_fn(x1, x, pattern=pattern)
            out = infwidth.batch(net.kernel_fn, TILE)(x1, x, pattern=pattern)
            _assert_same(out, ref, tol("exact", np.float64))


# ----------------------------------------------------------------------------------------------
# empirical and Monte Carlo kernel functions (neural-tangents' calling conventions)

_Emp = collections.namedtuple("Kernel", ["nngp", "ntk"])


def _empirical_kernel_fn(apply_fn):
    """kernel_fn(x1, x2, get, params) as nt.empirical_kernel_fn(..., trace_axes=()): outputs of
    3 channels give kernels of shape (N1, N2, 3, 3). Written with plain jax.jacrev."""

    def kernel_fn(x1, x2, get, params):
        x2 = x1 if x2 is None else x2
        f1, f2 = apply_fn(params, x1), apply_fn(params, x2)
        nngp = jnp.einsum("ia,jb->ijab", f1, f2)
        j1, j2 = (jax.jacrev(apply_fn)(params, x) for x in (x1, x2))
        ntk = sum(jnp.einsum("ia...,jb...->ijab", a, b)
                  for a, b in zip(jax.tree_util.tree_leaves(j1), jax.tree_util.tree_leaves(j2)))
        out = _Emp(nngp, ntk)
        return out if get is None else (getattr(out, get) if isinstance(get, str)
                                        else tuple(getattr(out, g) for g in get))

    return kernel_fn


def test_empirical_kernel_fn():
    with x64():
        init_fn, apply_fn, _ = stax.serial(stax.Dense(16), stax.Erf(), stax.Dense(3))
        _, params = init_fn(jax.random.PRNGKey(0), (-1, 5))
        kernel_fn = _empirical_kernel_fn(apply_fn)
        x1, _ = _inputs()
        ref = kernel_fn(x1, None, None, params)
        batched = infwidth.batch(kernel_fn, TILE)
        out = batched(x1, None, None, params)
        _assert_same(out, ref, tol("exact", np.float64))
        assert out.ntk.shape == (N1, N1, 3, 3)
        # the (3, 3) output axes are mirrored too: the NNGP is not symmetric in them alone
        assert rel_err(out.nngp, np.swapaxes(out.nngp, 2, 3)) > 1e-3
        assert batched.stats["mirrored"]


def test_asymmetric_kernel_is_not_mirrored():
    """K(x, x') = f(x) g(x')^T is not symmetric: the first diagonal tile shows it, and the
    tiles below the diagonal are then computed rather than mirrored."""

    def kernel_fn(x1, x2=None):
        x2 = x1 if x2 is None else x2
        return jnp.einsum("ia,jb->ijab", jnp.sin(x1[:, :2]), jnp.cos(x2[:, 1:3]))

    with x64():
        x1, _ = _inputs()
        batched = infwidth.batch(kernel_fn, TILE)
        _assert_same(batched(x1), kernel_fn(x1), tol("exact", np.float64))
        assert not batched.stats["mirrored"] and batched.stats["tiles"] == 16


def test_empirical_and_monte_carlo_kernel_fns_of_issue6():
    """The library's own empirical and Monte Carlo kernel functions (infwidth.empirical)."""
    empirical = pytest.importorskip("infwidth.empirical")
    init_fn, apply_fn, _ = stax.serial(stax.Dense(16), stax.Relu(), stax.Dense(2))
    with x64():
        _, params = init_fn(jax.random.PRNGKey(0), (-1, 5))
        emp_fn = empirical.empirical_kernel_fn(apply_fn, trace_axes=())
        mc_fn = empirical.monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.PRNGKey(1), 2)
        x1, x2 = _inputs()
        ref = emp_fn(x1, None, None, params)
        out = infwidth.batch(emp_fn, TILE)(x1, None, None, params)
        _assert_same(out, ref, tol("exact", np.float64))
        ref = mc_fn(x1, x2, ("nngp", "ntk"))
        out = infwidth.batch(mc_fn, TILE)(x1, x2, ("nngp", "ntk"))
        _assert_same(out, ref, tol("exact", np.float64))


def test_monte_carlo_style_kernel_fn():
    """A Monte Carlo kernel_fn(x1, x2, get, key=...): the key is an array argument, passed to
    every tile, so every tile averages over the same networks."""

    def mc_kernel_fn(x1, x2=None, get="nngp", key=None):
        x2 = x1 if x2 is None else x2
        w = jax.random.normal(key, (4, x1.shape[1], 32))  # 4 networks of width 32
        f1, f2 = jax.nn.relu(x1 @ w), jax.nn.relu(x2 @ w)
        return jnp.einsum("sia,sja->ij", f1, f2) / (4 * 32)

    with x64():
        x1, _ = _inputs()
        key = jax.random.PRNGKey(3)
        ref = mc_kernel_fn(x1, key=key)
        out = infwidth.batch(mc_kernel_fn, TILE)(x1, key=key)
        _assert_same(out, ref, tol("exact", np.float64))


def test_pytree_inputs_and_outputs():
    """Inputs may be pytrees with a common batch axis; outputs may be dicts mixing (N1, N2),
    (N1,) and (N2,) arrays."""

    def kernel_fn(x1, x2=None):
        x2 = x1 if x2 is None else x2
        k = x1["a"] @ x2["a"].T + jnp.tanh(x1["b"][:, None] * x2["b"][None, :])
        return {"k": k, "d1": jnp.sum(x1["a"] ** 2, 1), "d2": x2["b"] * 2.0}

    with x64():
        rng = np.random.RandomState(4)
        x1 = {"a": rng.randn(N1, 3), "b": rng.randn(N1)}
        x2 = {"a": rng.randn(N2, 3), "b": rng.randn(N2)}
        for x in (None, x2):
            _assert_same(infwidth.batch(kernel_fn, TILE)(x1, x), kernel_fn(x1, x),
                         tol("exact", np.float64))


# ----------------------------------------------------------------------------------------------
# results kept on the devices, progress, memory


@pytest.mark.parametrize("x2_given", [False, True])
def test_store_on_devices(x2_given):
    with x64():
        x1, x2 = _inputs()
        x2 = x2 if x2_given else None
        ref = ERF_NET.kernel_fn(x1, x2, get=("nngp", "ntk", "cov1"))
        out = infwidth.batch(ERF_NET.kernel_fn, TILE, store_on_host=False)(
            x1, x2, get=("nngp", "ntk", "cov1"))
        assert all(isinstance(a, jax.Array) for a in out)
        _assert_same(out, ref, tol("exact", np.float64), on_host=False)
        # nt's spelling of the same option
        out = infwidth.batch(ERF_NET.kernel_fn, TILE, -1, True)(x1, x2, get="ntk")
        assert isinstance(out, jax.Array)


def test_rows_sharded_on_devices():
    x = np.random.RandomState(5).randn(4 * N_DEV + 4, 5)  # divisible by the device count
    mesh = jax.make_mesh((N_DEV,), ("tiles",))
    out = infwidth.batch(ERF_NET.kernel_fn, 3, mesh=mesh, store_on_host=False)(x, get="nngp")
    assert len(out.sharding.device_set) == N_DEV
    np.testing.assert_allclose(out, ERF_NET.kernel_fn(x, get="nngp"), rtol=tol("exact"),
                               atol=tol("exact"))


def test_progress_bar_and_time_estimate(capsys):
    pytest.importorskip("tqdm")
    x = np.random.RandomState(6).randn(40, 5)
    batched = infwidth.batch(ERF_NET.kernel_fn, 4, progress=True)
    batched(x, get="nngp")
    err = capsys.readouterr().err
    stats = batched.stats
    assert "kernel tiles" in err and f"{stats['tiles']}/{stats['tiles']}" in err
    assert stats["tiles"] == 10 * 11 // 2 and "total ~" in err
    assert 0 < stats["estimated_total_s"] < 20 * stats["total_s"]


_MEMORY_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import infwidth
    from infwidth import stax

    def vm(field):
        for line in open('/proc/self/status'):
            if line.startswith(field):
                return int(line.split()[1]) * 1024

    layers = []
    for _ in range(10):
        layers += [stax.Dense(512, W_std=1.5, b_std=0.05), stax.Relu()]
    kernel_fn = stax.serial(*layers, stax.Dense(1, W_std=1.5, b_std=0.05)).kernel_fn
    n, tile = int(sys.argv[1]), int(sys.argv[2])
    x = np.random.RandomState(0).randn(n, 64).astype(np.float32)
    batched = infwidth.batch(kernel_fn, tile)
    small = batched(x[:tile + 1], get=('nngp', 'ntk'))  # compiles the tile function
    with open('/proc/self/clear_refs', 'w') as f:  # resets the peak (VmHWM) to VmRSS
        f.write('5')
    base = vm('VmRSS')
    out = batched(x, get=('nngp', 'ntk'))
    extra = vm('VmHWM') - base  # before the checks below, which need memory of their own
    ok = bool(np.isfinite(out.ntk).all()) and np.allclose(out.ntk, out.ntk.T, rtol=1e-5)
    print(json.dumps({'extra': extra, 'ok': ok, 'devices': batched.stats['devices'],
                      'corner': out.nngp[:2, :2].tolist()}))
""")


def test_peak_memory_set_by_tile_size(tmp_path):
    """A depth-10 FC kernel of N=3000 in tiles of 128: the process grows by the output (two
    N x N float32 arrays) plus a working set bounded by the tile size, not by N. (The plain
    call needs about 2.5x the output here; N=20000 is in benchmarks/batching.py.)"""
    if not os.path.exists("/proc/self/clear_refs"):
        pytest.skip("needs Linux /proc to measure the peak memory")
    n, tile = 3000, 128
    script = tmp_path / "memory.py"
    script.write_text(_MEMORY_SCRIPT)
    env = dict(os.environ, JAX_ENABLE_X64="0")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, str(script), str(n), str(tile)], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json

    result = json.loads(proc.stdout.strip().splitlines()[-1])
    output_bytes = 2 * n * n * 4
    # per device and tile: inputs, outputs and the layer-by-layer working arrays; two groups of
    # tiles are in flight (one computing, one being copied out).
    tile_bytes = result["devices"] * tile * tile * 4
    bound = output_bytes + 2 * 64 * tile_bytes + (16 << 20)
    print(f"peak growth {result['extra'] / 2**20:.0f} MiB, output {output_bytes / 2**20:.0f} "
          f"MiB, bound {bound / 2**20:.0f} MiB")
    assert result["ok"]
    assert result["extra"] < bound
    with x64():  # the corner agrees with a plain float64 evaluation of the same inputs
        x = np.random.RandomState(0).randn(n, 64).astype(np.float32)[:2].astype(np.float64)
        layers = []
        for _ in range(10):
            layers += [stax.Dense(512, W_std=1.5, b_std=0.05), stax.Relu()]
        kfn = stax.serial(*layers, stax.Dense(1, W_std=1.5, b_std=0.05)).kernel_fn
        assert rel_err(result["corner"], kfn(x, get="nngp")) < tol("nt", np.float32)


# ----------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(batch_size=-1), ValueError, r"batch\(batch_size=-1\): batch_size must be a positive"),
    (dict(batch_size=2.5), ValueError, r"batch_size must be a positive integer"),
    (dict(batch_size=True), ValueError, r"batch_size must be a positive integer"),
    (dict(batch_size=4, device_count=-2), ValueError, r"device_count must be -1"),
    (dict(batch_size=4, devices=[]), ValueError, r"devices must be a non-empty list"),
    (dict(batch_size=4, devices=["cpu"]), ValueError, r"devices must be a non-empty list"),
    (dict(batch_size=4, mesh="tiles"), TypeError, r"mesh must be a jax.sharding.Mesh"),
    (dict(batch_size=4, mesh=jax.make_mesh((1,), ("batch",))), ValueError,
     r"the mesh needs an axis named 'tiles'"),
    (dict(batch_size=4, device_count=1, mesh=jax.make_mesh((1,), ("tiles",))), ValueError,
     r"at most one of devices=, mesh= and device_count="),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        infwidth.batch(ERF_NET.kernel_fn, **kwargs)


def test_mesh_with_extra_axis():
    if N_DEV < 2:
        pytest.skip("needs 2 devices")
    mesh = jax.make_mesh((N_DEV // 2, 2), ("tiles", "model"))
    with pytest.raises(ValueError, match=r"axes \{'model': 2\} would repeat the same work"):
        infwidth.batch(ERF_NET.kernel_fn, 4, mesh=mesh)


def test_bad_calls():
    batched = infwidth.batch(ERF_NET.kernel_fn, 4)
    x = np.ones((5, 3))
    with pytest.raises(ValueError, match=r"device_count=1000\): only"):
        infwidth.batch(ERF_NET.kernel_fn, 4, device_count=1000)(x)
    with pytest.raises(ValueError, match="the same, non-zero batch size"):
        infwidth.batch(lambda a, b=None: a["u"], 4)({"u": x, "v": np.ones((4, 3))})
    with pytest.raises(ValueError, match="leading batch axis"):
        batched(3.0)
    with pytest.raises(ValueError, match=r"needs outputs laid out \(N1, N2, ...\)"):
        infwidth.batch(lambda a, b=None: jnp.concatenate([a, a if b is None else b]), 4)(x)
    with pytest.raises(TypeError, match="kernel_fn must be a function"):
        infwidth.batch("kernel", 4)


def test_multiprocess_example():
    """examples/multiprocess_batch.py: 2 processes x 2 CPU devices under jax.distributed, each
    receiving the whole kernel and checking it against the plain kernel_fn."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, JAX_ENABLE_X64="0")
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, os.path.join(root, "examples", "multiprocess_batch.py"),
                           "--n", "45", "--batch-size", "8"], capture_output=True, text=True,
                          env=env, timeout=400)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("process")]
    assert len(lines) == 2 and all("2 local of 4 devices" in line for line in lines)
