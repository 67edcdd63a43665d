"""The XLA:CPU default that ``import jaxrestore`` sets (:mod:`jaxrestore._xla_cpu`): added only
where it can take effect and is known to the installed jaxlib, never over the user's own choice,
and, in a fresh process, it really takes convolutions away from YNNPACK (which runs DRUNet's
convolutions on one core)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from jaxrestore import _xla_cpu


@pytest.fixture
def fresh(monkeypatch):
    """As if JAX had not started its backend yet, on a jaxlib where the option was measured."""
    monkeypatch.setattr(_xla_cpu, "_backend_started", lambda: False)
    monkeypatch.setattr(_xla_cpu, "_jaxlib_version", lambda: _xla_cpu.MEASURED_JAXLIB[0])
    monkeypatch.delenv("JAXRESTORE_XLA_DEFAULTS", raising=False)
    return monkeypatch


def test_flag_is_appended_to_existing_flags(fresh):
    fresh.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    assert _xla_cpu.apply_defaults()

    assert os.environ["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=2 {_xla_cpu.FLAG}"
    assert not _xla_cpu.apply_defaults()  # idempotent: the option is now named


def test_flag_is_not_added_where_it_should_not_be(fresh):

    fresh.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=individual_dot,individual_convolution")
    assert not _xla_cpu.apply_defaults()  # the user's setting wins
    fresh.delenv("XLA_FLAGS")
    fresh.setenv("JAXRESTORE_XLA_DEFAULTS", "0")
    assert not _xla_cpu.apply_defaults() and "XLA_FLAGS" not in os.environ
    fresh.delenv("JAXRESTORE_XLA_DEFAULTS")
    fresh.setattr(_xla_cpu, "_jaxlib_version", lambda: (0, 4))  # an XLA that may not know the option
    assert not _xla_cpu.apply_defaults() and "XLA_FLAGS" not in os.environ
    fresh.setattr(_xla_cpu, "_jaxlib_version", lambda: _xla_cpu.MEASURED_JAXLIB[0])
    fresh.setattr(_xla_cpu, "_backend_started", lambda: True)  # too late: XLA has read its flags
    assert not _xla_cpu.apply_defaults() and "XLA_FLAGS" not in os.environ


PROBE = """
import os
import jaxrestore, jax, jax.numpy as jnp
from jax import lax
conv = jax.jit(lambda x, k: lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))
hlo = conv.lower(jnp.zeros((1, 64, 64, 32)), jnp.zeros((3, 3, 32, 32))).compile().as_text()
print(os.environ.get("XLA_FLAGS", ""), "|", "ynn" if "__ynn_fusion" in hlo else "xla")
"""


@pytest.mark.skipif(_xla_cpu._jaxlib_version() not in _xla_cpu.MEASURED_JAXLIB, reason="option measured on jaxlib 0.10 only")
@pytest.mark.parametrize("opt_out", [False, True])
def test_import_takes_convolutions_from_ynnpack(opt_out):
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAXRESTORE_XLA_DEFAULTS")}
    if opt_out:
        env["JAXRESTORE_XLA_DEFAULTS"] = "0"
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300, check=True).stdout
    flags, backend = (s.strip() for s in out.strip().splitlines()[-1].split("|"))
    if opt_out:
        assert (flags, backend) == ("", "ynn")  # jaxlib's own default, so the check above can fail
    else:
        assert (flags, backend) == (_xla_cpu.FLAG, "xla")
