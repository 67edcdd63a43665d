"""``jaxrestore train CONFIG``: the config's ``kind`` picks the trainer (irestnet, denoiser,
suppa, reg, golf); every trainer runs on the one training loop (:mod:`jaxrestore.train.loop`),
with checkpoints, exact resume, ``--train-dir``/``--val-dir`` and data parallelism."""

from __future__ import annotations

import argparse

from jaxrestore.cli.common import say


def add_parser(sub) -> None:
    t = sub.add_parser(
        "train", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="train iRestNet, the DRUNet denoiser, PnP-ADMM (SUPPA), PnP-ReG or the Golf Optimizer from a YAML config",
        description="Train from a YAML config; its 'kind' key picks the trainer: irestnet (default), denoiser\n"
                    "(configs/denoiser/: DRUNet Gaussian denoising, exports drunet_<name>.npz), suppa\n"
                    "(configs/suppa/: PnP-ADMM end to end in mode explicit, deq, jfb or suppa, exports\n"
                    "suppa_<mode>_<task>.npz) or reg (configs/reg/: PnP-ReG's regularising gradient G with its\n"
                    "denoiser, exports reg_<name>.npz) or golf (configs/golf/: the Golf Optimizer's G2 then G1 on\n"
                    "blind camera-shake pairs, exports golf_<name>.npz). Bundled names: cpu-gaussA, denoiser/small,\n"
                    "suppa/suppa-deblur, reg/cpu, golf/cpu, ... Every trainer runs on the same loop: --train-dir/--val-dir\n"
                    "replace the data folders, --devices N trains data-parallel on N devices.\n\n"
                    "iRestNet is trained with the paper's staged recipe: layer 0 alone, then the greedy layers one at a\n"
                    "time (each initialised from the previous one), then the last layers and the post-processing\n"
                    "network end to end. CONFIG is a YAML file (configs/irestnet/<preset>.yaml) or the name of a\n"
                    "bundled config (gaussA, cpu-gaussA, ...).\n\n"
                    "The output folder receives metrics.jsonl, checkpoints/ (periodic and best-validation orbax\n"
                    "checkpoints) and, once training completes, irestnet_<preset>.npz: the best-validation model\n"
                    "(jaxrestore.models.irestnet_io.load_weights). A folder that already holds checkpoints is\n"
                    "resumed from its latest one, exactly where the interrupted run was.")
    t.add_argument("config", metavar="CONFIG", help="training config: YAML path or bundled config name")
    t.add_argument("--out", metavar="DIR", help="output folder (default: the config's out_dir)")
    t.add_argument("--resume", action="store_true",
                   help="require a checkpoint to continue from (without it, one is used when present)")
    t.add_argument("--max-steps", type=int, metavar="N",
                   help="stop once the global step reaches N (a checkpoint is written; continue with --resume)")
    t.add_argument("--train-dir", metavar="DIR", action="append",
                   help="training images (repeat for several folders): replaces the config's data.train")
    t.add_argument("--val-dir", metavar="DIR", help="validation images: replaces the config's data.val")
    t.add_argument("--log-every", type=int, metavar="N",
                   help="write a metrics.jsonl record every N steps (default: the config's schedule.log_every)")
    t.add_argument("--devices", type=int, metavar="N",
                   help="data-parallel over the first N visible devices (default: the config's mesh.devices, else all); "
                        "the batch size must divide by N. Multi-host: set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES "
                        "and JAX_PROCESS_ID (see docs/training.md)")
    t.set_defaults(run=run)


def _report_training(args, result, what: str) -> None:
    minutes = result.elapsed / 60.0
    print(f"\nsteps {result.steps} of {result.total_steps}; training time {minutes:.1f} min (all sessions)")
    if result.best_step is not None:
        print(f"best validation: {what} at step {result.best_step}")
    print(f"metrics: {result.metrics}; checkpoints: {result.out_dir / 'checkpoints'}")
    if result.weights is not None:
        print(f"weights: {result.weights}")
    elif result.steps < result.total_steps:
        print(f"stopped before the end: continue with 'jaxrestore train {args.config} --out {result.out_dir} --resume'")


def _train_denoiser(raw, path, args, kw):
    from jaxrestore.train.denoiser import denoiser_config_from_dict, train_denoiser

    c = denoiser_config_from_dict(raw, source=str(path), out_dir=args.out)
    say(f"DRUNet denoiser: channels {list(c.model.channels)} x {c.model.blocks} blocks, crop {c.crop}, batch {c.batch_size}, "
         f"{c.steps} steps, sigma = {c.sigma_max:g} u^{c.sigma_power:g} / 255 (u uniform in [0, 1]); output {c.out_dir}")
    result = train_denoiser(c, **kw)
    return result, "n/a" if result.best_val_psnr is None else f"mean PSNR {result.best_val_psnr:.2f} dB over sigma {list(c.val_sigmas)}"


