"""The Golf Optimizer's networks, recurrence, tiling and blind data (jaxrestore.models.golf,
jaxrestore.solvers.golf, jaxrestore.tiling, jaxrestore.data.blind)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy.signal import convolve2d

from jaxrestore.data.blind import blur_valid, motion_kernels, pair_paths, synthetic_pairs
from jaxrestore.data import save_image
from jaxrestore.kernels import random_motion
from jaxrestore.models import drunet
from jaxrestore.models.features import perceptual_distance, random_features
from jaxrestore.models.golf import (LARGE, PAPER_COUNTS, SMALL, Golf, GolfConfig, as_networks, deblur, load_golf,
                                    parameter_table, save_golf)
from jaxrestore.solvers.golf import golf, tiled_residual, trajectory
from jaxrestore.tiling import check_tiling, tiled

TINY = GolfConfig(width=4, layers=2, blocks=1)  # receptive radius 3 + 2 * 5 + 3 = 16


def _perturbed(model: Golf, scale=0.05, seed=1) -> Golf:
    """A copy with every parameter (the zero-initialised heads too) perturbed: a model whose
    residuals are not zero, so the properties below are not trivially true."""
    graphdef, state = nnx.split(model)
    leaves, tree = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    leaves = [a + scale * jax.random.normal(k, a.shape, a.dtype) for a, k in zip(leaves, keys)]
    return nnx.merge(graphdef, jax.tree.unflatten(tree, leaves))


@pytest.fixture(scope="module")
def tiny():
    return _perturbed(Golf.create(TINY, TINY, seed=0))


def test_parameter_counts_are_the_papers_table_row_by_row():
    for i, config in enumerate((SMALL, LARGE)):
        got = parameter_table(config)
        assert got == {row: counts[i] for row, counts in PAPER_COUNTS.items()}
    assert SMALL.radius == LARGE.radius == 46


def test_untrained_networks_are_the_identity_and_the_step_is_residual(rng):
    model = Golf.create(TINY, TINY, seed=3)
    residual, params = as_networks(model)
    y = jnp.asarray(rng.uniform(0, 1, (21, 17, 3)), jnp.float32)
    assert np.array_equal(np.asarray(residual(params, "G2", y)), np.zeros(y.shape))
    x, info = golf(residual, params, y, iterations=3)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert int(info.iterations) == 3 and float(info.update) == 0.0


def test_recurrence_equals_an_explicit_loop(tiny, rng):
    residual, params = as_networks(tiny)
    y = jnp.asarray(rng.uniform(0, 1, (2, 24, 20, 3)), jnp.float32)
    x = y + tiny.G1(y)
    for _ in range(4):
        x = x + tiny.G2(x)
    got, info = jax.jit(lambda p, y: golf(residual, p, y, iterations=4))(params, y)
    np.testing.assert_allclose(np.asarray(got), np.asarray(x), rtol=0, atol=1e-5)
    assert np.max(np.abs(np.asarray(x - y))) > 1e-2  # the perturbed model does move the image
    xs = trajectory(residual, params, y, 4)
    np.testing.assert_allclose(np.asarray(xs[-1]), np.asarray(x), atol=1e-5)
    r = np.asarray(tiny.G2(xs[3]))
    expected = np.sqrt((r**2).sum(axis=(1, 2, 3))) / np.sqrt((np.asarray(xs[3]) ** 2).sum(axis=(1, 2, 3)))
    np.testing.assert_allclose(np.asarray(info.update), expected, rtol=1e-4)
    g1_only, info0 = golf(residual, params, y, iterations=0)
    np.testing.assert_allclose(np.asarray(g1_only), np.asarray(xs[0]), atol=1e-6)
    assert int(info0.iterations) == 0


def test_tolerance_stops_at_the_first_small_update(tiny, rng):
    residual, params = as_networks(tiny)
    y = jnp.asarray(rng.uniform(0, 1, (16, 16, 3)), jnp.float32)
    xs = trajectory(residual, params, y, 6)
    updates = [float(jnp.linalg.norm(b - a) / jnp.linalg.norm(a)) for a, b in zip(xs[:-1], xs[1:])]
    tol = 0.5 * (updates[1] + updates[2]) if updates[2] < updates[1] else updates[1] * 1.0001
    k = next(i + 1 for i, u in enumerate(updates) if u <= tol)
    x, info = golf(residual, params, y, iterations=6, tol=tol)
    assert int(info.iterations) == k and bool(info.converged)
    np.testing.assert_allclose(np.asarray(x), np.asarray(xs[k]), atol=1e-5)
    x, info = golf(residual, params, y, iterations=6, tol=0.0)  # never small enough: all 6, reported unconverged
    assert int(info.iterations) == 6 and not bool(info.converged)


def test_odd_sizes_keep_their_shape_and_batching_does_not_couple_images(tiny, rng):
    y = rng.uniform(0, 1, (3, 37, 53, 3)).astype(np.float32)
    x, _ = deblur(tiny, y, iterations=2)
    assert x.shape == y.shape
    one, _ = deblur(tiny, y[1], iterations=2)
    np.testing.assert_allclose(np.asarray(x[1]), np.asarray(one), atol=1e-5)


def test_tiling_equals_the_untiled_result(tiny, rng):
    y = jnp.asarray(rng.uniform(0, 1, (70, 90, 3)), jnp.float32)
    whole, _ = deblur(tiny, y, iterations=2)
    for tile in (33, 40, 70):
        parts, _ = deblur(tiny, y, iterations=2, tile=tile)
        np.testing.assert_allclose(np.asarray(parts), np.asarray(whole), atol=2e-5)
    # a margin below the receptive radius is visibly wrong (the test can fail)
    residual, params = as_networks(tiny)
    short = golf(tiled_residual(residual, tile=33, margin=4), params, y, iterations=2)[0]
    assert float(jnp.max(jnp.abs(short - whole))) > 1e-3


def test_tiled_is_exact_for_a_known_convolution(rng):
    x = jnp.asarray(rng.standard_normal((2, 50, 41, 3)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((7, 7, 3, 5)), jnp.float32)
    fn = lambda v: jax.lax.conv_general_dilated(v, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")) + 1.0  # noqa: E731
    two = lambda v: fn(fn(v)[..., :3])  # noqa: E731  radius 6
    np.testing.assert_allclose(np.asarray(tiled(two, x, tile=13, margin=6)), np.asarray(two(x)), atol=1e-4)


def test_bad_inputs_are_clear_errors(tiny, tmp_path):
    y = np.full((40, 40, 3), 0.5, np.float32)
    with pytest.raises(ValueError, match="NaN or infinite"):
        deblur(tiny, np.where(np.eye(40)[..., None] > 0, np.nan, y))
    with pytest.raises(ValueError, match="3-channel"):
        deblur(tiny, y[..., :1])
    with pytest.raises(ValueError, match="larger than the image"):
        deblur(tiny, y, tile=64)
    with pytest.raises(ValueError, match="receptive field"):
        deblur(tiny, y, tile=20)
    with pytest.raises(ValueError, match="iterations"):
        deblur(tiny, y, iterations=-1)
    with pytest.raises(ValueError, match="tile"):
        check_tiling(y.shape, 0, 16)
    other = tmp_path / "drunet.npz"
    drunet.save_weights(drunet.create(drunet.DRUNetConfig(channels=(4, 8), blocks=1)), other)
    with pytest.raises(ValueError, match="not a jaxrestore.golf.weights"):
        load_golf(other)
    (tmp_path / "text.npz").write_text("not weights")
    with pytest.raises(ValueError, match="cannot load Golf weights"):
        load_golf(tmp_path / "text.npz")


def test_weights_round_trip_and_a_tampered_architecture_is_refused(tiny, tmp_path, rng):
    path = save_golf(tiny, tmp_path / "golf.npz", {"note": "test"})
    back = load_golf(path)
    y = rng.uniform(0, 1, (20, 20, 3)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(deblur(back, y)[0]), np.asarray(deblur(tiny, y)[0]))
    data = dict(np.load(path))
    data["__config__"] = np.array(str(data["__config__"]).replace('"width": 4', '"width": 6', 1))
    np.savez(tmp_path / "wrong.npz", **data)
    with pytest.raises(ValueError, match="expected float32"):
        load_golf(tmp_path / "wrong.npz")


def test_blur_valid_is_linear_convolution(rng):
    x = rng.uniform(0, 1, (30, 26, 3)).astype(np.float32)
    k = rng.uniform(0, 1, (7, 5)).astype(np.float32)
    got = np.asarray(blur_valid(jnp.asarray(x), jnp.asarray(k)))
    ref = np.stack([convolve2d(x[..., c], k, mode="valid") for c in range(3)], -1)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_motion_kernels_and_synthetic_pairs():
    ks = np.asarray(motion_kernels(jax.random.key(0), 16, 31, 5.0))
    assert ks.shape == (16, 31, 31) and ks.min() >= 0
    np.testing.assert_allclose(ks.sum(axis=(1, 2)), 1.0, atol=1e-5)
    support = [(k > 1e-4).sum() for k in ks]
    assert min(support) < 20 < max(support)  # mild and severe shake both drawn
    grid = np.arange(31)
    np.testing.assert_allclose((ks.sum(2) * grid).sum(1), 15, atol=1e-3)  # centred on their centre of mass:
    np.testing.assert_allclose((ks.sum(1) * grid).sum(1), 15, atol=1e-3)  # the blur does not shift the image
    box = np.asarray(random_motion(jax.random.key(5), 31, length=20.0))
    assert abs((box.sum(1) * grid).sum() - 15) + abs((box.sum(0) * grid).sum() - 15) > 1e-2  # "box" does not
    for bad in (0, 2, 4.5):
        with pytest.raises(ValueError, match="size"):
            random_motion(jax.random.key(0), bad)
    padded = jax.random.uniform(jax.random.key(1), (4, 40, 40, 3))
    y, x, kernels = synthetic_pairs(jax.random.key(2), padded, size=9, min_length=3.0, noise_max=0.0)
    assert y.shape == x.shape == (4, 32, 32, 3)
    for n in range(4):  # x is the centre of the (flipped) crop, y its linear blur
        flipped = [np.asarray(padded[n])[::a, ::b] for a in (1, -1) for b in (1, -1)]
        match = [f for f in flipped if np.array_equal(f[4:-4, 4:-4], np.asarray(x[n]))]
        assert match, "x must be the centre of a flip of its crop"
        np.testing.assert_allclose(np.asarray(y[n]), np.asarray(blur_valid(jnp.asarray(match[0]), kernels[n])), atol=1e-5)
    with pytest.raises(ValueError, match="min_length"):
        motion_kernels(jax.random.key(0), 2, 9, 7.0)


def test_pair_folders_in_every_layout(tmp_path):
    img = np.full((8, 8, 3), 0.5, np.float32)
    for name in ("a.png", "b.png"):
        save_image(tmp_path / "plain" / "blur" / name, img)
        save_image(tmp_path / "plain" / "sharp" / name, img)
        save_image(tmp_path / "gopro" / "seq1" / "blur" / name, img)
        save_image(tmp_path / "gopro" / "seq1" / "sharp" / name, img)
    save_image(tmp_path / "flat" / "Flower_blur1.png", img)
    save_image(tmp_path / "flat" / "Flower_sharp1.png", img)
    assert [p[0].name for p in pair_paths(tmp_path / "plain")] == ["a.png", "b.png"]
    assert len(pair_paths(tmp_path / "gopro")) == 2
    assert [(b.name, s.name) for b, s in pair_paths(tmp_path / "flat")] == [("Flower_blur1.png", "Flower_sharp1.png")]
    (tmp_path / "plain" / "sharp" / "b.png").unlink()
    with pytest.raises(ValueError, match="has no sharp image"):
        pair_paths(tmp_path / "plain")
    with pytest.raises(ValueError, match="no blur/sharp pairs"):
        pair_paths(tmp_path / "gopro" / "seq1" / "blur")


def test_random_features_give_a_perceptual_distance(rng):
    features = random_features(seed=0)
    a = jnp.asarray(rng.uniform(0, 1, (2, 32, 32, 3)), jnp.float32)
    assert features[0](features[1], a).shape == (2, 4, 4, 64)
    assert float(perceptual_distance(features, a, a)) == 0.0
    near, far = a + 0.01, jnp.clip(a + 0.2 * jnp.asarray(rng.standard_normal(a.shape), jnp.float32), 0, 1)
    assert 0 < float(perceptual_distance(features, a, near)) < float(perceptual_distance(features, a, far))
    again = random_features(seed=0)
    np.testing.assert_array_equal(np.asarray(again[1][0]), np.asarray(features[1][0]))  # needs no weights file
