"""DRUNet (Zhang, Li, Zuo, Zhang, Van Gool, Timofte, "Plug-and-Play Image Restoration with Deep
Denoiser Prior", TPAMI 2021): a bias-free U-Net with residual blocks whose input is the noisy image
concatenated with a constant noise-level map (``../shared/PROTOCOLS.md`` section 2).

Architecture, with ``c = channels`` and ``nb = blocks`` residual blocks per scale::

    head  conv3x3 (C + 1 -> c0)
    down  i = 0 .. S-2:  nb x ResBlock(c_i), conv2x2 stride 2 (c_i -> c_{i+1})
    body  nb x ResBlock(c_{S-1})
    up    i = S-2 .. 0:  convT2x2 stride 2 (c_{i+1} -> c_i) of (features + skip_{i+1}), nb x ResBlock(c_i)
    tail  conv3x3 (c0 -> C) of (features + skip_0)

``ResBlock(v) = v + conv3x3(relu(conv3x3(v)))``; no convolution has a bias, so the network is
positively homogeneous in its input channels (a property the bias-free design is chosen for). The
published model has ``channels=(64, 128, 256, 512)`` and ``blocks=4``; :data:`SMALL` is a 2-core
CPU-sized variant. Images of any size are padded (replicate) to a multiple of ``2^(S-1)`` and the
output cropped back.

Learned parts are Flax NNX modules; :func:`as_denoiser` gives the pure
``denoiser(params, x, sigma)`` that solvers take.
"""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
from flax import nnx

from jaxrestore._validation import check_image


@dataclasses.dataclass(frozen=True)
class DRUNetConfig:
    """Widths per scale (one entry per scale, each scale halves the resolution) and residual
    blocks per scale; ``in_channels`` image channels (3 for RGB). ``noise_map=False`` drops the
    noise-level input channel: the network is then a plain image-to-image map (PnP-ReG's
    regularising gradient ``G``, :mod:`jaxrestore.models.reg`) and ignores ``sigma``."""

    channels: tuple[int, ...] = (64, 128, 256, 512)
    blocks: int = 4
    in_channels: int = 3
    noise_map: bool = True

    def __post_init__(self):
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if len(self.channels) < 1 or any(c < 1 for c in self.channels):
            raise ValueError(f"DRUNet channels must be one or more positive widths, got {self.channels}")
        if self.blocks < 0:
            raise ValueError(f"DRUNet blocks must be >= 0, got {self.blocks}")
        if self.in_channels < 1:
            raise ValueError(f"DRUNet in_channels must be >= 1, got {self.in_channels}")

    @property
    def multiple(self) -> int:
        """Input sizes are padded to a multiple of this."""
        return 2 ** (len(self.channels) - 1)


PUBLISHED = DRUNetConfig()
SMALL = DRUNetConfig(channels=(16, 32, 64, 128), blocks=2)


def _conv(cin: int, cout: int, rngs: nnx.Rngs, k: int = 3) -> nnx.Conv:
    return nnx.Conv(cin, cout, (k, k), padding="SAME", use_bias=False, rngs=rngs)


class ResBlock(nnx.Module):
    def __init__(self, channels: int, *, rngs: nnx.Rngs):
        self.conv1 = _conv(channels, channels, rngs)
        self.conv2 = _conv(channels, channels, rngs)

    def __call__(self, x):
        return x + self.conv2(jax.nn.relu(self.conv1(x)))


class _Stage(nnx.Module):
    """``blocks`` residual blocks at one width. A Python loop, not ``lax.scan``: XLA:CPU runs
    convolutions inside a loop body about 10x slower (measured on the small config's training
    step), and with at most a few blocks per stage the compile time stays small."""

    def __init__(self, channels: int, blocks: int, *, rngs: nnx.Rngs):
        self.blocks = nnx.List([ResBlock(channels, rngs=rngs) for _ in range(blocks)])

    def __call__(self, x):
        for block in self.blocks:
            x = block(x)
        return x


