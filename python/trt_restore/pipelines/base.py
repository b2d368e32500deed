"""What every method's loop shares: the engines it calls, seeded noise, progress and hyperparameters.

A pipeline never sees an ``nn.Module``: it calls :class:`~trt_restore.runtime.engine.Engine`
objects by component name, so one loop runs on torch, onnxruntime and TensorRT alike.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ..errors import UserError
from ..methods import NOISE_SOURCES, NoiseSource
from ..operators import Operator
from ..runtime.graphs import capturing
from .schedule import NoiseSchedule

log = logging.getLogger(__name__)

StepCallback = Callable[[int, int, Callable[[], torch.Tensor]], None]
"""``callback(step, total_steps, estimate)``; ``estimate()`` computes the current image estimate
in [0, 1] only when the callback asks for it (e.g. every k steps for ``--save-intermediates``)."""


class Models:
    """The component engines a method calls, by name.

    Everything a loop needs to know about the networks comes from the components' specs:
    the noise schedule of a diffusion component (``spec.meta["scheduler"]``), the
    autoencoder's downsampling factor and latent channels, the INN's coarse factor.
    ``trainable`` holds torch modules a method may fine-tune (the INN for ``--adapt``);
    ``settings`` the model set's own settings for the method (:attr:`ModelSet.settings`).
    As a context manager, the models close their engines at the end of the block.
    """

    def __init__(
        self,
        engines: Mapping[str, Any],
        trainable: Mapping[str, Any] | None = None,
        fallbacks: Mapping[str, Any] | None = None,
        settings: Mapping[str, Any] | None = None,
    ):
        self.engines = dict(engines)
        self.trainable = dict(trainable or {})
        self.settings = dict(settings or {})
        self.fallbacks = dict(fallbacks or {})  # fp32 engines that rerun a component whose output is not finite
        self.timings: dict[str, list[float]] = defaultdict(list)
        self._finite: torch.Tensor | None = None

    def close(self) -> None:
        """Close every engine, the fp32 fallbacks too (idempotent); a component called afterwards is a UserError."""
        for engine in (*self.engines.values(), *self.fallbacks.values()):
            engine.close()

    def __enter__(self) -> Models:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def engine(self, component: str):
        try:
            return self.engines[component]
        except KeyError:
            raise UserError(
                f"these models have no '{component}' component; build or load a model set that includes it"
            ) from None

    def statistics_of(self, component: str, **inputs: torch.Tensor):
        """A block in which a tiled ``component`` runs at the whole-image statistics of ``inputs``
        (:meth:`~trt_restore.runtime.engine.Engine.statistics_of`)."""
        return self.engine(component).statistics_of(**inputs)

    def call(self, component: str, **inputs: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        """Run one component; returns its only output, or the dict of outputs when it has several.

        A NaN or Inf in the outputs is caught at once: the component reruns on its fp32
        fallback engine with a warning when there is one, else the run stops with an error.
        Under :meth:`deferred_checks` the check only updates the device flag instead.
        """
        engine = self.engine(component)
        start = time.perf_counter()
        outputs = engine(**inputs)
        if self._finite is not None:
            for out in outputs.values():
                self._finite.logical_and_(torch.isfinite(out).all())
        elif not all(bool(torch.isfinite(out).all()) for out in outputs.values()):
            outputs = self._rerun_in_fp32(component, inputs)
        if not capturing():
            self.timings[component].append(time.perf_counter() - start)
        return next(iter(outputs.values())) if len(outputs) == 1 else outputs

    @contextmanager
    def deferred_checks(self, finite: torch.Tensor):
        """Within: :meth:`call` does not wait for the GPU to check outputs; it ANDs their finiteness into ``finite``.

        That keeps the calls free of host synchronisation, so CUDA graphs can record them
        (see :class:`~trt_restore.runtime.graphs.LoopGraphs`, which reads the flag after the loop).
        """
        self._finite = finite
        try:
            yield
        finally:
            self._finite = None

    def _rerun_in_fp32(self, component: str, inputs) -> dict[str, torch.Tensor]:
        fallback = self.fallbacks.get(component)
        if fallback is None:
            raise UserError(
                f"component '{component}' produced NaN or Inf; if it runs in fp16, rebuild with --precision fp32"
            )
        log.warning("component '%s' produced NaN or Inf; rerunning it in fp32", component)
        outputs = fallback(**inputs)
        if not all(bool(torch.isfinite(out).all()) for out in outputs.values()):
            raise UserError(f"component '{component}' produced NaN or Inf in fp32 too; check the input image and the model")
        return outputs

    def schedule(self, component: str) -> NoiseSchedule:
        """The noise schedule the diffusion component was trained with."""
        return NoiseSchedule.from_config(self.engine(component).spec.meta["scheduler"])

    @property
    def latent_factor(self) -> int:
        """Spatial downsampling factor of the autoencoder."""
        return int(self.engine("decoder").spec.meta["downsample"])

    @property
    def latent_channels(self) -> int:
        return int(self.engine("decoder").spec.inputs[0].shape[1])

    @property
    def inn_factor(self) -> int:
        """Downsampling factor 2^L between the INN's input and its coarse part."""
        return int(self.engine("inn_forward").spec.meta["factor"])


