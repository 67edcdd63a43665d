"""The PnP-ReG test protocol (Fermanian, Le Pendu & Guillemot; ../shared/PROTOCOLS.md section 3):
settings, degradations, test images, and the restoration methods compared in its table.

Settings (the name is what the tables and JSON use):

* deblurring ``k2_2.55``, ``k2_7.65``, ``k3_*``, ``k5_*``, ``k7_*``: circular convolution with
  kernel ``k<i>`` of ``kernels12.npz`` (``../shared/data/kernels``; k2, k3 isotropic Gaussians of
  std 1.6, 2.0, k5, k7 anisotropic), then white Gaussian noise of std 2.55/255 or 7.65/255.
* inpainting ``keep0.2``, ``keep0.1``: a Bernoulli mask keeping 20 % / 10 % of the pixels, shared
  over the channels, no noise.
* super-resolution ``x2``: the authors' setting, the antialiased bicubic kernel with ``a = -0.75``
  (their ``Downsampler(kernel_type='bicubic', antialias=True)``, PyTorch's / OpenCV's cubic;
  :func:`kernels.bicubic`), circular, then noise 2.55/255; ``x2_suppa``: our SUPPA SR setting
  (:mod:`jaxrestore.protocols.suppa`, bicubic ``a = -0.5`` without antialiasing, no noise). SR
  images are first modcropped to a multiple of 2.

Images are RGB in ``[0, 1]``. :func:`degrade` runs in float64 with one
``numpy.random.default_rng(seed)`` per image (the mask, then the noise, come from it: same seed,
same observation; the 10 % mask of a seed lies inside its 20 % one); restoration in float32.
:func:`score` is PSNR on RGB of the output clipped to ``[0, 1]`` over the full image. The test
sets are CBSD68 (the 68 ``bsds500/val`` images listed in ``CBSD68_subset_names.txt``) for
deblurring and inpainting, Set5 and Set14 for SR; parameters are tuned on the other 32 ``val``
images (:func:`tuning_names`; ``benchmarks/tune_reg.py``).

Every runner takes the setting, a list of observations ``ys`` and the matching list of operators
``ops`` (from :func:`degrade`; an inpainting mask cannot be rebuilt from ``y``) and returns the
restorations, unclipped. Each is one ``jax.jit``-compiled function, recompiled once per image
shape and cached by ``jit`` (the operator, ``sigma_r`` and the step size are traced arguments).
"""

from __future__ import annotations

import dataclasses
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxrestore import kernels
from jaxrestore.data import list_images, load_image
from jaxrestore.operators import Blur, Downsample, Inpaint
from jaxrestore.protocols.suppa import modcrop, score
from jaxrestore.solvers import Solver, pnp_admm, pnp_gd, projected_gradient, reg_initial_estimate, run

TASKS = ("deblur", "inpaint", "sr2")
DEBLUR_KERNELS = ("k2", "k3", "k5", "k7")
DEBLUR_NOISES = ("2.55", "7.65")  # /255, as written in the setting names
INPAINT_KEEPS = ("0.2", "0.1")
SR_NOISE = 2.55 / 255
SETTINGS = {
    "deblur": tuple(f"{k}_{n}" for k in DEBLUR_KERNELS for n in DEBLUR_NOISES),
    "inpaint": tuple(f"keep{p}" for p in INPAINT_KEEPS),
    "sr2": ("x2", "x2_suppa"),
}
KERNELS12 = "kernels12.npz"


@dataclasses.dataclass(frozen=True)
class Setting:
    """One degradation of the protocol. ``noise`` is the std on the ``[0, 1]`` scale; ``kernel``
    the kernels12 key (deblurring); ``keep`` the mask's keep rate (inpainting); ``factor`` 1 or 2;
    ``a`` / ``antialias`` the bicubic kernel of SR."""

    name: str
    task: str
    noise: float
    kernel: str | None = None
    keep: float | None = None
    factor: int = 1
    a: float | None = None
    antialias: bool = False


