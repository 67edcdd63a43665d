"""The iRestNet test protocol reproduces the authors' own numbers image for image
(PROTOCOLS.md section 1, golden check), and the shared kernel files are what we generate.

Needs ../shared/data (BSDS500 validation images, kernels, the authors' per-image CSV); skipped in
a fresh clone without it.
"""

from __future__ import annotations

import csv

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import SHARED, SHARED_REASON

from jaxrestore import kernels
from jaxrestore.metrics import ssim_irestnet
from jaxrestore.noise import estimate_sigma
from jaxrestore.presets import load_preset
from jaxrestore.protocols.irestnet import degrade_set, load_test_images

pytestmark = [pytest.mark.shared_data, pytest.mark.skipif(not SHARED.is_dir(), reason=SHARED_REASON)]

CSV = SHARED / "irestnet_weights" / "authors_gaussA_val20.csv"


@pytest.fixture(scope="module")
def gaussA_val20():
    """The first 20 BSDS500 validation images, degraded with the gaussA protocol (seed 0)."""
    names, gt = load_test_images(SHARED / "bsds500" / "val", limit=20)
    return degrade_set(names, gt, load_preset("gaussA"))


@pytest.fixture(scope="module")
def authors_rows():
    with open(CSV, newline="") as f:
        return list(csv.DictReader(f))


def test_images_in_the_authors_order(gaussA_val20, authors_rows):
    assert gaussA_val20.names == [r["image"] for r in authors_rows]
    assert gaussA_val20.names == sorted(gaussA_val20.names)
    assert gaussA_val20.gt.shape == (20, 256, 256, 3)
    assert gaussA_val20.y.dtype == np.float64
    # blurred images are kept unclipped
    assert gaussA_val20.y.min() < 0 or gaussA_val20.y.max() > 1
    np.testing.assert_array_equal(gaussA_val20.sigma, 0.008)


def test_blurred_ssim_matches_the_authors_per_image(gaussA_val20, authors_rows):
    d = gaussA_val20
    ours = np.array([ssim_irestnet(d.gt[i], d.y[i]) for i in range(20)])
    theirs = np.array([float(r["ssim_blurred"]) for r in authors_rows])
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=2e-6)
    assert ours.mean() == pytest.approx(0.6905, abs=5e-5)


def test_noise_estimate_matches_the_authors_per_image(gaussA_val20, authors_rows):
    ours = np.array([float(estimate_sigma(jnp.asarray(y, jnp.float32))) for y in gaussA_val20.y])
    theirs = np.array([float(r["sigma_hat"]) for r in authors_rows])
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=2e-6)
    assert ours.mean() == pytest.approx(0.00843, abs=5e-6)


def test_shared_irestnet_kernels_are_ours():
    ks = kernels.load_kernels(SHARED / "kernels" / "irestnet_25x25.npz")
    assert set(ks) >= {"gauss_1.6", "gauss_3", "square_7", "levin_motion3"}
    np.testing.assert_allclose(ks["gauss_1.6"], kernels.gaussian(25, 1.6), rtol=0, atol=1e-12)
    np.testing.assert_allclose(ks["gauss_3"], kernels.gaussian(25, 3.0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(ks["square_7"], kernels.box(25, 7), rtol=0, atol=1e-12)
    # and the presets use them
    np.testing.assert_allclose(load_preset("gaussA").kernel(), ks["gauss_1.6"], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(load_preset("motion").kernel(SHARED / "kernels"), ks["levin_motion3"])


@pytest.mark.parametrize("name,count", [("levin09.npz", 8), ("kernels12.npz", 12)])
def test_shared_kernel_sets_load(name, count):
    ks = kernels.load_kernels(SHARED / "kernels" / name)
    assert len(ks) == count
    for key, k in ks.items():
        assert k.ndim == 2 and k.min() >= 0, key
        assert k.sum() == pytest.approx(1.0, abs=1e-7), key
        np.testing.assert_array_equal(kernels.load_kernel(SHARED / "kernels" / name, key), k)