class Noise:
    """Seeded Gaussian noise, drawn where ``source`` says.

    ``host`` (the default) draws on the CPU, so that a seed gives the same numbers on every
    device. ``device`` draws on the device that uses them (on a GPU, CUDA's Philox generator):
    another stream of numbers, but no host work, which matters on a GPU at large sizes, where
    the CPU generator (tens of millions of samples per second) outlasts the networks.
    """

    def __init__(
        self, seed: int, device: torch.device, dtype: torch.dtype = torch.float32, source: NoiseSource = "host"
    ):
        if source not in NOISE_SOURCES:
            raise UserError(f"unknown noise source '{source}'; choose one of: {', '.join(NOISE_SOURCES)}")
        self.generator = torch.Generator(device if source == "device" else "cpu").manual_seed(seed)
        self.device = device
        self.dtype = dtype

    def randn(self, *shape: int) -> torch.Tensor:
        sample = torch.randn(*shape, generator=self.generator, dtype=torch.float32, device=self.generator.device)
        return sample.to(device=self.device, dtype=self.dtype)

    def like(self, x: torch.Tensor) -> torch.Tensor:
        return self.randn(*x.shape)


@contextmanager
def stage(timings: dict[str, list[float]], name: str):
    """Time a pipeline stage (data step, SVD projection, …) for ``--verbose`` reports."""
    start = time.perf_counter()
    yield
    if not capturing():
        timings[name].append(time.perf_counter() - start)


@dataclass(frozen=True)
class TaskDefault:
    """Settings that replace a method's ``Config`` defaults on the tasks that ``pattern`` matches."""

    pattern: str  # a regular expression over the whole task name
    label: str  # the tasks in words, for help texts and the README
    settings: Mapping[str, Any]

    def settings_text(self, names: Sequence[str] | None = None) -> str:
        """``name value, …`` over ``names`` (default: every setting)."""
        return settings_text({name: value for name, value in self.settings.items() if names is None or name in names})


PER_TASK = "tasks"
"""The key, in a model set's settings for a method, of its per-task settings: ``{pattern: settings}``,
a regular expression over the whole task name to the settings that apply where it matches."""


def first_match(rows: Iterable[tuple[str, Mapping[str, Any]]], task: str) -> dict[str, Any]:
    """The settings of the first ``(pattern, settings)`` row whose pattern matches the whole task
    name (none: empty): the one rule of the methods' task defaults and a model set's per-task settings."""
    return next((dict(values) for pattern, values in rows if re.fullmatch(pattern, task)), {})


def settings_for_task(settings: Mapping[str, Any], task: str) -> dict[str, Any]:
    """A model set's settings for a method on ``task``: the method-wide ones, then those of the
    first :data:`PER_TASK` pattern that matches the task."""
    chosen = {name: value for name, value in settings.items() if name != PER_TASK}
    return {**chosen, **first_match(settings.get(PER_TASK, {}).items(), task)}


def settings_text(settings: Mapping[str, Any]) -> str:
    """Method settings as people write them: ``name value, …`` (``eta 0.95, steps 50``), and a model
    set's per-task ones after them as ``(on PATTERN: name value)``."""
    text = ", ".join(f"{name} {_plain(value)}" for name, value in settings.items() if name != PER_TASK)
    per_task = [f"(on {pattern}: {settings_text(values)})" for pattern, values in settings.get(PER_TASK, {}).items()]
    return " ".join(filter(None, [text, *per_task]))