def setting(name: str) -> Setting:
    """The :class:`Setting` of a name of :data:`SETTINGS`; ``ValueError`` on an unknown one."""
    for task, names in SETTINGS.items():
        if name in names:
            break
    else:
        known = ", ".join(n for names in SETTINGS.values() for n in names)
        raise ValueError(f"unknown setting {name!r}; available: {known}")
    if task == "deblur":
        k, n = name.split("_")
        return Setting(name, task, float(n) / 255, kernel=k)
    if task == "inpaint":
        return Setting(name, task, 0.0, keep=float(name.removeprefix("keep")))
    if name == "x2":
        return Setting(name, task, SR_NOISE, factor=2, a=-0.75, antialias=True)
    return Setting(name, task, 0.0, factor=2, a=-0.5, antialias=False)


def task_settings(task: str) -> tuple[str, ...]:
    """The setting names of ``task`` (``deblur``, ``inpaint``, ``sr2``)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; available: {', '.join(TASKS)}")
    return SETTINGS[task]


def _as_setting(s) -> Setting:
    return s if isinstance(s, Setting) else setting(s)


def load_kernels12(path) -> dict[str, np.ndarray]:
    """The deblurring kernels (``k2``, ``k3``, ``k5``, ``k7``, float64) of a kernels12 ``.npz``
    (a file, or a folder holding ``kernels12.npz``)."""
    path = Path(path)
    if path.is_dir():
        path = path / KERNELS12
    ks = kernels.load_kernels(path)
    missing = [k for k in DEBLUR_KERNELS if k not in ks]
    if missing:
        raise ValueError(f"{path} lacks the kernels {', '.join(missing)} of the PnP-ReG deblurring settings")
    return {k: ks[k] for k in DEBLUR_KERNELS}


def setting_kernel(s, kernels12: dict | None = None) -> np.ndarray | None:
    """The blur / downsampling kernel (float64) of a setting; ``None`` for inpainting."""
    s = _as_setting(s)
    if s.task == "deblur":
        if kernels12 is None or s.kernel not in kernels12:
            raise ValueError(f"setting {s.name} needs kernel {s.kernel} of kernels12.npz (pass kernels12=load_kernels12(...))")
        return np.asarray(kernels12[s.kernel], np.float64)
    if s.task == "sr2":
        return kernels.bicubic(s.factor, a=s.a, antialias=s.antialias)
    return None


def setting_operator(s, image_shape, *, kernels12: dict | None = None, mask=None, dtype=None):
    """The degradation ``A`` on images of ``image_shape`` (the high-resolution ``(H, W[, C])``):
    :class:`Blur`, :class:`Inpaint` (``mask`` ``(H, W)`` required) or :class:`Downsample`, in
    ``dtype`` (default float32; float64 needs ``jax.enable_x64``)."""
    s = _as_setting(s)
    dtype = jnp.float32 if dtype is None else dtype
    if s.task == "inpaint":
        if mask is None:
            raise ValueError(f"setting {s.name} needs its mask (from degrade)")
        return Inpaint.create(jnp.asarray(mask, dtype))
    k = jnp.asarray(setting_kernel(s, kernels12), dtype)
    if s.task == "deblur":
        return Blur.from_kernel(k, image_shape)
    return Downsample.from_kernel(k, image_shape, s.factor)


def degrade(s, x, seed: int, *, kernels12: dict | None = None):
    """``(y, op)`` for the ground truth ``x`` ``(H, W, C)``: ``y = A x + noise * n`` computed in
    float64, ``n`` (and first, for inpainting, the mask ``rng.random((H, W)) < keep``) from
    ``numpy.random.default_rng(seed)``; ``y`` float32, not clipped; ``op`` the float32 operator
    for restoration."""
    s = _as_setting(s)
    x = np.asarray(x, np.float64)
    if x.ndim != 3:
        raise ValueError(f"x must be (H, W, C), got shape {x.shape}")
    if x.shape[0] % s.factor or x.shape[1] % s.factor:
        raise ValueError(f"image size {x.shape[:2]} is not a multiple of {s.factor}; modcrop it first")
    rng = np.random.default_rng(seed)
    mask = (rng.random(x.shape[:2]) < s.keep).astype(np.float64) if s.task == "inpaint" else None
    with jax.enable_x64(True):
        op64 = setting_operator(s, x.shape, kernels12=kernels12, mask=mask, dtype=jnp.float64)
        ax = np.asarray(_apply(op64, jnp.asarray(x, jnp.float64)))
    y = ax + s.noise * rng.standard_normal(ax.shape) if s.noise > 0 else ax
    return y.astype(np.float32), setting_operator(s, x.shape, kernels12=kernels12, mask=mask)


@jax.jit
def _apply(op, x):
    return op(x)


def cbsd68_names(path) -> list[str]:
    """The image ids (file stems) of ``CBSD68_subset_names.txt``."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"CBSD68 list not found: {path}")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def tuning_names(val_folder, cbsd68_file) -> list[str]:
    """The file names of the ``val`` images *not* in CBSD68 (what the parameters are tuned on)."""
    test = set(cbsd68_names(cbsd68_file))
    return [p.name for p in list_images(val_folder) if p.stem not in test]


