"""`trt-restore train`: train the bundled small models, one component at a time, resumably.

``trt-restore train COMPONENT`` trains one network into ``--workdir`` (a checkpoint and a
loss log per component); running the same command again resumes it, and ``--steps``
and ``--minutes`` are totals over all runs. ``unet``, ``sr_unet`` and ``inn_latent`` work on
the latents of the trained ``vae``, so train it first, or name a packaged set whose ``vae``
they use with ``--vae-from`` (and package them with ``--keep-from`` that set). ``package`` writes the trained
networks as a model set (float16 safetensors, one diffusers folder per role) with a
model card per role; ``all`` trains every component in order and packages them.

Defaults per component (minutes on one CPU thread, batch, learning rate, crop):
see :data:`.registry.DEFAULTS`. ``all --minutes M`` shares M among the components in proportion
to their default times.

From Python, :func:`train` takes the same choices as values:
``train("vae", TrainSettings(workdir=Path("work"), steps=100))``.
"""

from __future__ import annotations

import shlex
import os
from dataclasses import dataclass, field
from pathlib import Path

from trt_restore.errors import UserError

from .registry import COMPONENTS, DEFAULTS, LATENT_COMPONENTS

ACTIONS = (*COMPONENTS, "all", "package")
ARCHITECTURES = ("small", "tiny")
DEFAULT_WORKDIR = Path("trt-train")
DEFAULT_DATA = "train,skimage,sklearn"


@dataclass(frozen=True)
class TrainSettings:
    """What every component's run shares; a None leaves the value to the component's default."""

    workdir: Path = DEFAULT_WORKDIR
    """Checkpoints and loss logs, one of each per component."""
    steps: int | None = None
    """Step budget, total over resumed runs (default: none)."""
    batch_size: int | None = None
    """Crops per step."""
    lr: float | None = None
    """AdamW learning rate."""
    crop: int | None = None
    """Training crop size in pixels."""
    bank_size: int | None = None
    """Crops cut once and drawn from at every step (default: the latent UNets' :data:`.diffusion.BANK_SIZE`,
    fresh crops for the others); only the diffusion UNets use a bank."""
    vae_from: Path | None = None
    """Latent components: train on the latents of this packaged model set's ``vae`` instead of the work
    folder's (then package with ``--keep-from`` that set)."""
    arch: str = "small"
    """Network size, one of :data:`ARCHITECTURES`: small (bundled) or tiny (smoke tests)."""
    data: str = DEFAULT_DATA
    """Comma-separated image sources (see :func:`.data.training_files`)."""
    device: str = "auto"
    """auto (a GPU when there is one), cpu, cuda or cuda:N."""
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    """CPU threads for torch, at least 1 (default: every core); recorded in the model card."""
    seed: int = 0
    """Seed of every random draw."""
    ema_decay: float = 0.999
    """Decay of the weight average that is saved."""
    log_every: int = 50
    """Steps per loss-log line."""


def _device(name: str):
    from trt_restore.runtime.device import resolve_device

    return resolve_device(None if name == "auto" else name)


def _task(component: str, settings: TrainSettings, sources: list[str], crop: int, batch: int):
    """The :class:`~.loop.TrainingTask` of ``component``."""
    if component == "vae":
        from .autoencoder import AutoencoderTask

        return AutoencoderTask(sources, settings.arch, crop)
    if component in ("inn_pixel", "inn_latent"):
        from .inn import INNTask

        return INNTask(component.removeprefix("inn_"), settings.workdir, sources, settings.arch, crop, vae_from=settings.vae_from)
    from .diffusion import BANK_SIZE, LatentDiffusionTask, PixelDiffusionTask, SRDiffusionTask

    if component == "pixel_unet":
        return PixelDiffusionTask(sources, settings.arch, crop, bank_size=settings.bank_size)
    latent_task = LatentDiffusionTask if component == "unet" else SRDiffusionTask
    bank = settings.bank_size
    if bank is None:
        bank = BANK_SIZE if settings.steps is None else min(BANK_SIZE, settings.steps * batch)  # no more crops than a run draws
    return latent_task(settings.workdir, sources, settings.arch, crop, bank_size=bank, vae_from=settings.vae_from)


