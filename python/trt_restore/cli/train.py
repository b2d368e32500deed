"""``trt-restore train``: train the bundled small models (:mod:`trt_restore.train`)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from ..train.command import ACTIONS, ARCHITECTURES, TrainSettings, train
from .parser import Subcommand

DEFAULT_SETTINGS = TrainSettings()


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the arguments of ``trt-restore train``."""
    parser.add_argument("component", choices=ACTIONS, help="network to train, 'all' of them, or 'package' the trained set")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_SETTINGS.workdir, help="checkpoints and loss logs (default: ./trt-train)")
    parser.add_argument("--out", type=Path, help="package/all: model-set folder to write (default: the package's models/)")
    parser.add_argument("--keep-from", type=Path, metavar="FOLDER", help="package: the model set whose networks (and cards) fill the components the work folder has not trained (default: the package's models/)")
    parser.add_argument("--minutes", type=float, help="training-time budget, total over resumed runs (default: per component)")
    parser.add_argument("--steps", type=int, help="step budget, total over resumed runs (default: none)")
    parser.add_argument("--batch-size", type=int, help="crops per step (default: per component)")
    parser.add_argument("--lr", type=float, help="AdamW learning rate (default: per component)")
    parser.add_argument("--crop", type=int, help="training crop size in pixels (default: per component)")
    parser.add_argument("--bank-size", type=int, help="diffusion UNets: crops cut once and drawn from at every step (default: 2048 for the latent UNets, fresh crops for the pixel UNet)")
    parser.add_argument("--vae-from", type=Path, metavar="FOLDER", help="unet, sr_unet, inn_latent: train on the latents of this model set's vae instead of the work folder's (package them with --keep-from FOLDER)")
    parser.add_argument("--arch", choices=ARCHITECTURES, default=DEFAULT_SETTINGS.arch, help="network size: small (bundled) or tiny (smoke tests)")
    parser.add_argument("--data", default=DEFAULT_SETTINGS.data, help=f"comma-separated image sources: train (= bsds400 + csunhays80 + curban100 + train400), any one of those, skimage, sklearn (default: {DEFAULT_SETTINGS.data})")
    parser.add_argument("--device", default=DEFAULT_SETTINGS.device, help="auto (a GPU when there is one), cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=DEFAULT_SETTINGS.threads, help="CPU threads for torch (default: every core)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SETTINGS.seed, help="seed of every random draw (default 0)")
    parser.add_argument("--ema-decay", type=float, default=DEFAULT_SETTINGS.ema_decay, help="decay of the weight average that is saved (default 0.999)")
    parser.add_argument("--log-every", type=int, default=DEFAULT_SETTINGS.log_every, help="steps per loss-log line (default 50)")


def run_train(args: argparse.Namespace) -> int:
    """Handler of ``trt-restore train``; each field of :class:`TrainSettings` is the flag of that name."""
    settings = TrainSettings(**{field.name: getattr(args, field.name) for field in dataclasses.fields(TrainSettings)})
    train(args.component, settings, minutes=args.minutes, out=args.out, keep_from=args.keep_from)
    return 0


COMMAND = Subcommand("train", "train the bundled small models", add_train_arguments, run_train)