def load_images(folder, *, factor: int = 1, limit: int | None = None, stems=None, names=None, crop=None):
    """``(names, images)``: the images of ``folder`` in sorted name order, ``(H, W, 3)`` float32,
    restricted to the file stems ``stems`` or file names ``names`` if given, the first ``limit``
    of them, centre-cropped to ``crop`` (int, optional), then modcropped to ``factor``."""
    paths = list_images(folder)
    if stems is not None:
        stems = set(stems)
        paths = [p for p in paths if p.stem in stems]
    if names is not None:
        names = set(names)
        paths = [p for p in paths if p.name in names]
    paths = paths[:limit]
    if not paths:
        raise ValueError(f"no (selected) images in {folder}")
    out = []
    for p in paths:
        x = load_image(p)
        if crop is not None:
            h, w = min(crop, x.shape[0]), min(crop, x.shape[1])
            i, j = (x.shape[0] - h) // 2, (x.shape[1] - w) // 2
            x = x[i:i + h, j:j + w]
        out.append(modcrop(x, factor))
    return [p.name for p in paths], out


# ------------------------------------------------------------------------------- parameters
#
# Tuned on val images not in CBSD68 (tuning_names: the first 3, or 2, of 156065, 361010, 37073;
# centre crops; seed i for image i) by `python benchmarks/tune_reg.py --grid <tv|pnp|reg>
# --settings ...` (commands below; total tuning CPU time about 23 min on 2 shared cores). Mean
# PSNR (dB, RGB, clipped).
#
# TV (projected_gradient, smoothed TV with delta 0.01, so lam is ~100x smaller than a plain TV
# weight; FISTA from clip(reg_initial_estimate)). 3 images, 256x256:
#   --grid tv --settings k2_2.55,...,k7_7.65 --lam 2e-6,5e-6,1e-5,2e-5,5e-5 (500 iterations):
#     lam      k2_2.55 k2_7.65 k3_2.55 k3_7.65 k5_2.55 k5_7.65 k7_2.55 k7_7.65
#     2e-6     26.426  18.168  25.569  19.272  25.390  19.000  24.825  20.036
#     5e-6     26.752  22.498  25.656  22.866  25.500  22.682  24.831  22.881
#     1e-5     26.567  24.463  25.488  24.159  25.353  24.021  24.678  23.767
#     2e-5     26.232  25.275  25.224  24.610  25.108  24.490  24.461  24.030
#     5e-5     25.678  25.339  24.798  24.564  24.693  24.465  24.108  23.942
#     observed 24.131  23.285  23.323  22.614  23.163  22.474  22.667  22.052
#   --lam 3.5e-6,5e-6,3e-5 --iterations 500,1000 on k2_2.55, k2_7.65, k5_2.55, k7_7.65: 3e-5 gives
#     25.998 / 25.397 / 24.935 / 24.032, 3.5e-6 26.733 / 21.001 / 25.516 / 22.027; 1000
#     iterations change nothing by more than 0.001 dB. Kept: 5e-6 at 2.55/255, 3e-5 at 7.65/255.
#   keep0.2 / keep0.1, 1000 iterations (observed 9.685 / 9.178): lam 1e-6 23.728 / 21.572, 3e-6
#     23.725 / 21.580, 1e-5 23.721 / 21.577, 3e-5 23.699 / 21.557, 1e-4 23.586 / 21.479, 1e-3
#     21.617 / 19.986, 1e-2 17.923 / 17.305 (2000 iterations: within 0.008 dB): noiseless, the
#     small-lam limit is the data-consistent image of least TV. Kept 3e-6.
#   x2 / x2_suppa, 500 iterations (bicubic 26.850 / 27.228): lam 1e-7 27.742 / 27.114, 1e-6 27.788
#     / 27.089, 3e-6 27.845 / 27.087, 1e-5 27.925 / 27.071, 3e-5 27.778 / 26.988.
TV_PARAMS = {
    **{s: {"lam": 5e-6, "delta": 0.01, "iterations": 500} for s in SETTINGS["deblur"] if s.endswith("_2.55")},
    **{s: {"lam": 3e-5, "delta": 0.01, "iterations": 500} for s in SETTINGS["deblur"] if s.endswith("_7.65")},
    "keep0.2": {"lam": 3e-6, "delta": 0.01, "iterations": 1000},
    "keep0.1": {"lam": 3e-6, "delta": 0.01, "iterations": 1000},
    "x2": {"lam": 1e-5, "delta": 0.01, "iterations": 500},
    "x2_suppa": {"lam": 1e-7, "delta": 0.01, "iterations": 500},
}

