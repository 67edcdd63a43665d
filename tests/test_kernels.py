"""Blur kernels against independent references: MATLAB's fspecial and imresize formulas, the
iRestNet square, the seeded motion generator's invariants, and kernel files."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxrestore import kernels
from jaxrestore.operators import Downsample

_down = jax.jit(lambda op, x: op(x))


def _fspecial_gaussian(hsize, sigma):
    """MATLAB fspecial('gaussian', hsize, sigma), transcribed from its source."""
    siz = (hsize - 1) / 2
    x, y = np.meshgrid(np.linspace(-siz, siz, hsize), np.linspace(-siz, siz, hsize))
    h = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    h[h < np.finfo(float).eps * h.max()] = 0
    return h / h.sum()


@pytest.mark.parametrize("size,std", [(25, 1.6), (25, 3.0), (9, 1.0), (24, 2.0)])
def test_gaussian_matches_fspecial(size, std):
    k = kernels.gaussian(size, std)
    np.testing.assert_allclose(k, _fspecial_gaussian(size, std), rtol=1e-13, atol=1e-17)
    assert k.sum() == pytest.approx(1.0, abs=1e-14)
    np.testing.assert_array_equal(k, k.T)
    np.testing.assert_allclose(k, k[::-1, ::-1], rtol=1e-14, atol=0)
    # peak in the centre for odd sizes; a gaussian of std 1.6 is not flat
    if size % 2:
        assert np.unravel_index(k.argmax(), k.shape) == (size // 2, size // 2)


def test_gaussian_rejects_bad_std():
    for std in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError):
            kernels.gaussian(25, std)


def test_box_25_7_support():
    k = kernels.box(25, 7)
    assert k.shape == (25, 25)
    rows, cols = np.nonzero(k)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (9, 15, 9, 15)
    assert np.count_nonzero(k) == 49
    np.testing.assert_allclose(k[9:16, 9:16], 1 / 49, rtol=1e-15)
    assert k.sum() == pytest.approx(1.0, abs=1e-14)


def test_box_too_wide_raises():
    with pytest.raises(ValueError):
        kernels.box(5, 7)


# ------------------------------------------------------------------------- bicubic / imresize


def _keys_cubic(x, a):
    """Keys (1981) cubic convolution kernel with parameter a (MATLAB imresize uses a = -0.5)."""
    ax = np.abs(x)
    out = np.zeros_like(ax)
    m1 = ax <= 1
    m2 = (ax > 1) & (ax < 2)
    out[m1] = (a + 2) * ax[m1] ** 3 - (a + 3) * ax[m1] ** 2 + 1
    out[m2] = a * ax[m2] ** 3 - 5 * a * ax[m2] ** 2 + 8 * a * ax[m2] - 4 * a
    return out


def _imresize_weights(n_in, s, a, antialias):
    """MATLAB imresize's contribution matrix for downscaling by an integer ``s`` (scale 1/s), in
    0-based indices: output ``i`` sits at input coordinate ``u = s i + (s - 1) / 2``. Without
    antialiasing the weights are ``cubic(j - u)`` over the 4 nearest pixels; with it
    ``cubic((j - u) / s) / s`` over ``4 s`` pixels. Rows are normalised; a row is *valid* when none
    of its taps leaves ``[0, n_in)`` (ours is circular, MATLAB's replicates)."""
    n_out = n_in // s
    width = 4 * s if antialias else 4
    w = np.zeros((n_out, n_in))
    valid = np.zeros(n_out, bool)
    for i in range(n_out):
        u = s * i + (s - 1) / 2
        left = int(np.floor(u - width / 2))
        js = np.arange(left, left + width + 2)
        t = (js - u) / s if antialias else js - u
        wt = _keys_cubic(t, a)
        wt = wt / wt.sum()
        keep = wt != 0
        valid[i] = js[keep].min() >= 0 and js[keep].max() < n_in
        for j, v in zip(js[keep], wt[keep]):
            w[i, j % n_in] += v
    return w, valid


def _bicubic_downsample_op(k, shape, factor):
    # Built under jit, where the kernel's values are not checked: bicubic kernels have negative
    # lobes, which the eager Downsample.from_kernel rejects (see
    # test_downsample_accepts_bicubic_kernels). This keeps the kernel's math tested on its own.
    return jax.jit(lambda k: Downsample.from_kernel(k, shape, factor))(k)


@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize("a", [-0.5, -0.75])
@pytest.mark.parametrize("factor", [2, 3, 4])
def test_bicubic_downsample_matches_imresize_interior(x64, rng, factor, a, antialias):
    h, w = 48, 36
    k = kernels.bicubic(factor, a, antialias=antialias)
    assert k.sum() == pytest.approx(1.0, abs=1e-14)
    x = rng.random((h, w, 3))
    ours = np.asarray(_down(_bicubic_downsample_op(k, (h, w), factor), x))
    wr, vr = _imresize_weights(h, factor, a, antialias)
    wc, vc = _imresize_weights(w, factor, a, antialias)
    ref = np.einsum("ij,jkc,lk->ilc", wr, x, wc)
    assert vr.sum() >= 4 and vc.sum() >= 4  # enough interior pixels to compare
    np.testing.assert_allclose(ours[vr][:, vc], ref[vr][:, vc], rtol=0, atol=1e-13)
    # and the comparison can fail: another cubic parameter gives different pixels
    if factor != 3 or antialias:
        wr2, _ = _imresize_weights(h, factor, a + 0.25, antialias)
        ref2 = np.einsum("ij,jkc,lk->ilc", wr2, x, wc)
        assert np.abs(ours[vr][:, vc] - ref2[vr][:, vc]).max() > 1e-4


@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize("factor", [2, 4])
def test_downsample_accepts_bicubic_kernels(factor, antialias):
    """kernels.bicubic is documented as the kernel to give Downsample; its negative lobes must
    not make Downsample.from_kernel refuse it. (Fails with 'kernel has negative entries' while
    _validation.check_kernel rejects every negative entry.)"""
    k = kernels.bicubic(factor, antialias=antialias)
    op = Downsample.from_kernel(k, (24, 36), factor)
    x = np.full((24, 36, 3), 0.25, np.float32)
    np.testing.assert_allclose(_down(op, x), 0.25, rtol=1e-5)  # the kernel sums to one


def test_bicubic_factor3_is_shifted_delta(x64, rng):
    k = kernels.bicubic(3, antialias=False)
    assert np.count_nonzero(k) == 1 and k.max() == 1.0
    x = rng.random((24, 36, 3))
    out = _down(Downsample.from_kernel(k, (24, 36), 3), x)
    # output pixel i samples input 3 i + 1 exactly, on the whole image (no boundary effect)
    np.testing.assert_allclose(out, x[1::3, 1::3], rtol=0, atol=1e-14)


def test_bicubic_bad_factor():
    for f in (0, 2.5, -1):
        with pytest.raises(ValueError):
            kernels.bicubic(f)


# ------------------------------------------------------------------------------ motion


def test_random_motion_vmap_equals_loop_and_invariants():
    keys = jax.random.split(jax.random.key(3), 32)
    batch = np.asarray(jax.vmap(lambda k: kernels.random_motion(k, 25))(keys))
    loop = np.stack([np.asarray(kernels.random_motion(k, 25)) for k in keys[:8]])
    np.testing.assert_allclose(batch[:8], loop, rtol=0, atol=1e-6)
    # deterministic per key
    np.testing.assert_array_equal(np.asarray(kernels.random_motion(keys[0], 25)), loop[0])
    assert batch.min() >= 0
    np.testing.assert_allclose(batch.sum(axis=(1, 2)), 1.0, atol=1e-5)
    # the support stays off the border of the 25x25 frame
    assert not batch[:, 0].any() and not batch[:, -1].any()
    assert not batch[:, :, 0].any() and not batch[:, :, -1].any()
    assert np.all(np.count_nonzero(batch, axis=(1, 2)) > 10)  # trajectories, not dots
    # different keys give different kernels
    flat = batch.reshape(len(batch), -1)
    dist = np.abs(flat[:, None] - flat[None]).max(-1)
    assert np.all(dist[~np.eye(len(batch), dtype=bool)] > 1e-3)


# --------------------------------------------------------------------------------- files


def test_load_kernels_roundtrip(tmp_path, rng):
    a, b = rng.random((5, 7)), rng.random((25, 25))
    path = tmp_path / "k.npz"
    np.savez(path, a=a, b=b)
    ks = kernels.load_kernels(path)
    assert sorted(ks) == ["a", "b"]
    np.testing.assert_array_equal(ks["a"], a)
    np.testing.assert_array_equal(kernels.load_kernel(path, "b"), b)
    with pytest.raises(ValueError, match="choose one"):
        kernels.load_kernel(path)  # two kernels, no key
    single = tmp_path / "one.npz"
    np.savez(single, only=a)
    np.testing.assert_array_equal(kernels.load_kernel(single), a)


def test_load_kernel_npy_and_text(tmp_path, rng):
    a = rng.random((3, 5))
    np.save(tmp_path / "k.npy", a)
    np.testing.assert_array_equal(kernels.load_kernel(tmp_path / "k.npy"), a)
    np.savetxt(tmp_path / "k.txt", a)
    np.testing.assert_allclose(kernels.load_kernel(tmp_path / "k.txt"), a, rtol=1e-15)
    np.savetxt(tmp_path / "k.csv", a, delimiter=",")
    np.testing.assert_allclose(kernels.load_kernel(tmp_path / "k.csv"), a, rtol=1e-15)


def test_load_kernel_errors(tmp_path, rng):
    with pytest.raises(ValueError, match="not found"):
        kernels.load_kernels(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="not found"):
        kernels.load_kernel(tmp_path / "missing.npz", "a")
    with pytest.raises(ValueError, match="not found"):
        kernels.load_kernel(tmp_path / "missing.npy")
    path = tmp_path / "k.npz"
    np.savez(path, a=rng.random((3, 3)))
    with pytest.raises(ValueError, match="'zz' not in"):
        kernels.load_kernel(path, "zz")
    neg = tmp_path / "neg.npz"
    np.savez(neg, bad=np.array([[0.5, -0.1], [0.3, 0.3]]))
    with pytest.raises(ValueError, match="negative"):
        kernels.load_kernels(neg)
    with pytest.raises(ValueError, match="negative"):
        kernels.load_kernel(neg, "bad")
    # only the requested kernel of a file is validated
    mixed = tmp_path / "mixed.npz"
    good = rng.random((3, 3))
    np.savez(mixed, good=good, bad=-good)
    np.testing.assert_array_equal(kernels.load_kernel(mixed, "good"), good)
    with pytest.raises(ValueError, match="negative"):
        kernels.load_kernel(mixed, "bad")
    with pytest.raises(ValueError, match="negative"):
        kernels.load_kernels(mixed)
    assert set(kernels.load_kernels(mixed, validate=False)) == {"good", "bad"}
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"not a zip file")
    with pytest.raises(ValueError):
        kernels.load_kernels(corrupt)
    np.save(tmp_path / "neg.npy", -np.ones((3, 3)))
    with pytest.raises(ValueError, match="negative"):
        kernels.load_kernel(tmp_path / "neg.npy")
