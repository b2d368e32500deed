"""The resumable training loop shared by every bundled model.

A :class:`TrainingTask` says what one component is (its network, its data, its loss); a
:class:`TrainingRun` optimises it with AdamW (linear warm-up, gradient clipping) and
keeps an exponential moving average of the weights,

    θ̄ ← d θ̄ + (1 − d) θ,   d = min(ema_decay, (1 + k) / (10 + k)) at step k,

whose weights are the trained network. Every random draw (crops, noise, timesteps)
comes from one CPU generator, whose state the checkpoint keeps with the step counter,
the elapsed training time, the model, the EMA, the optimiser and the loss log, so a
resumed run continues exactly where the last checkpoint left it. ``steps`` and
``minutes`` are totals over all runs into the same work folder.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from diffusers.models.modeling_utils import ModelMixin

from trt_restore.errors import UserError
from trt_restore.export.models import NETWORK_CLASSES

CHECKPOINT = "checkpoint.pt"
LOSS_LOG = "losses.csv"


class TrainingTask(Protocol):
    """One component's training problem."""

    name: str

    def build_model(self) -> ModelMixin:
        """A freshly initialised network (diffusers ``ModelMixin`` with a config)."""

    def prepare(self, device: torch.device, generator: torch.Generator) -> None:
        """Load data and frozen helper networks onto ``device`` before the first step."""

    def loss(self, model: ModelMixin, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        """The scalar loss of one fresh batch and its named parts (for the log)."""

    def finalize(self, network: ModelMixin, generator: torch.Generator) -> None:
        """Last adjustments of the trained (EMA) network's config, e.g. a latent scale."""

    def describe(self) -> dict[str, Any]:
        """JSON-able facts for the model card (data, crop size, schedule, …)."""


@dataclass
class RunOptions:
    """How long and how to optimise; ``steps`` and ``minutes`` are totals across resumed runs."""

    workdir: Path
    steps: int | None = None
    minutes: float | None = None
    batch_size: int = 16
    lr: float = 2e-4
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    ema_decay: float = 0.999
    warmup: int = 100
    grad_clip: float = 1.0
    log_every: int = 50
    checkpoint_minutes: float = 2.0
    command: str = ""

    def __post_init__(self):
        if self.steps is None and self.minutes is None:
            raise UserError("give a training budget: --steps N, --minutes M or both")
        if (self.steps is not None and self.steps < 1) or (self.minutes is not None and not self.minutes > 0):
            raise UserError(f"the training budget must be positive, got steps={self.steps}, minutes={self.minutes}")
        if self.batch_size < 1 or not self.lr > 0:
            raise UserError(f"--batch-size must be >= 1 and --lr > 0, got {self.batch_size} and {self.lr}")


def device_name(device: torch.device) -> str:
    """``cpu``, or ``cuda`` with the GPU's model name (for the model card)."""
    return f"{device.type} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else device.type


def component_folder(workdir: Path, name: str) -> Path:
    return Path(workdir) / name


def read_checkpoint(workdir: Path, name: str) -> dict[str, Any] | None:
    """The checkpoint of component ``name`` in ``workdir``, or None when it has not been trained."""
    path = component_folder(workdir, name) / CHECKPOINT
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError) as error:
        raise UserError(f"cannot read {path} ({error}); delete it to start {name} again") from None


def trained_network(workdir: Path, name: str) -> ModelMixin:
    """The trained (EMA) network of component ``name``, in eval mode on the CPU."""
    checkpoint = read_checkpoint(workdir, name)
    if checkpoint is None:
        raise UserError(
            f"no trained {name} in {workdir}; run `trt-restore train {name} --workdir {workdir}` first"
        )
    network = NETWORK_CLASSES[checkpoint["class"]].from_config(checkpoint["network_config"])
    network.load_state_dict(checkpoint["ema"])
    return network.eval().requires_grad_(False)


def weights_digest(network: torch.nn.Module) -> str:
    """A short SHA-256 of the network's parameters and buffers (names, dtypes and values)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(network.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def latent_autoencoder(workdir: Path, vae_from: Path | None = None) -> ModelMixin:
    """The autoencoder whose latents a latent component trains on: the trained ``vae`` of ``workdir``, or
    with ``vae_from`` the ``vae`` of that packaged model set (as it loads: float32), in eval mode."""
    if vae_from is None:
        return trained_network(workdir, "vae")
    from trt_restore.export.model_sets import ModelSet

    return ModelSet.from_folder(vae_from).network("vae").eval().requires_grad_(False)


def _atomic_save(payload: dict, path: Path) -> None:
    """Write to a temporary name and rename, so an interrupted save keeps the previous checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    torch.save(payload, temporary)
    os.replace(temporary, path)


def _config(model: ModelMixin) -> dict:
    """The model's config as plain JSON values, every key explicit.

    diffusers lists the arguments that took their default in ``_use_default_values`` and
    ``from_config`` ignores those keys, which would undo a later ``register_to_config``
    (the autoencoder's measured latent scale): that list is dropped.
    """
    config = json.loads(json.dumps(dict(model.config)))
    config.pop("_use_default_values", None)
    return config