# PnP-ADMM (pnp_admm, DPIR's schedule: sigma_k log-spaced sigma_max -> sigma_min, "noise"
# meaning the setting's noise std; rho_k = lam max(noise, SIGMA_FLOOR)^2 / sigma_k^2) with the
# shipped pretrained.drunet("small"), from x0 = reg_initial_estimate. 3 images, 256x256:
#   deblur, 49 -> noise, --iterations 8,16 --lam 0.23,0.5,1.0:
#     it lam   k2_2.55 k2_7.65 k3_2.55 k3_7.65 k5_2.55 k5_7.65 k7_2.55 k7_7.65
#     8  0.23  26.671  25.656  25.899  25.024  25.742  24.855  25.079  24.343
#     8  0.5   27.342  25.997  26.072  24.980  25.820  24.821  25.043  24.191
#     8  1     27.247  25.700  25.882  24.688  25.640  24.571  24.854  23.929
#     16 0.23  26.908  25.743  25.972  25.021  25.742  24.834  25.100  24.319
#     16 0.5   27.360  26.028  26.111  25.006  25.805  24.825  25.078  24.178
#     16 1     27.250  25.728  25.926  24.712  25.639  24.589  24.891  23.921
#   Kept 8 iterations, lam 0.5 (the SUPPA deblurring value; the best mean over the settings but
#   for 16 iterations, +0.02 dB at twice the cost).
#   keep0.2 / keep0.1, sigma_max 49 (noiseless: rho sits at the SIGMA_FLOOR, observed pixels are
#   kept as observed): lam 0.23, 12 / 24 / 48 iterations -> 2.55: 17.689 / 15.119, 20.652 /
#   17.240, 22.923 / 20.815; -> 5: 18.483 / 15.637, 22.150 / 18.420, 23.359 / 21.804; -> 10:
#   19.899 / 16.539, 23.743 / 20.423, 23.634 / 22.055; -> 20: 24 it 24.007 / 22.058, 48 it 23.773
#   / 21.958; lam 100: 24 it -> 20 24.022 / 22.079, 48 it -> 10 23.810 / 22.124; lam 1e4 at most
#   22.755 / 21.111. Kept 24 iterations, lam 0.23, 49 -> 20. A Gaussian denoiser in ADMM only
#   ties TV on these sparse masks.
#   x2 (bicubic 26.850), sigma_max 49: lam 0.23, 8 / 16 / 32 iterations -> noise 27.759 / 27.869 /
#   27.428 (25 -> noise: 27.737 / 27.766); -> 5: 16 27.796, 32 27.481; lam 1, -> noise: 16 28.060,
#   32 27.763; -> 5: 16 28.133, 32 27.995. Kept 16 iterations, lam 1, 49 -> 5.
#   x2_suppa: the SUPPA protocol's tuned sr2 schedule (jaxrestore.protocols.suppa.PNP_PARAMS).
_PNP_DEBLUR = {"num_iters": 8, "lam": 0.5, "sigma_max": 49 / 255, "sigma_min": None}
PNP_PARAMS = {
    **{s: dict(_PNP_DEBLUR) for s in SETTINGS["deblur"]},
    "keep0.2": {"num_iters": 24, "lam": 0.23, "sigma_max": 49 / 255, "sigma_min": 20 / 255},
    "keep0.1": {"num_iters": 24, "lam": 0.23, "sigma_max": 49 / 255, "sigma_min": 20 / 255},
    "x2": {"num_iters": 16, "lam": 1.0, "sigma_max": 49 / 255, "sigma_min": 5 / 255},
    "x2_suppa": {"num_iters": 4, "lam": 0.23, "sigma_max": 25 / 255, "sigma_min": 10 / 255},
}

