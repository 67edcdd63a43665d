"""The shipped Golf model (jaxrestore/weights/golf_cpu.npz, trained by `jaxrestore train golf/cpu`):
it loads with the paper's parameter counts, says how it was trained, and deblurs camera shake it
never saw (the bundled sample image, and BSDS500 val images outside its model selection)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import requires_shared

from jaxrestore.data import ImageFolder, sample_image
from jaxrestore.data.blind import synthetic_pairs
from jaxrestore.metrics import psnr
from jaxrestore.models import pretrained
from jaxrestore.models.golf import count_parameters, deblur, golf_metadata, split


@pytest.fixture(scope="module")
def model():
    return pretrained.golf("cpu")


def test_shipped_model_is_the_papers_size_and_says_how_it_was_trained(model):
    _, params = split(model)
    assert count_parameters(params["G1"]) == 466348 and count_parameters(params["G2"]) == 120188
    meta = golf_metadata(pretrained.golf_path("cpu"))
    assert meta["train_config"]["name"] == "cpu" and meta["train_minutes"] > 1
    assert meta["val_psnr"] > meta["val_psnr_blurred"]


def _pairs(images, seed):
    padded = jnp.asarray(images, jnp.float32)
    y, x, _ = synthetic_pairs(jax.random.key(seed), padded, size=31, min_length=5.0, noise_max=0.01)
    return np.asarray(y), np.asarray(x)


def _gain(model, y, x, iterations):
    out = np.clip(np.asarray(deblur(model, jnp.asarray(y), iterations=iterations)[0]), 0, 1)
    return float(np.mean(np.asarray(jax.vmap(psnr)(jnp.asarray(out), jnp.asarray(x))) -
                         np.asarray(jax.vmap(psnr)(jnp.asarray(y), jnp.asarray(x)))))


def test_shipped_model_deblurs_the_sample_image(model):
    img = sample_image(256)
    crops = np.stack([img[i:i + 126, j:j + 126] for i in (0, 130) for j in (0, 130)])
    y, x = _pairs(crops, seed=11)
    assert _gain(model, y, x, 3) > 0.0


def _val_pairs(shared_data):
    val = ImageFolder(shared_data / "bsds500" / "val", crop=158)
    return _pairs(np.stack([val[i] for i in range(60, 68)]), seed=12)  # far from the 8 it was selected on


@requires_shared
def test_shipped_model_deblurs_unseen_val_images(model, shared_data):
    y, x = _val_pairs(shared_data)
    assert _gain(model, y, x, 3) > _gain(model, y, x, 0) > -0.05  # G2's iterations earn their place over G1 alone
    assert _gain(model, y, x, 3) > 0.1


@requires_shared
@pytest.mark.xfail(strict=True, reason="known defect (docs/methods/golf.md): the CPU-trained G2 was trained for 3 "
                   "iterations and diverges beyond them (golf-10 about 3.6 dB below blurred)")
def test_more_iterations_do_not_blow_up(model, shared_data):
    y, x = _val_pairs(shared_data)
    assert _gain(model, y, x, 10) > _gain(model, y, x, 3) - 0.3
