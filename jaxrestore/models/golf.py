"""The Golf Optimizer's two networks (blind deblurring; ``../shared/PROTOCOLS.md`` section 4 and
``../shared/papers/002_*.txt``): ``G1`` takes an aggressive first step ``x_0 = G1(y)`` from the
blurred image, ``G2`` is applied recurrently, ``x_{k+1} = x_k + G2(x_k)``, as a learned gradient
of the prior (:func:`jaxrestore.solvers.golf.golf`).

No public code exists, and the paper's Table 1 lost its layer names in extraction. The
architecture below is our reconstruction from what survives: four Layers of two Basic Blocks,
each Basic Block a residual unit whose residual mapping stacks six basic layers, 3-channel first
and last convolutions, stride 1 everywhere, 50 layers, and the per-row parameter counts. With
``F`` filters (16 for the 0.46 MB net, 32 for the 1.78 MB one)::

    stem     conv7x7 (3 -> F), no bias                                     147 F        (2,352 | 4,704)
    Layer 1-3  2 x BB(F -> F)                                               148 F^2 + 8 F (38,016 | 151,808)
    Layer 4  BB(F -> 3) with projection shortcut, BB(3 -> 3)               152 F + 915   (3,347 | 5,779)
    head     conv7x7 (3 -> 3), no bias                                     441           (441 | 441)

    BB(a -> b)(v) = s(v) + conv5x5(relu(n2(conv7x7(relu(n1(v))))))          (pre-activation, He et al. 2016)
    s(v) = v if a == b else n3(conv1x1(relu(n1(v))))

The six basic layers of a BB are ``n1, relu, conv7x7, n2, relu, conv5x5``; ``1 + 8 x 6 + 1 = 50``
layers. Every count of the paper's table is reproduced exactly (:func:`parameter_table`): the
``148 F^2`` of a Layer is two (7x7 + 5x5) pairs of ``F -> F`` convolutions, its ``8 F`` four
per-channel (scale, shift) pairs, and Layer 4's ``152 F + 915`` is the ``F``-channel ``n1``
(``2F``), the ``F -> 3`` 7x7 convolution and 1x1 projection (``150 F``) and the 3-channel rest.
No convolution has a bias.

``n1, n2, n3`` are per-channel affine maps (a scale and a shift per channel: the parameters
BatchNorm would have, and exactly BatchNorm's form at inference). We do not normalise by batch
statistics: ``G2`` sees its own outputs at every iteration, whose statistics differ from one
iteration to the next (the paper's own concern, its section 3.3), and one set of running averages
would be shared by all of them; the affine form also makes a result independent of the batch and
of the tiling (:mod:`jaxrestore.tiling`).

Both networks are residual at the outside: ``G1`` returns ``y + R1(y)`` (the "vanilla residual
CNN" of the paper) and the iteration adds ``R2(x)``; the head convolution starts at zero, so an
untrained ``G1`` is the identity and an untrained ``G2`` step leaves its input unchanged.
Receptive field: 46 pixels on each side per network application (:attr:`GolfConfig.radius`).
"""

from __future__ import annotations

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
from flax import nnx

from jaxrestore._validation import check_image