def _command(component: str, settings: TrainSettings, minutes: float | None, batch: int, lr: float, crop: int, device) -> str:
    """The canonical command line of a run, for the model card."""
    words = ["trt-restore", "train", component]
    if minutes is not None:
        words += ["--minutes", f"{minutes:g}"]
    if settings.steps is not None:
        words += ["--steps", str(settings.steps)]
    words += ["--batch-size", str(batch), "--lr", f"{lr:g}", "--crop", str(crop), "--arch", settings.arch, "--data", settings.data]
    if settings.bank_size is not None:
        words += ["--bank-size", str(settings.bank_size)]
    if settings.vae_from is not None:
        words += ["--vae-from", str(settings.vae_from)]
    words += ["--device", str(device), "--threads", str(settings.threads)]
    return shlex.join(words)


def train_component(component: str, settings: TrainSettings, minutes: float | None):
    """Train (or resume) one component with the per-component defaults where ``settings`` leaves them open;
    returns its :class:`~.loop.TrainingRun`. ``minutes`` is the time budget, total over resumed runs
    (None: the component's default, unless ``settings.steps`` bounds the run)."""
    from .loop import RunOptions, TrainingRun

    defaults = DEFAULTS[component]
    batch = settings.batch_size or defaults.batch_size
    lr = settings.lr or defaults.lr
    crop = settings.crop or defaults.crop
    if minutes is None and settings.steps is None:
        minutes = defaults.minutes
    sources = [source.strip() for source in settings.data.split(",") if source.strip()]
    device = _device(settings.device)
    options = RunOptions(
        workdir=settings.workdir,
        steps=settings.steps,
        minutes=minutes,
        batch_size=batch,
        lr=lr,
        seed=settings.seed,
        device=device,
        ema_decay=settings.ema_decay,
        log_every=settings.log_every,
        command=_command(component, settings, minutes, batch, lr, crop, device),
    )
    run = TrainingRun(_task(component, settings, sources, crop, batch), options)
    if run.resume():
        print(f"{component}: resuming at step {run.step} ({run.elapsed / 60:.1f} min trained)", flush=True)
    run.train()
    return run


def _package(workdir: Path, out: Path | None, keep_from: Path | None = None) -> None:
    from .package import package_models

    written = package_models(workdir, out, keep_from)
    print(f"wrote the model set to {written}", flush=True)


def train(
    action: str,
    settings: TrainSettings = TrainSettings(),
    *,
    minutes: float | None = None,
    out: Path | None = None,
    keep_from: Path | None = None,
) -> None:
    """Train one component, train ``all`` of them in order and package them, or ``package`` the trained set.

    Args:
        action: one of :data:`ACTIONS`: a component of :data:`.registry.COMPONENTS`, ``all`` or ``package``.
        settings: what every component's run shares; ``all`` refuses a batch size, learning rate or crop.
        minutes: time budget, total over resumed runs; ``all`` shares it among the components in
            proportion to their default times (None: each component's default).
        out: ``package`` and ``all``: the model-set folder to write (None: the package's ``models/``).
        keep_from: ``package``: the packaged set whose networks fill the components the work
            folder has not trained (None: the package's ``models/``).
    """
    if action not in ACTIONS:
        raise UserError(f"unknown component '{action}'; choose one of: {', '.join(ACTIONS)}")
    if settings.threads < 1:
        raise UserError(f"--threads must be at least 1, got {settings.threads}")
    if settings.vae_from is not None and action not in LATENT_COMPONENTS:
        raise UserError(f"--vae-from applies to {', '.join(LATENT_COMPONENTS)} only, not to '{action}'")
    import torch

    torch.set_num_threads(settings.threads)
    if action == "package":
        _package(settings.workdir, out, keep_from)
    elif action == "all":
        if any(value is not None for value in (settings.batch_size, settings.lr, settings.crop)):
            raise UserError("'train all' uses each component's own --batch-size, --lr and --crop; train components one by one to set them")
        total = sum(d.minutes for d in DEFAULTS.values())
        for component in COMPONENTS:
            share = None if minutes is None else minutes * DEFAULTS[component].minutes / total
            train_component(component, settings, share)
        _package(settings.workdir, out)
    else:
        train_component(action, settings, minutes)
