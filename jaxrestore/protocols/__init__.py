"""Evaluation protocols of the reference papers (data preparation, degradation, scoring)."""

from jaxrestore.protocols.irestnet import DegradedSet, degrade_set, estimate_sigmas, load_test_images, restore_var
from jaxrestore.protocols import suppa  # noqa: F401  (the SUPPA protocol: jaxrestore.protocols.suppa)

__all__ = ["DegradedSet", "degrade_set", "estimate_sigmas", "load_test_images", "restore_var"]