@dataclasses.dataclass(frozen=True)
class GolfConfig:
    """``width`` filters ``F``; ``layers`` Layers of ``blocks`` Basic Blocks (the last Layer
    reduces to ``in_channels``); ``kernels`` the two kernel sizes of a Basic Block."""

    width: int = 16
    layers: int = 4
    blocks: int = 2
    kernels: tuple[int, int] = (7, 5)
    stem: int = 7
    head: int = 7
    in_channels: int = 3

    def __post_init__(self):
        object.__setattr__(self, "kernels", tuple(int(k) for k in self.kernels))
        for name in ("width", "layers", "blocks", "stem", "head", "in_channels"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"GolfConfig.{name} must be a positive integer, got {v!r}")
        if len(self.kernels) != 2 or any(k < 1 or k % 2 == 0 for k in (*self.kernels, self.stem, self.head)):
            raise ValueError(f"Golf kernel sizes must be odd and positive (two per block), got kernels={self.kernels}, "
                             f"stem={self.stem}, head={self.head}")

    @property
    def radius(self) -> int:
        """Pixels of context one application needs on each side (its receptive field's half-width)."""
        per_block = sum(k // 2 for k in self.kernels)
        return self.stem // 2 + self.layers * self.blocks * per_block + self.head // 2


SMALL = GolfConfig(width=16)   # the paper's 0.46 MB network (120,188 parameters): G2, the deep optimizer
LARGE = GolfConfig(width=32)   # the paper's 1.78 MB network (466,348 parameters): G1, the first step

PAPER_COUNTS = {  # Table 1 of the paper, per row, (F = 16, F = 32)
    "stem": (2352, 4704), "layer1": (38016, 151808), "layer2": (38016, 151808), "layer3": (38016, 151808),
    "layer4": (3347, 5779), "head": (441, 441), "total": (120188, 466348),
}


class ChannelAffine(nnx.Module):
    """``v * scale + shift`` per channel (BatchNorm's inference form; see the module docstring)."""

    def __init__(self, features: int):
        self.scale = nnx.Param(jnp.ones((features,), jnp.float32))
        self.shift = nnx.Param(jnp.zeros((features,), jnp.float32))

    def __call__(self, v):
        return v * self.scale[...] + self.shift[...]


def _conv(cin, cout, k, rngs, scale=2.0, zero=False):
    init = nnx.initializers.zeros_init() if zero else nnx.initializers.variance_scaling(scale, "fan_in", "truncated_normal")
    return nnx.Conv(cin, cout, (k, k), padding="SAME", use_bias=False, kernel_init=init, rngs=rngs)


class BasicBlock(nnx.Module):
    """Pre-activation residual unit ``s(v) + conv_b(relu(n2(conv_a(relu(n1(v))))))``."""

    def __init__(self, cin: int, cout: int, kernels: tuple[int, int], n_blocks: int, *, rngs: nnx.Rngs):
        self.n1 = ChannelAffine(cin)
        self.conv_a = _conv(cin, cout, kernels[0], rngs)
        self.n2 = ChannelAffine(cout)
        # the second convolution starts small so the stack of residual units starts near the
        # identity without normalisation (Fixup-style scaling by the number of units)
        self.conv_b = _conv(cout, cout, kernels[1], rngs, scale=2.0 / n_blocks)
        if cin != cout:
            self.project = _conv(cin, cout, 1, rngs, scale=1.0)
            self.n3 = ChannelAffine(cout)
        else:
            self.project = None
            self.n3 = None

    def __call__(self, v):
        a = jax.nn.relu(self.n1(v))
        h = self.conv_b(jax.nn.relu(self.n2(self.conv_a(a))))
        return h + (v if self.project is None else self.n3(self.project(a)))


class GolfNet(nnx.Module):
    """``net(x)``: the residual mapping ``R(x)`` of one Golf network, ``(H, W, C)`` or
    ``(N, H, W, C)`` in, same shape out (stride 1, any size)."""

    def __init__(self, config: GolfConfig = SMALL, *, rngs: nnx.Rngs):
        self.config = c = config
        f, n_blocks = c.width, c.layers * c.blocks
        self.stem = _conv(c.in_channels, f, c.stem, rngs, scale=1.0)
        blocks = []
        for layer in range(c.layers):
            last = layer == c.layers - 1
            for b in range(c.blocks):
                cin = f if not (last and b > 0) else c.in_channels
                cout = c.in_channels if last else f
                blocks.append(BasicBlock(cin, cout, c.kernels, n_blocks, rngs=rngs))
        self.blocks = nnx.List(blocks)
        self.head = _conv(c.in_channels, c.in_channels, c.head, rngs, zero=True)

    def __call__(self, x):
        v = self.stem(x)
        for block in self.blocks:
            v = block(v)
        return self.head(v)


class Golf(nnx.Module):
    """The pair: ``G1`` (first step, ``y + R1(y)``) and ``G2`` (``x + R2(x)`` per iteration)."""

    def __init__(self, G1: GolfNet, G2: GolfNet):
        if G1.config.in_channels != G2.config.in_channels:
            raise ValueError(f"G1 and G2 must take the same channels, got {G1.config.in_channels} and {G2.config.in_channels}")
        self.G1 = G1
        self.G2 = G2

    @classmethod
    def create(cls, g1: GolfConfig = LARGE, g2: GolfConfig = SMALL, seed: int = 0) -> "Golf":
        rngs = nnx.Rngs(seed)
        return cls(GolfNet(g1, rngs=rngs), GolfNet(g2, rngs=rngs))

    @property
    def radius(self) -> int:
        return max(self.G1.config.radius, self.G2.config.radius)


def residual_fn(graphdefs):
    """The pure ``residual(params, which, x)`` for the static halves ``graphdefs = (G1's, G2's)``:
    ``R1(x)`` for ``which == "G1"``, ``R2(x)`` for ``"G2"``, ``params = {"G1": ..., "G2": ...}``."""

    def residual(params, which: str, x):
        return nnx.merge(graphdefs[0] if which == "G1" else graphdefs[1], params[which])(x)

    return residual


def split(model: Golf):
    """``(graphdefs, params)``: the static halves of ``G1`` and ``G2`` and their parameters
    ``{"G1": State, "G2": State}``."""
    (g1, p1), (g2, p2) = nnx.split(model.G1), nnx.split(model.G2)
    return (g1, g2), {"G1": p1, "G2": p2}


def merge(graphdefs, params) -> Golf:
    return Golf(nnx.merge(graphdefs[0], params["G1"]), nnx.merge(graphdefs[1], params["G2"]))


def as_networks(model: Golf):
    """``(residual, params)``, the pure boundary :func:`jaxrestore.solvers.golf.golf` takes:
    ``residual(params, "G1", y) = R1(y)`` (so ``G1(y) = y + R1(y)``) and
    ``residual(params, "G2", x) = R2(x)``."""
    graphdefs, params = split(model)
    return residual_fn(graphdefs), params


@functools.partial(jax.jit, static_argnames=("graphdefs", "iterations", "tol", "tile", "margin"))
def _deblur(params, y, *, graphdefs, iterations, tol, tile, margin):
    from jaxrestore.solvers.golf import golf, tiled_residual

    residual = residual_fn(graphdefs)
    if tile is not None:
        residual = tiled_residual(residual, tile=tile, margin=margin)
    return golf(residual, params, y, iterations=iterations, tol=tol)


def deblur(model: Golf, y, *, iterations: int = 3, tol: float | None = None, tile: int | None = None):
    """Blind deblurring of ``y`` (``(H, W, 3)`` or a batch, finite): ``G1`` then ``iterations``
    steps of ``G2`` (at most, with ``tol``; :func:`jaxrestore.solvers.golf.golf`). ``tile``:
    apply each network in ``tile x tile`` tiles with a margin of its receptive radius (the same
    result, the memory of one tile; :mod:`jaxrestore.tiling`). Returns ``(x, GolfInfo)``; ``x``
    is not clipped."""
    from jaxrestore.tiling import check_tiling

    check_input(model, y)
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations must be a whole number >= 0, got {iterations!r}")
    if tol is not None and not (float(tol) >= 0 and float(tol) < float("inf")):
        raise ValueError(f"tol must be finite and >= 0, got {tol}")
    if tile is not None:
        check_tiling(jnp.shape(y), tile, model.radius)
    graphdefs, params = split(model)
    return _deblur(params, jnp.asarray(y, jnp.float32), graphdefs=graphdefs, iterations=iterations,
                   tol=None if tol is None else float(tol), tile=tile, margin=model.radius)


def count_parameters(tree) -> int:
    return int(sum(a.size for a in jax.tree.leaves(tree)))


def parameter_table(config: GolfConfig) -> dict[str, int]:
    """Parameters per row of the paper's Table 1 (stem, layer1..layerN, head, total)."""
    net = nnx.eval_shape(lambda: GolfNet(config, rngs=nnx.Rngs(0)))
    rows = {"stem": count_parameters(nnx.state(net.stem, nnx.Param))}
    for layer in range(config.layers):
        blocks = net.blocks[layer * config.blocks:(layer + 1) * config.blocks]
        rows[f"layer{layer + 1}"] = sum(count_parameters(nnx.state(b, nnx.Param)) for b in blocks)
    rows["head"] = count_parameters(nnx.state(net.head, nnx.Param))
    rows["total"] = count_parameters(nnx.state(net, nnx.Param))
    return rows


def check_input(model_or_config, y, name: str = "y") -> None:
    """A blurred image or batch the networks take: finite, ``(H, W, C)``/``(N, H, W, C)`` with
    the networks' channel count."""
    config = model_or_config.G1.config if isinstance(model_or_config, Golf) else model_or_config
    check_image(y, name, batched=jnp.ndim(y) == 4)
    if y.shape[-1] != config.in_channels:
        raise ValueError(f"{name} has {y.shape[-1]} channels; this Golf model restores {config.in_channels}-channel "
                         f"(RGB) images{' (repeat a gray image to 3 channels)' if y.shape[-1] == 1 else ''}")


# ----------------------------------------------------------------------------- weights files

FORMAT = "jaxrestore.golf.weights/1"


def config_dict(config: GolfConfig) -> dict:
    d = dataclasses.asdict(config)
    d["kernels"] = list(config.kernels)
    return d


def save_golf(model: Golf, path, metadata: dict | None = None):
    """Write ``G1``, ``G2`` and their configs to ``path`` (``.npz``, atomic)."""
    from jaxrestore.models import weights_io as wio

    config = json.dumps({"G1": config_dict(model.G1.config), "G2": config_dict(model.G2.config)}, sort_keys=True)
    return wio.save_state(path, nnx.state(model), FORMAT, config, metadata)


def load_golf(path) -> Golf:
    """The :class:`Golf` pair saved at ``path``; a missing, damaged or mismatched file (another
    model's weights, another architecture) raises ``ValueError``."""
    from jaxrestore.models import weights_io as wio

    data = wio.read(path, FORMAT, "Golf")
    try:
        raw = json.loads(str(data["__config__"]))
        g1, g2 = GolfConfig(**raw["G1"]), GolfConfig(**raw["G2"])
    except (json.JSONDecodeError, TypeError, KeyError, ValueError) as e:
        raise ValueError(f"cannot load Golf weights {path}: bad config ({e})") from None
    abstract = nnx.eval_shape(lambda: Golf.create(g1, g2))
    graphdef, state = nnx.split(abstract)
    return nnx.merge(graphdef, wio.fill(state, data, path, "Golf"))


def golf_metadata(path) -> dict:
    from jaxrestore.models import weights_io as wio

    return wio.metadata(wio.read(path, FORMAT, "Golf"))


__all__ = ["GolfConfig", "GolfNet", "Golf", "BasicBlock", "ChannelAffine", "SMALL", "LARGE", "PAPER_COUNTS",
           "as_networks", "residual_fn", "split", "merge", "deblur", "count_parameters", "parameter_table", "check_input", "save_golf", "load_golf",
           "golf_metadata", "FORMAT"]