# PnP-GD with G (pnp_gd, Adam on x with learning rate mu, the dihedral cycle ensemble, from
# reg_initial_estimate). sigma_r is "sigma_scale" times the noise std for the noisy settings,
# "sigma_r" (absolute, [0, 1] scale) for the noiseless ones. Tuned for our CPU-trained joint G
# (runs/reg/cpu/reg_cpu.npz, 3000 steps) with --grid reg --model runs/reg/cpu/reg_cpu.npz, 2
# images; PSNR after 25 / 50 / 100 / 200 iterations of one run per (mu, sigma_r):
#   deblur, 192x192 (observed 22.601 / 21.082), k2_2.55 | k5_7.65:
#     mu 0.001 x0.5: 23.071 23.281 23.398 22.960 | 21.384 21.459 21.218 19.402
#     mu 0.001 x1:   23.076 23.294 23.305 21.254 | 21.418 21.507 21.145 18.722
#     mu 0.002 x0.5: 23.273 23.438 23.261 20.731 | 21.452 21.270 19.790 15.294
#     mu 0.002 x1:   23.286 23.417 22.115 16.679 | 21.512 21.246 19.145 14.437
#     mu 0.004 x0.5: 23.435 23.453 22.359 15.814 | 21.285 20.205 16.164 10.688
#     mu 0.004 x1:   23.446 22.959 18.326 11.578 | 21.300 19.654 15.116 10.218
#     (mu 0.004 x1 at 300 iterations: 9.385 | 8.663; mu 0.01 / 0.02 after 100: 12.066 / 9.309 on
#     k2_2.55.) Every run peaks early and then degrades: this G does not hold the iterate (it
#     falls to ~6-9 dB by 300 iterations, worse than Adam on the data term alone), so the tuned
#     value is an early stop: mu 0.002, x1, 25 iterations (mean 22.399, best with mu 0.001 x1 at
#     50, 22.400, at twice the cost).
#   keep0.2 | keep0.1, 128x128 (x0 = y + (1 - M) / 2), sigma_r x/255, 50 / 100 / 200 / 300:
#     mu 0.002 x1:  12.232 12.868 12.384 10.797 | 11.429 11.704 10.689 9.407
#     mu 0.002 x10: 12.207 12.803 12.168 10.606 | 11.415 11.655 10.574 9.314
#     mu 0.01 x1:   12.713  9.735  7.688  6.999 | 10.942  8.561  6.913 6.354
#     mu 0.03 x1:    9.048  7.211  6.402  6.176 |  8.015  6.534  5.876 5.688
#     (mu 0.01 / 0.03 x10 within 0.25 dB of x1.) Kept mu 0.002, 1/255, 100 iterations.
#   x2 (sigma x1) | x2_suppa (sigma_r 1/255), 192x192, 25 / 50 / 100 / 200:
#     mu 0.001: 25.531 25.581 24.628 20.301 | 25.609 25.618 25.621 23.967
#     mu 0.002: 25.597 25.154 21.416 15.177 | 25.616 25.632 25.621 21.279
#     mu 0.004: 25.455 22.984 16.450 10.641 | 25.628 25.648 25.612 17.915
#     (bicubic 25.249 | 25.558.) Kept mu 0.002, 25 iterations | mu 0.004, 50 iterations.
_REG_DEBLUR = {"mu": 0.002, "iterations": 25, "sigma_scale": 1.0}
_REG_INPAINT = {"mu": 0.002, "iterations": 100, "sigma_r": 1 / 255}
REG_PARAMS = {
    **{s: dict(_REG_DEBLUR) for s in SETTINGS["deblur"]},
    "keep0.2": dict(_REG_INPAINT),
    "keep0.1": dict(_REG_INPAINT),
    "x2": {"mu": 0.002, "iterations": 25, "sigma_scale": 1.0},
    "x2_suppa": {"mu": 0.004, "iterations": 50, "sigma_r": 1 / 255},
}