def _train_suppa(raw, path, args, kw):
    from jaxrestore.train.suppa import suppa_config_from_dict, train_suppa

    c = suppa_config_from_dict(raw, source=str(path), out_dir=args.out)
    say(f"PnP-ADMM {c.mode} training on {c.task}: denoiser {c.denoiser}, crop {c.crop}, batch {c.batch_size}, "
         f"{c.steps} steps; output {c.out_dir}")
    result = train_suppa(c, **kw)
    return result, "n/a" if result.best_val_psnr is None else f"PSNR {result.best_val_psnr:.2f} dB"


def _train_irestnet(raw, path, args, kw):
    from jaxrestore.train import build_phases, config_from_dict, train_irestnet

    config = config_from_dict({k: v for k, v in raw.items() if k != "kind"}, source=str(path), out_dir=args.out)
    m, s = config.model, config.schedule
    total = build_phases(config)[-1].end
    lpp = f"Lpp {m.lpp_features} features ({m.lpp_residual} residual)" if m.use_lpp else "no Lpp"
    say(f"iRestNet {config.preset}: K {m.num_layers} (greedy {s.greedy_layers}), {lpp}, crop {config.data.crop}, "
         f"batch {s.batch_size}, {total} steps; output {config.out_dir}")
    result = train_irestnet(config, **kw)
    what = "n/a" if result.best_val_loss is None else f"loss {result.best_val_loss:.4f}, SSIM {result.best_val_ssim:.4f} (final stage)"
    return result, what


def _train_reg(raw, path, args, kw):
    from jaxrestore.train.reg import reg_config_from_dict, train_reg

    c = reg_config_from_dict(raw, source=str(path), out_dir=args.out)
    g = c.g
    say(f"PnP-ReG: G {list(g.channels)} x {g.blocks} blocks with denoiser {c.denoiser} "
         f"({'frozen' if c.freeze_denoiser else 'trained jointly'}), crop {c.crop}, batch {c.batch_size}, {c.steps} steps; "
         f"output {c.out_dir}")
    result = train_reg(c, **kw)
    fields = result.best_fields or {}
    return result, ("n/a" if "val_identity" not in fields else
                    f"identity residual {fields['val_identity']:.4f}, denoiser PSNR {fields['val_psnr']:.2f} dB")


def _train_golf(raw, path, args, kw):
    from jaxrestore.train.golf import golf_config_from_dict, train_golf

    c = golf_config_from_dict(raw, source=str(path), out_dir=args.out)
    data = f"pairs {c.pairs}" if c.pairs is not None else f"synthetic camera shake (kernels {c.kernel_size}x{c.kernel_size})"
    say(f"Golf Optimizer: G1 width {c.g1.width}, G2 width {c.g2.width}, K {c.iterations}, {data}, crop {c.crop}, "
         f"batch {c.batch_size}, {c.g2_steps} G2 + {c.g1_steps} G1 steps, perceptual weight {c.perceptual:g}; output {c.out_dir}")
    result = train_golf(c, **kw)
    fields = result.best_fields or {}
    return result, ("n/a" if "val_psnr" not in fields else
                    f"golf-{c.iterations} PSNR {fields['val_psnr']:.2f} dB (blurred {fields['val_psnr_blurred']:.2f})")


_TRAINERS = {"denoiser": _train_denoiser, "suppa": _train_suppa, "irestnet": _train_irestnet, "reg": _train_reg,
             "golf": _train_golf}


def run(args) -> int:
    from jaxrestore.train.config_reader import apply_overrides, read_config  # training glue: loaded on demand
    from jaxrestore.train.parallel import initialize_distributed

    initialize_distributed()  # before anything touches a device; only when the JAX_* variables are set
    if args.max_steps is not None and args.max_steps < 1:
        raise ValueError(f"--max-steps must be >= 1, got {args.max_steps}")
    path, kind, raw = read_config(args.config)
    raw = apply_overrides(raw, train_dirs=args.train_dir, val_dir=args.val_dir, log_every=args.log_every, devices=args.devices)
    kw = dict(resume=True if args.resume else None, max_steps=args.max_steps)
    result, what = _TRAINERS[kind](raw, path, args, kw)
    _report_training(args, result, what)
    return 0