def _plain(value: Any) -> str:
    """A setting's value as people write it (0.95, 50, vjp)."""
    return format(value, "g") if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


class Pipeline:
    """Base class of the methods. Subclasses set ``name``, ``components``, ``Config`` and implement :meth:`run`.

    ``Config`` is a dataclass of the method's hyperparameters; each field becomes a
    command-line flag, with the field's ``metadata["help"]`` as its help text.
    """

    name: ClassVar[str]
    Config: ClassVar[type]

    def __init__(self, models: Models, config: Any = None):
        self.models = models
        self.config = config if config is not None else self.Config()

    @classmethod
    def supports(cls, operator: Operator) -> bool:
        """Whether this method can solve the operator's inverse problem."""
        return True

    TASK_DEFAULTS: ClassVar[tuple[TaskDefault, ...]] = ()
    """The method's per-task defaults: the one table that the flags' help and the README show."""

    @classmethod
    def task_defaults(cls, task: str) -> dict[str, Any]:
        """Settings whose default differs for ``task``: the first :data:`TASK_DEFAULTS` row that matches
        (the Config's own defaults hold otherwise)."""
        return first_match(((row.pattern, row.settings) for row in cls.TASK_DEFAULTS), task)

    @classmethod
    def check_task(cls, operator: Operator) -> None:
        if not cls.supports(operator):
            raise UserError(f"method '{cls.name}' does not support task '{operator.task}'; {cls.task_hint()}")

    @classmethod
    def task_hint(cls) -> str:
        return "pick another method or task"

    def __call__(
        self,
        y: torch.Tensor,
        operator: Operator,
        sigma: float,
        *,
        seed: int = 0,
        noise: NoiseSource = "host",
        callback: StepCallback | None = None,
    ) -> torch.Tensor:
        """Restore ``x`` from ``y = A x + σ n``; y and the result are (B, C, H, W) in [0, 1].

        ``noise`` is where the sampling noise is drawn (:class:`Noise`).

        Args:
            y: the observation, (B, C, h, w) in [0, 1], shaped as ``operator.y_shape`` says (H/s × W/s for srN).
            operator: the degradation A at the restored size; the method must support its task.
            sigma: noise std of y on the [0, 1] scale (25/255 is "noise level 25"), ≥ 0.
            seed: seed of the sampling noise; the same seed gives the same result.
            noise: ``host`` (the same numbers on every device) or ``device`` (drawn where they are used).
            callback: ``callback(step, total_steps, estimate)`` after each step; ``estimate()`` is in [0, 1].
        """
        self.check_task(operator)
        sampling_noise = Noise(seed, y.device, y.dtype, noise)
        with torch.inference_mode():
            return self.run(y, operator, float(sigma), sampling_noise, callback).clamp(0, 1)

    def run(
        self, y: torch.Tensor, operator: Operator, sigma: float, noise: Noise, callback: StepCallback | None
    ) -> torch.Tensor:
        raise NotImplementedError


def pad_to(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``image`` extended at the bottom and right to ``size``: mirrored where it can be, else repeated."""
    extra_h, extra_w = size[0] - image.shape[-2], size[1] - image.shape[-1]
    if extra_h == 0 and extra_w == 0:
        return image
    mode = "reflect" if extra_h < image.shape[-2] and extra_w < image.shape[-1] else "replicate"
    return F.pad(image, (0, extra_w, 0, extra_h), mode=mode)


def config_fields(config_type: type) -> list[dataclasses.Field]:
    """The hyperparameter fields of a pipeline's ``Config`` dataclass."""
    return list(dataclasses.fields(config_type))


def hyper(default: Any, help: str) -> Any:
    """A ``Config`` field with a default and a help text for its command-line flag (typed by its annotation;
    a ``Literal`` limits the flag to its values)."""
    return dataclasses.field(default=default, metadata={"help": help})


def cuda_graphs_setting() -> Any:
    """The ``--cuda-graphs`` field of the methods whose loop step can be captured (see ``runtime/graphs.py``)."""
    return hyper(
        "auto",
        "auto: on a CUDA device with TensorRT or torch engines, replay the loop step as a CUDA graph "
        "(the same result as off, bit for bit); off: launch every kernel from the host",
    )