class TrainingRun:
    """Optimise ``task`` under ``options``; :meth:`resume` then :meth:`train`."""

    def __init__(self, task: TrainingTask, options: RunOptions, report: Callable[[str], None] = print):
        self.task = task
        self.options = options
        self.report = report
        self.folder = component_folder(options.workdir, task.name)
        self.model = task.build_model().to(options.device).train()
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=options.lr, weight_decay=0.0)
        self.generator = torch.Generator().manual_seed(options.seed)
        self.step = 0
        self.elapsed = 0.0
        self.history: list[dict[str, float]] = []

    @property
    def checkpoint_path(self) -> Path:
        return self.folder / CHECKPOINT

    def resume(self) -> bool:
        """Load the checkpoint in the work folder if there is one; returns whether it did."""
        checkpoint = read_checkpoint(self.options.workdir, self.task.name)
        if checkpoint is None:
            return False
        if checkpoint["architecture"] != _config(self.model):
            raise UserError(
                f"{self.checkpoint_path} holds a {self.task.name} of another architecture; "
                "pass the --arch it was trained with or use a new --workdir"
            )
        self.model.load_state_dict(checkpoint["model"])
        self.ema.load_state_dict(checkpoint["ema"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.generator.set_state(checkpoint["generator"])
        self.step, self.elapsed, self.history = checkpoint["step"], checkpoint["elapsed"], checkpoint["history"]
        return True

    def _done(self) -> bool:
        steps, minutes = self.options.steps, self.options.minutes
        return (steps is not None and self.step >= steps) or (minutes is not None and self.elapsed >= 60 * minutes)

    def _learning_rate(self) -> float:
        return self.options.lr * min(1.0, (self.step + 1) / max(self.options.warmup, 1))

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(self.options.ema_decay, (1 + self.step) / (10 + self.step))
        torch._foreach_lerp_(list(self.ema.parameters()), list(self.model.parameters()), 1 - decay)
        for averaged, current in zip(self.ema.buffers(), self.model.buffers()):
            averaged.copy_(current)

    def train_step(self) -> dict[str, float]:
        """One optimisation step; returns the loss and its parts."""
        for group in self.optimizer.param_groups:
            group["lr"] = self._learning_rate()
        loss, parts = self.task.loss(self.model, self.options.batch_size, self.generator)
        value = loss.item()
        if not math.isfinite(value):
            raise UserError(
                f"{self.task.name}: the loss became {value} at step {self.step}; lower --lr or resume from the last checkpoint"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.options.grad_clip)
        self.optimizer.step()
        self._update_ema()
        self.step += 1
        return {"loss": value, **parts}

    def train(self) -> None:
        """Run steps until the budget is spent, logging every ``log_every`` steps and checkpointing
        every ``checkpoint_minutes`` and at the end."""
        if self._done():
            self.report(f"{self.task.name}: already trained to step {self.step} ({self.elapsed / 60:.1f} min); nothing to do")
            return
        self.task.prepare(self.options.device, self.generator)
        window: list[dict[str, float]] = []
        last_save = time.perf_counter()
        while not self._done():
            start = time.perf_counter()
            window.append(self.train_step())
            self.elapsed += time.perf_counter() - start
            if len(window) == self.options.log_every or self._done():
                self._log(window)
                window = []
            if time.perf_counter() - last_save > 60 * self.options.checkpoint_minutes:
                self.save()
                last_save = time.perf_counter()
        self.task.finalize(self.ema, self.generator)
        self.save()
        self.report(f"{self.task.name}: saved step {self.step} to {self.checkpoint_path}")

    def _log(self, window: list[dict[str, float]]) -> None:
        means = {key: sum(entry[key] for entry in window) / len(window) for key in window[0]}
        record = {"step": self.step, "minutes": self.elapsed / 60, **means}
        self.history.append(record)
        path = self.folder / LOSS_LOG
        self.folder.mkdir(parents=True, exist_ok=True)
        new_file = not path.is_file()
        with path.open("a", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=list(record))
            if new_file:
                writer.writeheader()
            writer.writerow(record)
        parts = " ".join(f"{key} {value:.4g}" for key, value in means.items())
        self.report(f"{self.task.name} step {self.step} ({self.elapsed / 60:.1f} min): {parts}")

    def save(self) -> None:
        """Write the checkpoint (atomically)."""
        _atomic_save(
            {
                "step": self.step,
                "elapsed": self.elapsed,
                "history": self.history,
                "class": type(self.model).__name__,
                "architecture": _config(self.model),
                "network_config": _config(self.ema),
                "model": self.model.state_dict(),
                "ema": self.ema.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state(),
                "facts": {
                    **self.task.describe(),
                    "batch_size": self.options.batch_size,
                    "lr": self.options.lr,
                    "ema_decay": self.options.ema_decay,
                    "device": device_name(self.options.device),
                    "threads": torch.get_num_threads(),
                    "command": self.options.command,
                },
            },
            self.checkpoint_path,
        )


def final_losses(history: list[Mapping[str, float]]) -> dict[str, float]:
    """The last logged window's mean loss and parts (empty before the first log)."""
    if not history:
        return {}
    return {key: value for key, value in history[-1].items() if key not in ("step", "minutes")}

