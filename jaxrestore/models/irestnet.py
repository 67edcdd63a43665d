"""iRestNet (Corbineau, Bertocchi, Chouzenoux, Prato, Pesquet, ICIP 2019): the proximal
interior-point iteration (5) unfolded into ``K`` layers whose step size, barrier weight and
regularisation weight are inferred by small networks, plus an optional post-processing CNN.

Layer ``k`` (``../shared/PROTOCOLS.md`` section 1)::

    mu_k     = L_mu,k(x_k)                                  (conv5x5-pool-softplus x2, linear, softplus)
    gamma_k  = softplus(a_k)
    lambda_k = sigma_hat(y) softplus(b_k) / (eta(x_k) + softplus(c_k))                    (eq. 14)
    x_{k+1}  = prox_{gamma_k mu_k B}(x_k - gamma_k (H^T (H x_k - y) + lambda_k grad R(x_k)))

with ``x_0 = y``, ``B`` the log-barrier of ``[0, beta]`` (:func:`jaxrestore.prox.barrier_prox`) and
``R`` the smoothed TV (13). The output is ``x_K`` or, with the post-processing ``Lpp``,
``sigmoid(x_K + Lpp(x_K))`` (the published model, ``lpp_residual="input"``) or
``sigmoid(logit(x_K) + Lpp(x_K))`` (``lpp_residual="logit"``, see :class:`IRestNetConfig`).

The ``K`` layers are one module whose parameters carry a leading ``K`` axis; the forward pass is a
single ``lax.scan`` over them, so compilation time does not grow with ``K``.

Learned parts are Flax NNX modules; :func:`as_function` gives the pure ``(apply_fn, state)`` pair
used by solvers, training and ``jax.jit``/``vmap``.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrestore._validation import check_image
from jaxrestore.noise import estimate_sigma
from jaxrestore.operators import Blur
from jaxrestore.prox import barrier_prox
from jaxrestore.regularizers import diff_h, diff_v, tv_smooth_grad


@dataclasses.dataclass(frozen=True)
class IRestNetConfig:
    """Architecture options. ``tv_gradient="authors"`` and a correlation blur reproduce the
    published model; ``"exact"`` is the true gradient of (13)."""

    num_layers: int = 40
    delta: float = 0.01
    beta: float = 1.0
    tv_gradient: Literal["exact", "authors"] = "exact"
    use_lpp: bool = True
    lpp_features: int = 64
    # where Lpp's residual is added: "input" is the paper's sigmoid(x_K + Lpp(x_K)); "logit" is
    # sigmoid(logit(x_K) + Lpp(x_K)), whose last convolution starts at zero so that Lpp starts as
    # the identity (x_K lies strictly inside (0, 1): the barrier keeps it there)
    lpp_residual: Literal["input", "logit"] = "input"
    # L_mu pools to these sizes (the published layer: 256x256 input, AvgPool(4) twice)
    pool_sizes: tuple[tuple[int, int], tuple[int, int]] = ((64, 64), (16, 16))


def _pool_matrix(n_in: int, n_out: int, dtype) -> np.ndarray:
    """Rows average the bins ``[floor(i n_in / n_out), ceil((i + 1) n_in / n_out))`` (PyTorch's
    adaptive average pooling); for ``n_in = 4 n_out`` it is ``AvgPool(4)``."""
    m = np.zeros((n_out, n_in), dtype)
    for i in range(n_out):
        lo, hi = (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


def adaptive_avg_pool(x, size: tuple[int, int]):
    """Adaptive average pooling of ``(N, H, W, C)`` to ``(N, h, w, C)``, exact for any ``H, W``."""
    ph = jnp.asarray(_pool_matrix(x.shape[1], size[0], np.float64), x.dtype)
    pw = jnp.asarray(_pool_matrix(x.shape[2], size[1], np.float64), x.dtype)
    return jnp.einsum("ih,nhwc,jw->nijc", ph, x, pw)


def conv_pool(conv: nnx.Conv, x, size: tuple[int, int], *, channels_first: bool = False):
    """``adaptive_avg_pool(conv(x), size)`` for a stride-1 "same" ``nnx.Conv`` with an odd kernel,
    on ``(N, H, W, C)`` images (``(N, C, H, W)`` with ``channels_first``).

    When the pooling is uniform (``H = f h``, ``W = g w``: the published layer's ``AvgPool(4)``),
    the average of ``f x g`` outputs of a ``k x k`` convolution is one convolution of stride
    ``(f, g)`` with the ``(k + f - 1) x (k + g - 1)`` kernel ``conv.kernel`` convolved with the
    ``f x g`` box, divided by ``f g``: the same values up to float rounding (the sums are
    reordered), computed at the pooled resolution with ``f g`` times fewer multiply-adds and no
    full-size intermediate. Otherwise it is the convolution followed by :func:`adaptive_avg_pool`.
    """
    H, W = x.shape[2:] if channels_first else x.shape[1:3]
    w = conv.kernel[...]
    kh, kw = w.shape[:2]
    if H % size[0] or W % size[1] or kh % 2 == 0 or kw % 2 == 0:
        if channels_first:
            return adaptive_avg_pool(conv(x.transpose(0, 2, 3, 1)), size).transpose(0, 3, 1, 2)
        return adaptive_avg_pool(conv(x), size)
    f, g = H // size[0], W // size[1]
    box = jnp.zeros((kh + f - 1, kw + g - 1) + w.shape[2:], w.dtype)
    for a in range(f):
        for b in range(g):
            box = box.at[a:a + kh, b:b + kw].add(w)
    layout = ("NCHW", "HWIO", "NCHW") if channels_first else ("NHWC", "HWIO", "NHWC")
    out = jax.lax.conv_general_dilated(x, box / (f * g), (f, g), [(kh // 2, kh // 2 + f - 1), (kw // 2, kw // 2 + g - 1)],
                                       dimension_numbers=layout)
    if channels_first:
        out = out[:, :, : size[0], : size[1]]
        return out if conv.bias is None else out + conv.bias[...][:, None, None]
    out = out[:, : size[0], : size[1]]
    return out if conv.bias is None else out + conv.bias[...]


class BarrierNet(nnx.Module):
    """``L_mu``: the barrier weight ``mu_k > 0`` of each image from the current iterate."""

    def __init__(self, pool_sizes=((64, 64), (16, 16)), *, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(3, 1, (5, 5), padding=2, rngs=rngs)
        self.conv2 = nnx.Conv(1, 1, (5, 5), padding=2, rngs=rngs)
        h, w = pool_sizes[1]
        self.linear = nnx.Linear(h * w, 1, rngs=rngs)
        self.pool_sizes = tuple(tuple(p) for p in pool_sizes)

    def __call__(self, x, *, channels_first: bool = False):  # (N, H, W, 3) or (N, 3, H, W) -> (N,)
        h = jax.nn.softplus(conv_pool(self.conv1, x, self.pool_sizes[0], channels_first=channels_first))
        h = jax.nn.softplus(conv_pool(self.conv2, h, self.pool_sizes[1], channels_first=channels_first))
        return jax.nn.softplus(self.linear(h.reshape(h.shape[0], -1)))[:, 0]  # one channel: the same flattening


class IRestNetLayer(nnx.Module):
    """One unfolded interior-point iteration with its hidden structures."""

    def __init__(self, config: IRestNetConfig, *, rngs: nnx.Rngs):
        self.barrier = BarrierNet(config.pool_sizes, rngs=rngs)
        # raw values before softplus, initialised as in the authors' code; explicit dtype: a weakly
        # typed parameter changes type at its first optimiser update and forces a retrace
        self.gamma = nnx.Param(jnp.asarray(1.0, jnp.float32))
        self.reg_mul = nnx.Param(jnp.asarray(-7.0, jnp.float32))
        self.reg_constant = nnx.Param(jnp.asarray(-5.0, jnp.float32))

    def hyperparameters(self, x, sigma, *, channels_first: bool = False):
        """``(gamma, mu, lam)``: ``gamma`` scalar, ``mu`` and ``lam`` per image ``(N,)``."""
        gamma = jax.nn.softplus(self.gamma[...])
        mu = self.barrier(x, channels_first=channels_first)
        spread = jax.vmap(_gradient_spread_cf if channels_first else _gradient_spread)(x)
        lam = sigma * jax.nn.softplus(self.reg_mul[...]) / (spread + jax.nn.softplus(self.reg_constant[...]))
        return gamma, mu, lam

    def __call__(self, x, aty, ops, sigma, config: IRestNetConfig, *, channels_first: bool = False):
        """``x_{k+1}`` from ``x_k`` (``(N, H, W, C)``; ``(N, C, H, W)`` with ``channels_first``,
        the layout :meth:`IRestNet.run_layers` iterates in: the FFTs and the TV then run on
        contiguous planes and nothing is transposed inside the layer)."""
        gamma, mu, lam = self.hyperparameters(x, sigma, channels_first=channels_first)
        tv = functools.partial(tv_smooth_grad, delta=config.delta, variant=config.tv_gradient)
        if channels_first:
            gram = jax.vmap(_gram_cf)(ops, x)
            tv = jax.vmap(jax.vmap(tv))(x)  # per plane
        else:
            # not transposed to channels first here: under a device mesh, XLA:CPU 0.10 hands such a
            # transposed array to its FFT with a layout the FFT rejects (an internal RET_CHECK)
            gram = jax.vmap(lambda op, v: op.gram(v))(ops, x)
            tv = jax.vmap(tv)(x)
        u = x - gamma * (gram - aty + lam[:, None, None, None] * tv)
        return barrier_prox(u, (gamma * mu)[:, None, None, None], config.beta)


def to_channels_first(a):
    """``(..., H, W, C) -> (..., C, H, W)``: the layout the layers iterate in."""
    return jnp.moveaxis(a, -1, -3)


def to_channels_last(a):
    """``(..., C, H, W) -> (..., H, W, C)``."""
    return jnp.moveaxis(a, -3, -1)


def _gram_cf(op, v):
    """``A^T A`` of one ``(C, H, W)`` image: for a :class:`~jaxrestore.operators.Blur`, one FFT
    round trip over the last two axes; any other operator through its channels-last ``gram``."""
    if isinstance(op, Blur):
        return jnp.fft.irfft2(jnp.fft.rfft2(v) * (jnp.abs(op.otf) ** 2), s=op.shape)
    return jnp.moveaxis(op.gram(jnp.moveaxis(v, 0, -1)), -1, 0)


def _gradient_spread(x):
    """``eta(x)``: population std of all entries of ``(D_v x, D_h x)`` (one ``(H, W, C)`` image)."""
    return jnp.std(jnp.stack([diff_v(x), diff_h(x)]))


def _gradient_spread_cf(x):
    """:func:`_gradient_spread` of one ``(C, H, W)`` image (the std does not depend on the order)."""
    return jnp.std(jnp.stack([jax.vmap(diff_v)(x), jax.vmap(diff_h)(x)]))


class PostProcessing(nnx.Module):
    """``Lpp``: nine dilated 3x3 convolutions (dilations 1, 2, 3, 4, 5, 4, 3, 2, 1; zero padding),
    BatchNorm + ReLU between them; returns the residual added to ``x_K`` before the sigmoid."""

    DILATIONS = (1, 2, 3, 4, 5, 4, 3, 2, 1)

    def __init__(self, features: int = 64, *, rngs: nnx.Rngs):
        chans = [3] + [features] * 8 + [3]
        self.convs = nnx.List([
            nnx.Conv(chans[i], chans[i + 1], (3, 3), padding=d, kernel_dilation=d, rngs=rngs)
            for i, d in enumerate(self.DILATIONS)
        ])
        # PyTorch BatchNorm2d: eps 1e-5, running-average momentum 0.1 (flax: 0.9)
        self.norms = nnx.List([nnx.BatchNorm(features, momentum=0.9, epsilon=1e-5, rngs=rngs) for _ in range(7)])

    def __call__(self, x):
        h = jax.nn.relu(self.convs[0](x))
        for conv, norm in zip(self.convs[1:-1], self.norms):
            h = jax.nn.relu(norm(conv(h)))
        return self.convs[-1](h)


# logit(x) is evaluated on x clipped to [LOGIT_EPS, 1 - LOGIT_EPS] (|logit| <= 9.2): finite for
# iterates that round to 0 or 1 in float32
LOGIT_EPS = 1e-4


def lpp_output(lpp, x, residual: str = "input"):
    """The post-processed output: ``sigmoid(x + lpp(x))`` (``residual="input"``, the paper) or
    ``sigmoid(logit(x) + lpp(x))`` (``"logit"``; ``lpp = 0`` gives back ``x``)."""
    if residual == "logit":
        xc = jnp.clip(x, LOGIT_EPS, 1.0 - LOGIT_EPS)
        return jax.nn.sigmoid(jnp.log(xc) - jnp.log1p(-xc) + lpp(x))
    return jax.nn.sigmoid(x + lpp(x))


class IRestNet(nnx.Module):
    """The unfolded network. Call on a batch: ``model(y, ops, sigma=None)`` with ``y`` ``(N, H,
    W, 3)``, ``ops`` a batched operator pytree (one kernel per image, see
    :mod:`jaxrestore.operators`), ``sigma`` ``(N,)`` or ``None`` to estimate it from ``y``."""

    def __init__(self, config: IRestNetConfig = IRestNetConfig(), *, rngs: nnx.Rngs):
        self.config = config
        layers = [IRestNetLayer(config, rngs=rngs) for _ in range(config.num_layers)]
        graphdef, *_ = nnx.split(layers[0])
        stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *[nnx.state(layer) for layer in layers])
        self.layers = nnx.merge(graphdef, stacked)  # parameters with a leading K axis
        if config.lpp_residual not in ("input", "logit"):
            raise ValueError(f"lpp_residual must be 'input' or 'logit', got {config.lpp_residual!r}")
        self.lpp = PostProcessing(config.lpp_features, rngs=rngs) if config.use_lpp else None
        if self.lpp is not None and config.lpp_residual == "logit":
            last = self.lpp.convs[-1]
            last.kernel[...] = jnp.zeros_like(last.kernel[...])  # Lpp starts as the identity

    def layer(self, k: int) -> IRestNetLayer:
        """A standalone copy of layer ``k`` (for inspection)."""
        graphdef, state = nnx.split(self.layers)
        return nnx.merge(graphdef, jax.tree.map(lambda a: a[k], state))

    def run_layers(self, y, ops, sigma=None, *, start: int = 0, stop: int | None = None, x=None,
                   return_iterates: bool = False):
        """Layers ``start .. stop - 1`` from ``x`` (default ``x_0 = y``). With
        ``return_iterates`` also returns every iterate, ``(stop - start, N, H, W, C)``."""
        check_image(y, "y", batched=True)
        stop = self.config.num_layers if stop is None else stop
        if not 0 <= start <= stop <= self.config.num_layers:
            raise ValueError(f"need 0 <= start <= stop <= {self.config.num_layers}, got {start}, {stop}")
        if isinstance(ops, Blur) and tuple(ops.shape) != tuple(y.shape[1:3]):
            raise ValueError(f"the operators are for {ops.shape[0]}x{ops.shape[1]} images but y is "
                             f"{y.shape[1]}x{y.shape[2]}")
        if sigma is None:
            sigma = jax.vmap(estimate_sigma)(y)
        aty = jax.vmap(lambda op, v: op.adjoint(v))(ops, y)
        graphdef, state = nnx.split(self.layers)
        state = jax.tree.map(lambda a: a[start:stop], state)
        config = self.config

        def body(x, layer_state):  # channels first inside the scan: transposed once on each side
            x = nnx.merge(graphdef, layer_state)(x, aty_cf, ops, sigma, config, channels_first=True)
            return x, (x if return_iterates else None)

        aty_cf = to_channels_first(aty)
        x, iterates = jax.lax.scan(body, to_channels_first(y if x is None else x), state)
        x = to_channels_last(x)
        return (x, to_channels_last(iterates)) if return_iterates else x

    def __call__(self, y, ops, sigma=None, *, use_lpp: bool | None = None):
        x = self.run_layers(y, ops, sigma)
        use_lpp = self.lpp is not None if use_lpp is None else use_lpp
        if use_lpp:
            if self.lpp is None:
                raise ValueError("this model has no post-processing layer (config.use_lpp=False)")
            x = lpp_output(self.lpp, x, self.config.lpp_residual)
        return x


def as_function(model: nnx.Module):
    """The pure boundary: ``apply_fn(state, *args, **kwargs) -> model(*args, **kwargs)`` and the
    model's ``state``. Parameters are explicit arguments, never closed over."""
    graphdef, state = nnx.split(model)

    def apply_fn(state, *args, **kwargs):
        return nnx.merge(graphdef, state)(*args, **kwargs)

    return apply_fn, state


# ----------------------------------------------------------------------------- published weights



def _conv(w_oihw, b):
    """PyTorch ``(O, I, kh, kw)`` conv weight to flax ``(kh, kw, I, O)``."""
    return jnp.asarray(np.transpose(w_oihw, (2, 3, 1, 0))), jnp.asarray(b)


def load_published(layers_npz, lpp_npz=None, *, tv_gradient: Literal["exact", "authors"] = "authors") -> IRestNet:
    """An :class:`IRestNet` holding the authors' published weights, converted to ``.npz`` with the
    PyTorch state-dict names (``Layers.{k}.gamma``, ``.reg_mul``, ``.reg_constant``,
    ``.cnn_bar.conv2/conv3/lin.{weight,bias}``; ``conv{1..9}``, ``bn{1..7}``). Scalars are stored
    before their softplus. Fixed buffers (finite differences, ``HtH``) are recomputed.

    The published weights were trained with the authors' TV gradient variant (the default here)
    and circular cross-correlation blur (build operators with ``convention="correlation"``)."""
    layers_npz = Path(layers_npz)
    if not layers_npz.is_file():
        raise ValueError(f"published iRestNet layers not found: {layers_npz}")
    with np.load(layers_npz) as f:
        w = {k: f[k] for k in f.files}
    ks = sorted({int(k.split(".")[1]) for k in w if k.startswith("Layers.")})
    if ks != list(range(len(ks))) or not ks:
        raise ValueError(f"{layers_npz}: expected keys Layers.0 .. Layers.K-1, found layers {ks[:5]}...")
    if lpp_npz is not None and not Path(lpp_npz).is_file():
        raise ValueError(f"published iRestNet post-processing weights not found: {lpp_npz}")
    config = IRestNetConfig(num_layers=len(ks), tv_gradient=tv_gradient, use_lpp=lpp_npz is not None)
    model = IRestNet(config, rngs=nnx.Rngs(0))

    def stack(name):
        try:
            return np.stack([w[f"Layers.{k}.{name}"] for k in ks])
        except KeyError as e:
            raise ValueError(f"{layers_npz}: missing key {e.args[0]}") from None

    layers = model.layers
    layers.gamma[...] = jnp.asarray(stack("gamma").reshape(-1))
    layers.reg_mul[...] = jnp.asarray(stack("reg_mul").reshape(-1))
    layers.reg_constant[...] = jnp.asarray(stack("reg_constant").reshape(-1))
    layers.barrier.conv1.kernel[...] = jnp.asarray(np.transpose(stack("cnn_bar.conv2.weight"), (0, 3, 4, 2, 1)))
    layers.barrier.conv1.bias[...] = jnp.asarray(stack("cnn_bar.conv2.bias"))
    layers.barrier.conv2.kernel[...] = jnp.asarray(np.transpose(stack("cnn_bar.conv3.weight"), (0, 3, 4, 2, 1)))
    layers.barrier.conv2.bias[...] = jnp.asarray(stack("cnn_bar.conv3.bias"))
    layers.barrier.linear.kernel[...] = jnp.asarray(np.transpose(stack("cnn_bar.lin.weight"), (0, 2, 1)))
    layers.barrier.linear.bias[...] = jnp.asarray(stack("cnn_bar.lin.bias"))

    if lpp_npz is not None:
        with np.load(lpp_npz) as f:
            p = {k: f[k] for k in f.files}
        try:
            for i, conv in enumerate(model.lpp.convs, start=1):
                conv.kernel[...], conv.bias[...] = _conv(p[f"conv{i}.weight"], p[f"conv{i}.bias"])
            for i, norm in enumerate(model.lpp.norms, start=1):
                norm.scale[...] = jnp.asarray(p[f"bn{i}.weight"])
                norm.bias[...] = jnp.asarray(p[f"bn{i}.bias"])
                norm.mean[...] = jnp.asarray(p[f"bn{i}.running_mean"])
                norm.var[...] = jnp.asarray(p[f"bn{i}.running_var"])
        except KeyError as e:
            raise ValueError(f"{lpp_npz}: missing key {e.args[0]}") from None
    model.eval()
    return model


__all__ = ["lpp_output", "LOGIT_EPS", "IRestNetConfig", "IRestNet", "IRestNetLayer", "BarrierNet", "PostProcessing", "adaptive_avg_pool",
           "as_function", "load_published"]