# The authors' values (PROTOCOLS.md section 3 / their scripts): 1500 Adam iterations, sigma_r the
# noise level, 1/255 for noiseless inpainting. x2_suppa is not their setting: it gets their SR
# rate with sigma_r = 2.55/255, their SR noise level.
AUTHORS_REG_PARAMS = {
    **{s: {"mu": 0.004, "iterations": 1500, "sigma_scale": 1.0} for s in SETTINGS["deblur"]},
    "keep0.2": {"mu": 0.01, "iterations": 1500, "sigma_r": 1 / 255},
    "keep0.1": {"mu": 0.01, "iterations": 1500, "sigma_r": 1 / 255},
    "x2": {"mu": 0.002, "iterations": 1500, "sigma_scale": 1.0},
    "x2_suppa": {"mu": 0.002, "iterations": 1500, "sigma_r": 2.55 / 255},
}
REG_PRESETS = {"tuned": REG_PARAMS, "authors": AUTHORS_REG_PARAMS}


def reg_settings(s, preset: str = "tuned", **overrides) -> dict:
    """The PnP-GD parameters ``{"mu", "iterations", "sigma_r"}`` of a setting (``sigma_r``
    resolved on the ``[0, 1]`` scale) from :data:`REG_PARAMS` (``preset="tuned"``) or
    :data:`AUTHORS_REG_PARAMS` (``"authors"``); ``overrides`` (``mu``, ``iterations``,
    ``sigma_r``, ``sigma_scale``; ``None`` ignored) replace them."""
    s = _as_setting(s)
    if preset not in REG_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; available: {', '.join(REG_PRESETS)}")
    bad = set(overrides) - {"mu", "iterations", "sigma_r", "sigma_scale"}
    if bad:
        raise ValueError(f"unknown PnP-GD parameter(s) {', '.join(sorted(bad))}")
    p = dict(REG_PRESETS[preset][s.name])
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if "sigma_r" in overrides or "sigma_scale" in overrides:
        p.pop("sigma_r", None), p.pop("sigma_scale", None)
    p.update(overrides)
    if "sigma_scale" in p and "sigma_r" not in p:
        if s.noise == 0:
            raise ValueError(f"setting {s.name} is noiseless: give sigma_r, not a multiple of the noise")
        p["sigma_r"] = p["sigma_scale"] * s.noise
    return {"mu": float(p["mu"]), "iterations": int(p["iterations"]), "sigma_r": float(p["sigma_r"])}


# ----------------------------------------------------------------------------------- methods


