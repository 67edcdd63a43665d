"""PnP-ReG's learned regularising gradient (Fermanian, Le Pendu, Guillemot; ``../shared/PROTOCOLS.md``
section 3).

A network ``G`` is trained so that ``sigma^2 G(D_sigma(z)) = z - D_sigma(z)`` for a Gaussian
denoiser ``D``: the optimality condition of ``D_sigma(z) = prox_{sigma^2 phi}(z)``, so that ``G``
approximates ``grad phi`` and serves as the gradient of the regulariser in plug-and-play gradient
descent (:mod:`jaxrestore.solvers.pnp_gd`). ``G`` is the DRUNet architecture without the
noise-level input (3 channels in, 3 out, no biases; :class:`~jaxrestore.models.drunet.DRUNetConfig`
with ``noise_map=False``), randomly initialised; ``D`` is a DRUNet trained jointly with it
(``jaxrestore train reg/...``, :mod:`jaxrestore.train.reg`).

:class:`RegPair` holds both; its weights file (:func:`save_pair` / :func:`load_pair`) keeps ``G``,
the jointly updated ``D`` and their configs. :func:`as_gradient` gives the pure
``grad_fn(params, x) -> G(x)`` the solvers take.
"""

from __future__ import annotations

import json

import jax
from flax import nnx

from jaxrestore.models.drunet import DRUNet, DRUNetConfig, config_dict

PUBLISHED_G = DRUNetConfig(channels=(64, 128, 256, 512), blocks=4, noise_map=False)  # the authors' G, 32.6 M parameters
SMALL_G = DRUNetConfig(channels=(16, 32, 64, 128), blocks=2, noise_map=False)        # CPU-sized

FORMAT = "jaxrestore.reg.weights/1"


def g_config(channels=(64, 128, 256, 512), blocks: int = 4, in_channels: int = 3) -> DRUNetConfig:
    """The config of a regularising-gradient network: a DRUNet without the noise-level map."""
    return DRUNetConfig(channels=tuple(channels), blocks=blocks, in_channels=in_channels, noise_map=False)


class RegPair(nnx.Module):
    """``G`` (the regularising gradient, ``G(x)``) and ``D`` (the denoiser it was trained with,
    ``D(x, sigma)``)."""

    def __init__(self, G: DRUNet, D: DRUNet):
        g, d = G.config, D.config
        if g.noise_map:
            raise ValueError("G takes no noise level: its config must have noise_map=False (see g_config)")
        if not d.noise_map:
            raise ValueError("D is a denoiser: its config must have the noise-level map (noise_map=True)")
        if g.in_channels != d.in_channels:
            raise ValueError(f"G and D must take the same channels, got {g.in_channels} and {d.in_channels}")
        self.G = G
        self.D = D

    @classmethod
    def create(cls, g: DRUNetConfig, d: DRUNetConfig, *, rngs: nnx.Rngs) -> "RegPair":
        return cls(DRUNet(g, rngs=rngs), DRUNet(d, rngs=rngs))


def as_gradient(model: DRUNet):
    """``(grad_fn, params)`` with ``grad_fn(params, x) = G(x)`` for ``x`` ``(H, W, C)`` or batched
    (the pure boundary: parameters are explicit arguments)."""
    if model.config.noise_map:
        raise ValueError("as_gradient takes a G network (a DRUNet without the noise-level map)")
    graphdef, params = nnx.split(model)

    def grad_fn(params, x):
        return nnx.merge(graphdef, params)(x)

    return grad_fn, params


def save_pair(pair: RegPair, path, metadata: dict | None = None):
    """Write ``G``, ``D`` and their configs to ``path`` (``.npz``, atomic)."""
    from jaxrestore.models import weights_io as wio

    config = json.dumps({"G": config_dict(pair.G.config), "D": config_dict(pair.D.config)}, sort_keys=True)
    return wio.save_state(path, nnx.state(pair), FORMAT, config, metadata)


def _configs(data, path) -> tuple[DRUNetConfig, DRUNetConfig]:
    try:
        raw = json.loads(str(data["__config__"]))
        return DRUNetConfig(**raw["G"]), DRUNetConfig(**raw["D"])
    except (json.JSONDecodeError, TypeError, KeyError, ValueError) as e:
        raise ValueError(f"cannot load PnP-ReG weights {path}: bad config ({e})") from None


def load_pair(path) -> RegPair:
    """The :class:`RegPair` saved at ``path``; a missing, damaged or mismatched file raises
    ``ValueError``."""
    from jaxrestore.models import weights_io as wio

    data = wio.read(path, FORMAT, "PnP-ReG")
    g, d = _configs(data, path)
    abstract = nnx.eval_shape(lambda: RegPair.create(g, d, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    return nnx.merge(graphdef, wio.fill(state, data, path, "PnP-ReG"))


def pair_metadata(path) -> dict:
    from jaxrestore.models import weights_io as wio

    return wio.metadata(wio.read(path, FORMAT, "PnP-ReG"))


def check_gradient_output(grad_fn, params, x) -> None:
    """A ``G`` must map an image to an image of the same shape (channel count included)."""
    out = jax.eval_shape(grad_fn, params, x)
    if out.shape != x.shape:
        raise ValueError(f"the regularising gradient maps {x.shape} to {out.shape}; it must return the image's shape "
                         f"(a G for {x.shape[-1]}-channel images)")


__all__ = ["RegPair", "g_config", "as_gradient", "save_pair", "load_pair", "pair_metadata", "check_gradient_output",
           "PUBLISHED_G", "SMALL_G", "FORMAT"]