class DRUNet(nnx.Module):
    """``model(x, sigma)``: the denoised ``x`` (``(H, W, C)`` or ``(N, H, W, C)``), ``sigma`` the
    noise std on the ``[0, 1]`` scale (scalar, or one per image of a batch)."""

    def __init__(self, config: DRUNetConfig = SMALL, *, rngs: nnx.Rngs):
        self.config = config
        c, nb = config.channels, config.blocks
        self.head = _conv(config.in_channels + int(config.noise_map), c[0], rngs)
        self.down = nnx.List([_Stage(c[i], nb, rngs=rngs) for i in range(len(c) - 1)])
        self.pool = nnx.List([nnx.Conv(c[i], c[i + 1], (2, 2), strides=(2, 2), padding="VALID", use_bias=False, rngs=rngs)
                              for i in range(len(c) - 1)])
        self.body = _Stage(c[-1], nb, rngs=rngs)
        self.unpool = nnx.List([nnx.ConvTranspose(c[i + 1], c[i], (2, 2), strides=(2, 2), padding="VALID", use_bias=False,
                                                  rngs=rngs) for i in range(len(c) - 1)])
        self.up = nnx.List([_Stage(c[i], nb, rngs=rngs) for i in range(len(c) - 1)])
        self.tail = _conv(c[0], config.in_channels, rngs)

    def __call__(self, x, sigma=None):
        single = x.ndim == 3
        if single:
            x = x[None]
        n, h, w, _ = x.shape
        m = self.config.multiple
        ph, pw = -h % m, -w % m
        v = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge") if ph or pw else x
        if self.config.noise_map:
            if sigma is None:
                raise ValueError("this DRUNet takes a noise level: call it as model(x, sigma)")
            sigma = jnp.broadcast_to(jnp.asarray(sigma, x.dtype).reshape(-1), (n,))
            v = jnp.concatenate([v, jnp.broadcast_to(sigma[:, None, None, None], v.shape[:3] + (1,))], axis=-1)
        v = self.head(v)
        skips = [v]
        for stage, pool in zip(self.down, self.pool):
            v = pool(stage(v))
            skips.append(v)
        v = self.body(v)
        for i in reversed(range(len(self.up))):
            v = self.up[i](self.unpool[i](v + skips[i + 1]))
        out = self.tail(v + skips[0])[:, :h, :w, :]
        return out[0] if single else out


@nnx.jit(static_argnums=0)
def _build(config: DRUNetConfig, rngs: nnx.Rngs) -> DRUNet:
    return DRUNet(config, rngs=rngs)


def create(config: DRUNetConfig = SMALL, seed: int = 0) -> DRUNet:
    """A freshly initialised :class:`DRUNet` (built under ``jit``: one compiled initialiser
    instead of hundreds of op-by-op ones)."""
    return _build(config, nnx.Rngs(seed))


def as_denoiser(model: DRUNet):
    """The pure boundary: ``(denoiser, params)`` with ``denoiser(params, x, sigma) -> x̂`` (``x``
    ``(H, W, C)`` or batched, ``sigma`` on the ``[0, 1]`` scale). Parameters are explicit
    arguments, never closed over, so ``jax.grad`` and implicit differentiation reach them."""
    graphdef, params = nnx.split(model)

    def denoiser(params, x, sigma):
        return nnx.merge(graphdef, params)(x, sigma)

    return denoiser, params


def self_ensemble(denoiser):
    """The geometric self-ensemble of a pure denoiser (DPIR's "x8" mode, Zhang et al. 2021): the
    mean of ``T^-1 D(T v, sigma)`` over the eight rotations and flips ``T`` of the image plane.
    Returns a denoiser with the same signature ``(params, v, sigma)``, for ``(H, W, C)`` or batched
    ``(N, H, W, C)`` inputs (non-square images need ``H`` and ``W`` the network accepts, as rotations
    swap them). It costs eight denoiser calls; for an equivariant denoiser it changes nothing."""

    def ensembled(params, v, sigma):
        total = 0.0
        for k in range(4):
            for flip in (False, True):
                t = jnp.rot90(v, k, axes=(-3, -2))
                t = jnp.flip(t, -2) if flip else t
                d = denoiser(params, t, sigma)
                d = jnp.flip(d, -2) if flip else d
                total = total + jnp.rot90(d, -k, axes=(-3, -2))
        return total / 8.0

    return ensembled


