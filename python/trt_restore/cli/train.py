"""``trt-restore train``: train the bundled small models (:mod:`trt_restore.train`)."""

from __future__ import annotations

from ..train.command import add_train_arguments, run_train
from .parser import Subcommand

COMMAND = Subcommand("train", "train the bundled small models", add_train_arguments, run_train)
