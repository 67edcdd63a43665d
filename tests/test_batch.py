"""``restore_batch``: one kernel per image, chunked, vmapped or lax.mapped, sharded over devices.

Every batched result is compared with the single-image library calls (same method, same
parameters), on random images with random motion kernels and a different parameter per image,
so that a kernel, a parameter or an output routed to the wrong image fails the test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxrestore
from jaxrestore import batch, kernels
from jaxrestore.models import drunet
from jaxrestore.noise import estimate_sigma
from jaxrestore.operators import Blur
from jaxrestore.presets import var_params_for_sigma
from jaxrestore.protocols.suppa import PNP_PARAMS
from jaxrestore.solvers import pnp_admm, projected_gradient, run, wiener

TINY = drunet.DRUNetConfig(channels=(4, 8), blocks=1)
ATOL = 2e-5


def make_problem(sizes, seed=0, kernel_size=7, sigma=0.02):
    """Kernels (float64 summing to 1), observations ``A_i x_i + sigma n`` and the operators."""
    rng = np.random.default_rng(seed)
    keys = jax.random.split(jax.random.key(seed), len(sizes))
    ks = [np.asarray(kernels.random_motion(k, kernel_size), np.float64) for k in keys]
    ks = [k / k.sum() for k in ks]
    ys = []
    for k, s in zip(ks, sizes):
        x = rng.uniform(0.1, 0.9, (s, s, 3)).astype(np.float32)
        y = np.asarray(Blur.from_kernel(k, (s, s))(jnp.asarray(x))) + sigma * rng.standard_normal((s, s, 3))
        ys.append(y.astype(np.float32))
    return ks, ys


@pytest.fixture(scope="module")
def problem():
    return make_problem([32] * 5)


def make_denoiser_model(seed: int = 3) -> drunet.DRUNet:
    """A tiny DRUNet with seeded random weights, built abstractly: ``drunet.create`` compiles its
    initialiser, which takes seconds even for this size."""
    gd, state = nnx.split(nnx.eval_shape(lambda: drunet.DRUNet(TINY, rngs=nnx.Rngs(0))))
    rng = np.random.default_rng(seed)
    return nnx.merge(gd, jax.tree.map(lambda s: jnp.asarray(0.1 * rng.standard_normal(s.shape), s.dtype), state))


def make_denoiser():
    return drunet.as_denoiser(make_denoiser_model())


@pytest.fixture(scope="module")
def tiny_denoiser():
    return make_denoiser()


_single_var = jax.jit(lambda op, y, lam, delta, it: run(projected_gradient(op, lam, delta), y, num_iters=it).x,
                      static_argnums=4)


def _var_ref(k, y, lam, delta, iterations):
    return np.asarray(_single_var(Blur.from_kernel(k, y.shape), jnp.asarray(y), lam, delta, iterations))


def test_public_api():
    assert jaxrestore.restore_batch is batch.restore_batch


@pytest.mark.parametrize("strategy", ["vmap", "chunked", "map"])
def test_var_equals_single_calls_with_padding(problem, strategy):
    ks, ys = problem
    lams = [1e-4, 3e-4, 5e-5, 2e-4, 1e-3]  # one per image: a mix-up of images and parameters shows
    before = batch._restore_chunk._cache_size()
    out = batch.restore_batch("var", np.stack(ys), np.stack(ks), lam=lams, delta=0.02, iterations=17, chunk_size=2,
                              strategy=strategy)
    # 5 images in chunks of 2: the last chunk is padded, so one compiled chunk shape
    assert batch._restore_chunk._cache_size() - before == 1
    assert isinstance(out, np.ndarray) and out.shape == (5, 32, 32, 3)
    for i in range(5):
        np.testing.assert_allclose(out[i], _var_ref(ks[i], ys[i], lams[i], 0.02, 17), atol=ATOL)
    assert np.abs(out[0] - out[1]).max() > 0.05


def test_var_defaults_follow_the_noise_level(problem):
    ks, ys = problem
    sigmas = [0.01, 0.02, 0.03, 0.015, 0.04]
    out = batch.restore_batch("var", ys[:3] + ys[3:], ks, sigma=sigmas, iterations=9, chunk_size=4)
    assert isinstance(out, list) and len(out) == 5
    for i in range(5):
        lam, delta, _ = var_params_for_sigma(sigmas[i])
        np.testing.assert_allclose(out[i], _var_ref(ks[i], ys[i], lam, delta, 9), atol=ATOL)
    # the iteration count comes from the same rule when not given
    res = list(batch.iter_restore_batch("var", ys[:1], ks[:1], sigma=0.02, lam=1e-4, delta=0.02))
    assert res[0][2]["iterations"] == var_params_for_sigma(0.02)[2]


@pytest.mark.parametrize("strategy", ["vmap", "map"])
def test_wiener_with_estimated_noise_equals_single_calls(problem, strategy):
    ks, ys = problem
    out = batch.restore_batch("wiener", ys, ks, chunk_size=3, strategy=strategy, convention="correlation")
    for k, y, x in zip(ks, ys, out):
        lam = batch.WIENER_LAM_SCALE * float(estimate_sigma(jnp.asarray(y))) ** 2
        ref = np.clip(np.asarray(wiener(Blur.from_kernel(k, y.shape, "correlation"), jnp.asarray(y), lam)), 0, 1)
        np.testing.assert_allclose(x, ref, atol=ATOL)
    # correlation is the flipped kernel's convolution, so the convention reached the operators
    assert np.abs(np.stack(out) - np.stack(batch.restore_batch("wiener", ys, ks, chunk_size=3))).max() > 1e-3


@pytest.mark.parametrize("strategy", ["vmap", "map"])
def test_pnp_admm_equals_single_calls(problem, tiny_denoiser, strategy):
    ks, ys = problem
    fn, net = tiny_denoiser
    sigmas = [0.01, 0.02, 0.03, 0.05, 0.02]
    out = batch.restore_batch("pnp-admm", ys, ks, sigma=sigmas, iterations=3, denoiser=tiny_denoiser, chunk_size=2,
                              strategy=strategy)
    p = PNP_PARAMS["deblur"]
    for k, y, s, x in zip(ks, ys, sigmas, out):
        ref = pnp_admm(Blur.from_kernel(k, y.shape), fn, net, jnp.asarray(y), noise_sigma=s, num_iters=3,
                       sigma_max=p["sigma_max"], sigma_min=p["sigma_min"], lam=p["lam"])
        np.testing.assert_allclose(x, np.clip(np.asarray(ref), 0, 1), atol=ATOL)


def _wiener_ref(k, y, lam):
    return np.clip(np.asarray(wiener(Blur.from_kernel(k, y.shape), jnp.asarray(y), lam)), 0, 1)


def test_mixed_sizes_are_grouped_and_returned_in_input_order():
    sizes = [32, 24, 32, 40, 24, 32]
    ks, ys = make_problem(sizes, seed=1)
    ks[1] = np.asarray(kernels.gaussian(5, 1.0))  # kernels of different sizes in one group are fine
    lams = list(np.geomspace(1e-3, 1e-1, len(sizes)))
    seen = []
    for i, x, info in batch.iter_restore_batch("wiener", ys, ks, lam=lams, chunk_size=2):
        seen.append(i)
        assert info["lam"] == pytest.approx(lams[i])
        np.testing.assert_allclose(x, _wiener_ref(ks[i], ys[i], lams[i]), atol=ATOL)
    assert seen == [0, 2, 5, 1, 4, 3]  # grouped by size in order of first appearance, input order inside
    out = batch.restore_batch("wiener", ys, ks, lam=lams, chunk_size=2, strategy="vmap")
    assert [x.shape[0] for x in out] == sizes  # back in input order
    for i in range(len(sizes)):
        np.testing.assert_allclose(out[i], _wiener_ref(ks[i], ys[i], lams[i]), atol=ATOL)


def test_normalize_rescales_kernels(problem):
    ks, ys = problem
    scaled = [3.0 * k for k in ks[:2]]
    with pytest.raises(ValueError, match=r"ys\[0\] sums to 3, not 1"):
        batch.restore_batch("wiener", ys[:2], scaled, sigma=0.02)
    got = batch.restore_batch("wiener", ys[:2], scaled, sigma=0.02, normalize=True)
    want = batch.restore_batch("wiener", ys[:2], ks[:2], sigma=0.02)
    np.testing.assert_allclose(np.stack(got), np.stack(want), atol=1e-6)


def _bad(ks, ys):
    k, y = ks[0], ys[0]
    nan_y = y.copy()
    nan_y[3, 4, 1] = np.nan
    nan_k = k.copy()
    nan_k[1, 1] = np.inf
    neg_k = k.copy()
    neg_k[0, 0] = -0.1
    return [
        (dict(method="tv"), "unknown method 'tv'"),
        (dict(strategy="pmap"), "unknown strategy 'pmap'"),
        (dict(ys=y, kernels=[k]), "got one image of shape"),
        (dict(ys=[y[..., 0]]), r"ys\[0\] must be an \(H, W, C\) image"),
        (dict(ys=[y, y], kernels=[k]), "got 2 images but 1 kernels"),
        (dict(ys=[nan_y]), r"ys\[0\] contains NaN"),
        (dict(ys=[(y * 255).astype(np.uint8)]), "floating-point image"),
        (dict(kernels=[nan_k]), "NaN or infinite"),
        (dict(kernels=[neg_k]), "negative entries"),
        (dict(kernels=[k[None]]), "must be a 2-D array"),
        (dict(kernels=[np.full((40, 3), 1 / 120)]), "larger than the image"),
        (dict(kernels=[0.5 * k]), "sums to 0.5, not 1"),
        (dict(ys=[], kernels=[]), "no images"),
        (dict(chunk_size=0), "chunk_size must be an integer >= 1"),
        (dict(sigma=-0.1), "sigma must be finite and > 0"),
        (dict(lam=[1e-4, 1e-4]), "one value per image"),
        (dict(method="wiener", delta=0.1), "does not use it"),
        (dict(method="wiener", iterations=3), "takes no iterations"),
        (dict(convention="conv"), "convention must be"),
        (dict(x8=True), "x8"),
    ]


def test_errors(problem):
    ks, ys = problem
    for change, message in _bad(ks, ys):
        kw = dict(method="var", ys=ys[:1], kernels=ks[:1], sigma=0.02, iterations=2) | change
        with pytest.raises(ValueError, match=message):
            batch.restore_batch(kw.pop("method"), kw.pop("ys"), kw.pop("kernels"), **kw)


def test_iter_restore_batch_checks_at_the_call(problem):
    ks, ys = problem
    with pytest.raises(ValueError, match="got 2 images but 1 kernels"):
        batch.iter_restore_batch("var", ys[:2], ks[:1])  # not only once iterated


def test_estimated_zero_noise_asks_for_sigma(problem):
    ks, _ = problem
    flat = np.full((32, 32, 3), 0.5, np.float32)
    with pytest.raises(ValueError, match=r"ys\[0\]: the estimated noise std is 0; give sigma"):
        batch.restore_batch("var", [flat], ks[:1])


_SHARDED = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    sys.path.insert(0, sys.argv[1])
    from test_batch import make_denoiser, make_problem, sharded_cases
    from jaxrestore import batch

    real = batch._restore_chunk
    calls = []
    def spy(ops, ys, params, net, **kw):
        calls.append([kw["mesh"] is not None, len(ys.sharding.device_set), int(ys.shape[0])])
        return real(ops, ys, params, net, **kw)
    batch._restore_chunk = spy
    out = sharded_cases(make_problem([32] * 5, seed=2), make_denoiser())
    np.savez(sys.argv[2], **{f"{k}_{i}": x for k, v in out.items() for i, x in enumerate(v)})
    print(json.dumps({"devices": len(jax.devices()), "calls": calls}))
""")