def _check_pairs(ys, ops):
    if len(ys) != len(ops):
        raise ValueError(f"got {len(ys)} observations and {len(ops)} operators")


def _x0(op, y):
    return jnp.clip(reg_initial_estimate(op, y), 0.0, 1.0)


@partial(jax.jit, static_argnames=("iterations",))
def _tv_one(op, y, lam, delta, iterations: int):
    base = projected_gradient(op, lam, delta)
    x0 = _x0(op, y)  # bicubic (SR), mid-grey holes (inpainting); convex: the limit is the same
    solver = Solver(lambda v: base.init(v)._replace(x=x0, z=x0), base.step)
    return run(solver, y, num_iters=iterations).x


def restore_tv(s, ys, ops, *, lam=None, delta=None, iterations=None) -> list[np.ndarray]:
    """Smoothed-TV reconstruction (FISTA projected gradient on ``1/2 ||A x - y||^2 + lam R(x)``
    over ``[0, 1]^n``, :func:`projected_gradient`) from ``clip(reg_initial_estimate)``; defaults
    from :data:`TV_PARAMS`."""
    s = _as_setting(s)
    _check_pairs(ys, ops)
    p = dict(TV_PARAMS[s.name])
    p.update({k: v for k, v in (("lam", lam), ("delta", delta), ("iterations", iterations)) if v is not None})
    return [np.asarray(_tv_one(op, jnp.asarray(y, jnp.float32), jnp.float32(p["lam"]), jnp.float32(p["delta"]),
                               int(p["iterations"]))) for y, op in zip(ys, ops)]


@jax.jit
def _bicubic_one(op, y):
    return reg_initial_estimate(op, y)


def restore_bicubic(s, ys, ops) -> list[np.ndarray]:
    """Bicubic upsampling of ``y`` (the SR ``x0``, :func:`~jaxrestore.solvers.admm.initial_estimate`:
    ``jax.image.resize``, Keys ``a = -0.5``; the authors start from OpenCV's ``a = -0.75``).
    Super-resolution settings only."""
    s = _as_setting(s)
    if s.task != "sr2":
        raise ValueError("method bicubic applies to super-resolution settings only (x2, x2_suppa)")
    _check_pairs(ys, ops)
    return [np.asarray(_bicubic_one(op, jnp.asarray(y, jnp.float32))) for y, op in zip(ys, ops)]


@partial(jax.jit, static_argnames=("denoiser", "num_iters"))
def _pnp_one(op, y, net_params, noise_sigma, sigma_max, sigma_min, lam, denoiser, num_iters: int):
    return pnp_admm(op, denoiser, net_params, y, noise_sigma=noise_sigma, num_iters=num_iters, sigma_max=sigma_max,
                    sigma_min=sigma_min, lam=lam, x0=lambda v: reg_initial_estimate(op, v))


def pnp_settings(s, **overrides) -> dict:
    """:data:`PNP_PARAMS` of a setting with ``overrides`` (``None`` ignored) and ``noise_sigma``
    (the setting's noise std unless given)."""
    s = _as_setting(s)
    p = dict(PNP_PARAMS[s.name])
    noise_sigma = overrides.pop("noise_sigma", None)
    bad = set(overrides) - set(p)
    if bad:
        raise ValueError(f"unknown PnP-ADMM parameter(s) {', '.join(sorted(bad))}")
    p.update({k: v for k, v in overrides.items() if v is not None})
    p["noise_sigma"] = s.noise if noise_sigma is None else noise_sigma
    return p


def restore_pnp(s, ys, ops, denoiser, net_params, **overrides) -> list[np.ndarray]:
    """PnP-ADMM with a fixed denoiser ``denoiser(net_params, v, sigma)`` (:func:`pnp_admm`,
    DPIR's schedule; :func:`pnp_settings`), from :func:`reg_initial_estimate`."""
    s = _as_setting(s)
    _check_pairs(ys, ops)
    p = pnp_settings(s, **overrides)
    smin = p["sigma_min"]
    return [np.asarray(_pnp_one(op, jnp.asarray(y, jnp.float32), net_params, jnp.float32(p["noise_sigma"]),
                                jnp.float32(p["sigma_max"]), None if smin is None else jnp.float32(smin),
                                jnp.float32(p["lam"]), denoiser=denoiser, num_iters=int(p["num_iters"])))
            for y, op in zip(ys, ops)]


