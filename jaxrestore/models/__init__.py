"""Learned models (Flax NNX) behind a pure ``(apply_fn, state)`` boundary."""