def sharded_cases(problem, denoiser) -> dict:
    ks, ys = problem
    out = {f"var_{s}": batch.restore_batch("var", ys, ks, sigma=0.02, iterations=7, chunk_size=3, strategy=s)
           for s in ("vmap", "chunked", "map")}
    out["pnp"] = batch.restore_batch("pnp-admm", ys, ks, sigma=0.02, iterations=2, denoiser=denoiser, chunk_size=3,
                                     strategy="vmap")
    return out


def test_sharded_over_four_devices_equals_one_device(tmp_path, tiny_denoiser):
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    proc = subprocess.Popen([sys.executable, "-c", _SHARDED, here, str(tmp_path / "out.npz")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert len(jax.devices()) == 1
    single = sharded_cases(make_problem([32] * 5, seed=2), tiny_denoiser)  # while the subprocess runs
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    report = json.loads(stdout.strip().splitlines()[-1])
    assert report["devices"] == 4
    # 5 images in chunks of 3, rounded up to 4 (one per device): two chunks per call, all sharded
    assert report["calls"] == [[True, 4, 4]] * 2 * 4
    sharded = np.load(tmp_path / "out.npz")
    for key, images in single.items():
        for i, x in enumerate(images):
            np.testing.assert_allclose(sharded[f"{key}_{i}"], x, atol=1e-6)


def test_benchmark_script_runs_and_checks_outputs(tmp_path, capsys):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
    import bench_batch

    res = bench_batch.main(["--var-images", "3", "--var-size", "24", "--var-iters", "3", "--kernel-size", "5",
                            "--repeats", "1", "--skip-pnp", "--json", str(tmp_path / "b.json")])
    saved = json.loads((tmp_path / "b.json").read_text())
    rows = saved["var"]["results"]
    assert set(rows) == set(res["var"]["results"]) and len(rows) == 5  # the --batch-sizes 4, 8 are >= 3 images: skipped
    assert all(r["images_per_s"] > 0 and r["max_abs_diff_vs_loop"] <= 1e-4 for r in rows.values())
    assert "| VAR 3 it, 3 x 24x24x3" in capsys.readouterr().out


# ----------------------------------------------------------------------------- batched


def _var_batch(n=5, size=24, seed=4):
    ks, ys = make_problem([size] * n, seed=seed)
    ops = Blur(jnp.stack([Blur.from_kernel(k, (size, size)).otf for k in ks]), (size, size))
    lams = jnp.asarray([1e-4, 3e-4, 5e-5, 2e-4, 1e-3][:n], jnp.float32)
    return ops, jnp.stack([jnp.asarray(y) for y in ys]), lams


def _var_one(op, y, lam, delta):
    return run(projected_gradient(op, lam, delta), y, num_iters=6).x


@pytest.mark.parametrize("batch_size", [1, 2, 3, 5, 8, None, "auto"])
def test_batched_equals_vmap(batch_size):
    ops, ys, lams = _var_batch()
    ref = jax.jit(jax.vmap(_var_one, in_axes=(0, 0, 0, None)))(ops, ys, lams, 0.02)
    f = jax.jit(batch.batched(_var_one, in_axes=(0, 0, 0, None), batch_size=batch_size))
    out = f(ops, ys, lams, 0.02)  # 5 images: chunks of 2 and 3 leave a remainder
    assert out.shape == ref.shape
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-6)
    # each image got its own kernel and parameter
    assert float(jnp.abs(out[0] - out[1]).max()) > 0.05


def test_batched_gradient_equals_vmap_gradient():
    ops, ys, lams = _var_batch(n=4)

    def loss(mapper, lams):
        return jnp.sum(mapper(_var_one, in_axes=(0, 0, 0, None))(ops, ys, lams, 0.02) ** 2)

    g_ref = jax.grad(lambda l: loss(jax.vmap, l))(lams)
    g = jax.grad(lambda l: loss(lambda f, in_axes: batch.batched(f, in_axes=in_axes, batch_size=2), l))(lams)
    assert float(jnp.abs(g_ref).min()) > 0  # every image's parameter matters
    np.testing.assert_allclose(np.asarray(g), np.asarray(g_ref), rtol=1e-4)


def test_batched_auto_chunk_is_the_cpu_core_count(monkeypatch):
    monkeypatch.setattr(batch.os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert batch.cpu_batch_size() == 3
    monkeypatch.setattr(batch.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert batch.cpu_batch_size() == 2
    seen = []
    monkeypatch.setattr(batch.jax.lax, "map", lambda f, xs, batch_size=None: seen.append(batch_size) or
                        jax.vmap(lambda *a: f(a))(*xs))
    batch.batched(lambda x: x * 2)(jnp.ones((5, 3)))
    assert seen == [2]


@pytest.mark.parametrize("kwargs, args, match", [
    ({"batch_size": 0}, (jnp.ones((4, 2)),), "batch_size must be"),
    ({"batch_size": True}, (jnp.ones((4, 2)),), "batch_size must be"),
    ({"batch_size": 2.5}, (jnp.ones((4, 2)),), "batch_size must be"),
    ({"in_axes": 1}, (jnp.ones((4, 2)),), "in_axes must be"),
    ({"in_axes": (0,)}, (jnp.ones((4, 2)), jnp.ones((4, 2))), "one per argument"),
    ({"in_axes": (None,)}, (jnp.ones((4, 2)),), "at least one argument"),
    ({}, (jnp.ones((4, 2)), jnp.ones((3, 2))), "common leading axis"),
    ({}, (jnp.ones(()),), "scalar leaf"),
])
def test_batched_rejects_bad_arguments(kwargs, args, match):
    with pytest.raises(ValueError, match=match):
        batch.batched(lambda *a: a[0], **kwargs)(*args)