@partial(jax.jit, static_argnames=("grad_fn", "iterations", "optimizer", "ensemble", "with_trace"))
def _reg_one(op, y, g_params, sigma_r, mu, gt, *, grad_fn, iterations: int, optimizer: str, ensemble,
             with_trace: bool = False):
    solver = pnp_gd(op, grad_fn, sigma=sigma_r, mu=mu, optimizer=optimizer, ensemble=ensemble)
    if not with_trace:
        return run(solver, y, g_params, num_iters=iterations).x

    def psnr(state):
        err = jnp.mean((jnp.clip(state.x, 0.0, 1.0) - gt) ** 2)
        return -10.0 * jnp.log10(err)

    return run(solver, y, g_params, num_iters=iterations, trace=psnr)[1]


def restore_reg(s, ys, ops, grad_fn, g_params, *, preset: str = "tuned", optimizer: str = "adam",
                ensemble: str | None = "cycle", **overrides) -> list[np.ndarray]:
    """PnP-GD with the learned regularising gradient ``grad_fn(g_params, x) = G(x)``
    (:func:`pnp_gd`: ``x <- x - mu (A^T (A x - y) + sigma_r^2 G(x))``, Adam on ``x`` by
    default, one dihedral transform per iteration), from :func:`reg_initial_estimate`, with
    :func:`reg_settings` (``preset="authors"``: the paper's 1500 iterations)."""
    s = _as_setting(s)
    _check_pairs(ys, ops)
    p = reg_settings(s, preset, **overrides)
    return [np.asarray(_reg_one(op, jnp.asarray(y, jnp.float32), g_params, jnp.float32(p["sigma_r"]),
                                jnp.float32(p["mu"]), None, grad_fn=grad_fn, iterations=p["iterations"],
                                optimizer=optimizer, ensemble=ensemble))
            for y, op in zip(ys, ops)]


def reg_psnr_trajectory(s, ys, ops, gts, grad_fn, g_params, *, optimizer: str = "adam", ensemble: str | None = "cycle",
                        preset: str = "tuned", **overrides) -> np.ndarray:
    """PSNR of ``clip(x_k)`` after every PnP-GD iteration, ``(len(ys), iterations)`` (float32
    on device; one run gives every iteration count of a tuning grid)."""
    s = _as_setting(s)
    _check_pairs(ys, ops)
    p = reg_settings(s, preset, **overrides)
    return np.stack([np.asarray(_reg_one(op, jnp.asarray(y, jnp.float32), g_params, jnp.float32(p["sigma_r"]),
                                         jnp.float32(p["mu"]), jnp.asarray(g, jnp.float32), grad_fn=grad_fn,
                                         iterations=p["iterations"], optimizer=optimizer, ensemble=ensemble,
                                         with_trace=True))
                     for y, op, g in zip(ys, ops, gts)])


def load_gradient(path):
    """``(grad_fn, params)`` of the ``G`` in a PnP-ReG weights file (:func:`load_pair`)."""
    from jaxrestore.models.reg import as_gradient, load_pair

    return as_gradient(load_pair(path).G)


__all__ = ["TASKS", "SETTINGS", "Setting", "setting", "task_settings", "load_kernels12", "setting_kernel",
           "setting_operator", "degrade", "cbsd68_names", "tuning_names", "load_images", "score", "TV_PARAMS",
           "PNP_PARAMS", "REG_PARAMS", "AUTHORS_REG_PARAMS", "reg_settings", "pnp_settings", "restore_tv",
           "restore_bicubic", "restore_pnp", "restore_reg", "reg_psnr_trajectory", "load_gradient"]