def denoise(model: DRUNet, x, sigma):
    """Validated eager entry point: ``x`` a finite ``(H, W, C)`` image (or batch) in ``[0, 1]``
    plus noise, ``sigma >= 0`` (scalar or per image)."""
    check_image(x, "x", batched=x.ndim == 4)
    s = jnp.asarray(sigma)
    if not bool(jnp.all(jnp.isfinite(s))) or bool(jnp.any(s < 0)):
        raise ValueError(f"sigma must be finite and >= 0 (on the [0, 1] scale), got {sigma}")
    if x.shape[-1] != model.config.in_channels:
        raise ValueError(f"this DRUNet denoises {model.config.in_channels}-channel images, got {x.shape[-1]} channels")
    return model(x, s)


__all__ = ["DRUNetConfig", "DRUNet", "PUBLISHED", "SMALL", "ResBlock", "create", "as_denoiser", "self_ensemble", "denoise", "save_weights", "load_weights",
           "weights_metadata", "load_torch", "FORMAT"]


# ----------------------------------------------------------------------------- weights files

FORMAT = "jaxrestore.drunet.weights/1"


def save_weights(model: DRUNet, path, metadata: dict | None = None):
    """Write ``model``'s parameters, config and ``metadata`` (JSON-serialisable) to ``path``
    (``.npz``), atomically (:mod:`jaxrestore.models.weights_io`)."""
    from jaxrestore.models import weights_io as wio

    return wio.save_state(path, nnx.state(model), FORMAT, json.dumps(config_dict(model.config), sort_keys=True), metadata)


def config_dict(config: DRUNetConfig) -> dict:
    """The config as stored in weights files; ``noise_map`` only when false (a denoiser's record
    is the same as before the option existed)."""
    d = dataclasses.asdict(config)
    if d["noise_map"]:
        d.pop("noise_map")
    return d


def load_weights(path) -> DRUNet:
    """The :class:`DRUNet` saved at ``path`` by :func:`save_weights`. The model is built
    abstractly (no initialiser runs) and filled with the stored arrays; a missing, damaged or
    mismatched file raises ``ValueError``."""
    from jaxrestore.models import weights_io as wio

    data = wio.read(path, FORMAT, "DRUNet")
    try:
        raw = json.loads(str(data["__config__"]))
        config = DRUNetConfig(**raw)
    except KeyError:
        raise ValueError(f"cannot load DRUNet weights {path}: bad config (none stored)") from None
    except (json.JSONDecodeError, TypeError, ValueError) as e:
        raise ValueError(f"cannot load DRUNet weights {path}: bad config ({e})") from None
    abstract = nnx.eval_shape(lambda: DRUNet(config, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    return nnx.merge(graphdef, wio.fill(state, data, path, "DRUNet"))


def weights_metadata(path) -> dict:
    from jaxrestore.models import weights_io as wio

    return wio.metadata(wio.read(path, FORMAT, "DRUNet"))


def load_torch(path, config: DRUNetConfig | None = None) -> DRUNet:
    """The :class:`DRUNet` holding the weights of a PyTorch DRUNet file: KAIR/DPIR's
    ``drunet_color.pth`` or ``drunet_gray.pth``, or a deepinv ``DRUNet`` state dict, bare or
    nested in a checkpoint (``{"state_dict": ...}``). Read without torch, unpickling nothing but
    tensors (:mod:`jaxrestore.models.torch_state`). ``config`` defaults to the one the weights'
    shapes imply (widths, blocks, 1 or 3 image channels); a file that is not a torch state dict,
    or whose keys or shapes do not match, raises ``ValueError``. The network takes ``sigma`` on
    the ``[0, 1]`` scale, as KAIR's noise map (``sigma / 255`` for 8-bit levels) and deepinv do."""
    from jaxrestore.models import torch_state

    return torch_state.load_drunet(path, config)
