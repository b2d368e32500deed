"""`trt-restore train`: train the bundled small models, one component at a time, resumably.

``trt-restore train COMPONENT`` trains one network into ``--workdir`` (a checkpoint and a
loss log per component); running the same command again resumes it, and ``--steps``
and ``--minutes`` are totals over all runs. ``unet``, ``sr_unet`` and ``inn_latent`` work on
the latents of the trained ``vae``, so train it first. ``package`` writes the trained
networks as a model set (float16 safetensors, one diffusers folder per role) with a
model card per role; ``all`` trains every component in order and packages them.

Defaults per component (minutes on one CPU thread, batch, learning rate, crop):
see :data:`.registry.DEFAULTS`. ``all --minutes M`` shares M among the components in proportion
to their default times.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from trt_restore.errors import UserError

from .registry import COMPONENTS, DEFAULTS

ACTIONS = (*COMPONENTS, "all", "package")
ARCHITECTURES = ("small", "tiny")
DEFAULT_WORKDIR = Path("trt-train")
DEFAULT_DATA = "train,skimage,sklearn"
SUMMARY = "train the bundled small models, one component at a time (resumable)"


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the arguments of ``trt-restore train``."""
    parser.add_argument("component", choices=ACTIONS, help="network to train, 'all' of them, or 'package' the trained set")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="checkpoints and loss logs (default: ./trt-train)")
    parser.add_argument("--out", type=Path, help="package/all: model-set folder to write (default: the package's models/)")
    parser.add_argument("--minutes", type=float, help="training-time budget, total over resumed runs (default: per component)")
    parser.add_argument("--steps", type=int, help="step budget, total over resumed runs (default: none)")
    parser.add_argument("--batch-size", type=int, help="crops per step (default: per component)")
    parser.add_argument("--lr", type=float, help="AdamW learning rate (default: per component)")
    parser.add_argument("--crop", type=int, help="training crop size in pixels (default: per component)")
    parser.add_argument("--arch", choices=ARCHITECTURES, default="small", help="network size: small (bundled) or tiny (smoke tests)")
    parser.add_argument("--data", default=DEFAULT_DATA, help=f"comma-separated image sources: train (= bsds400 + csunhays80 + curban100 + train400), any one of those, skimage, sklearn (default: {DEFAULT_DATA})")
    parser.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    parser.add_argument("--ema-decay", type=float, default=0.999, help="decay of the weight average that is saved (default 0.999)")
    parser.add_argument("--log-every", type=int, default=50, help="steps per loss-log line (default 50)")


def _device(name: str):
    from trt_restore.runtime.device import resolve_device

    return resolve_device(None if name == "auto" else name)


def _task(component: str, args: argparse.Namespace, sources: list[str], crop: int, batch: int):
    """The :class:`~.loop.TrainingTask` of ``component``."""
    if component == "vae":
        from .autoencoder import AutoencoderTask

        return AutoencoderTask(sources, args.arch, crop)
    if component in ("inn_pixel", "inn_latent"):
        from .inn import INNTask

        return INNTask(component.removeprefix("inn_"), args.workdir, sources, args.arch, crop)
    from .diffusion import BANK_SIZE, LatentDiffusionTask, PixelDiffusionTask, SRDiffusionTask

    if component == "pixel_unet":
        return PixelDiffusionTask(sources, args.arch, crop)
    latent_task = LatentDiffusionTask if component == "unet" else SRDiffusionTask
    bank = BANK_SIZE if args.steps is None else min(BANK_SIZE, args.steps * batch)  # no more crops than a run draws
    return latent_task(args.workdir, sources, args.arch, crop, bank_size=bank)


def _command(component: str, args: argparse.Namespace, minutes: float | None, batch: int, lr: float, crop: int) -> str:
    """The canonical command line of a run, for the model card."""
    words = ["trt-restore", "train", component]
    if minutes is not None:
        words += ["--minutes", f"{minutes:g}"]
    if args.steps is not None:
        words += ["--steps", str(args.steps)]
    words += ["--batch-size", str(batch), "--lr", f"{lr:g}", "--crop", str(crop), "--arch", args.arch, "--data", args.data]
    if args.threads is not None:
        words += ["--threads", str(args.threads)]
    return shlex.join(words)


def train_component(component: str, args: argparse.Namespace, minutes: float | None):
    """Train (or resume) one component with the per-component defaults where ``args`` leaves them open;
    returns its :class:`~.loop.TrainingRun`."""
    from .loop import RunOptions, TrainingRun

    defaults = DEFAULTS[component]
    batch = args.batch_size or defaults.batch_size
    lr = args.lr or defaults.lr
    crop = args.crop or defaults.crop
    if minutes is None and args.steps is None:
        minutes = defaults.minutes
    sources = [source.strip() for source in args.data.split(",") if source.strip()]
    options = RunOptions(
        workdir=args.workdir,
        steps=args.steps,
        minutes=minutes,
        batch_size=batch,
        lr=lr,
        seed=args.seed,
        device=_device(args.device),
        ema_decay=args.ema_decay,
        log_every=args.log_every,
        command=_command(component, args, minutes, batch, lr, crop),
    )
    run = TrainingRun(_task(component, args, sources, crop, batch), options)
    if run.resume():
        print(f"{component}: resuming at step {run.step} ({run.elapsed / 60:.1f} min trained)", flush=True)
    run.train()
    return run


def _package(args: argparse.Namespace) -> None:
    from .package import package_models

    out = package_models(args.workdir, args.out)
    print(f"wrote the model set to {out}", flush=True)


def run_train(args: argparse.Namespace) -> int:
    """Handler of ``trt-restore train``."""
    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads must be at least 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    if args.component == "package":
        _package(args)
    elif args.component == "all":
        if any(value is not None for value in (args.batch_size, args.lr, args.crop)):
            raise UserError("'train all' uses each component's own --batch-size, --lr and --crop; train components one by one to set them")
        total = sum(d.minutes for d in DEFAULTS.values())
        for component in COMPONENTS:
            share = None if args.minutes is None else args.minutes * DEFAULTS[component].minutes / total
            train_component(component, args, share)
        _package(args)
    else:
        train_component(args.component, args, args.minutes)
    return 0


def train_main(argv: Sequence[str] | None = None) -> int:
    """``trt-restore train`` as a standalone program (``python -m trt_restore.train.command``)."""
    parser = argparse.ArgumentParser(prog="trt-restore train", description=SUMMARY)
    add_train_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_train(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code


if __name__ == "__main__":
    raise SystemExit(train_main())
