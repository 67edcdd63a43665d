"""Shared fixtures: float64 on demand, a seeded numpy generator, and the ../shared/data folder.

float64 is never enabled globally: a test that needs it takes the ``x64`` fixture, which runs it
inside ``with jax.enable_x64(True):``. Inside, arrays must be created with an explicit float64
dtype (``jnp.asarray(a, jnp.float64)``); numpy float64 arrays passed to jax keep their dtype.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared" / "data"
SHARED_REASON = (
    f"../shared/data is absent (fresh clone): {SHARED} holds the BSDS500 images, kernels and the "
    "authors' reference numbers these tests compare against"
)

requires_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=SHARED_REASON)


@pytest.fixture
def x64():
    """Run the test with 64-bit JAX types (scoped to the test, not global)."""
    with jax.enable_x64(True):
        yield


@pytest.fixture
def rng():
    """A fresh, seeded numpy generator per test."""
    return np.random.default_rng(20240531)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ../shared/data; skips the test when it is absent."""
    if not SHARED.is_dir():
        pytest.skip(SHARED_REASON)
    return SHARED
