"""What a benchmark run measures: the tasks, the variants (backend × precision) and the checked settings."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ..methods import BACKENDS as ENGINE_BACKENDS


@dataclass(frozen=True)
class TaskSetting:
    """A benchmark task: the operator's name and parameters and the noise level σ on the [0, 1] scale."""

    task: str
    sigma: float
    params: dict = field(default_factory=dict)

    @property
    def scale(self) -> int:
        from ..api import sr_factor

        return sr_factor(self.task)


TASK_SETTINGS: dict[str, TaskSetting] = {
    "denoise": TaskSetting("denoise", 25 / 255),
    "sr4-bicubic": TaskSetting("sr4-bicubic", 0.0),
    "deblur-gauss": TaskSetting("deblur-gauss", 0.01, {"kernel_sigma": 1.6, "kernel_size": 25}),
}
"""The tasks of the README's quality table."""


BACKENDS = tuple(backend for backend in ENGINE_BACKENDS if backend != "auto")
PRECISIONS = ("fp32", "fp16", "bf16")
BF16_BACKENDS = ("torch", "openvino")
"""Backends with a bf16 variant: torch under bf16 autocast, OpenVINO's bf16 inference precision."""
REFERENCE = "torch"
DEFAULT_VARIANTS = ("torch", "onnxruntime", "torch-fp16", "onnxruntime-fp16", "tensorrt", "tensorrt-fp16")
SECTIONS = ("quality", "speed")


@dataclass(frozen=True)
class Variant:
    """A backend at a precision, named ``backend`` (fp32), ``backend-fp16`` or ``backend-bf16``."""

    backend: str
    precision: str = "fp32"

    @property
    def name(self) -> str:
        return self.backend if self.precision == "fp32" else f"{self.backend}-{self.precision}"

    @classmethod
    def parse(cls, text: str) -> Variant:
        backend, _, precision = text.partition("-")
        if backend not in BACKENDS or (precision or "fp32") not in PRECISIONS:
            raise UserError(
                f"unknown variant '{text}'; use a backend ({', '.join(BACKENDS)}) with an optional -fp16 or -bf16, "
                "e.g. onnxruntime-fp16 or openvino-bf16"
            )
        return cls(backend, precision or "fp32")

    def unavailable_reason(self) -> str | None:
        """Why this machine cannot run the variant, or None."""
        import torch

        if self.precision == "bf16" and self.backend not in BF16_BACKENDS:
            return f"bf16 runs on {' and '.join(BF16_BACKENDS)} only"
        if self.backend == "openvino":
            from ..runtime.openvino_backend import INSTALL_HINT, openvino_version

            if self.precision == "fp16":
                return "OpenVINO runs the fp32 graphs, in fp32 or bf16 on the CPU; use openvino or openvino-bf16"
            return None if openvino_version() else f"OpenVINO is not installed; {INSTALL_HINT}"
        if self.backend != "tensorrt":
            return None
        from ..runtime.trt_loader import installed_flavours

        if not torch.cuda.is_available():
            return "TensorRT runs engines on an NVIDIA GPU, and this machine has none (torch.cuda.is_available() is False)"
        if not installed_flavours():
            return "no TensorRT is installed; `pip install tensorrt` (or tensorrt-rtx)"
        return None


@dataclass
class BenchConfig:
    """Everything a run depends on, checked; recorded in the results as ``settings``."""

    methods: list[str]
    model_set: str
    variants: list[Variant]
    sections: list[str]
    threads: int
    size: int
    batches: list[int]
    repeats: int
    warmup: int
    steps: int | None
    speed_task: str
    tasks: list[str]
    datasets: list[str]
    limit: int | None
    quality_variant: Variant
    crop: int
    lpips_weights: Path | None
    lpips_net: str
    scaling: bool
    scaling_sizes: list[int]
    scaling_batches: list[int]
    tile: int | None
    seed: int
    memory_limit_gb: float | None = None
    noise: str = "host"

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        data["variants"] = [v.name for v in self.variants]
        data["quality_variant"] = self.quality_variant.name
        data["lpips_weights"] = str(self.lpips_weights) if self.lpips_weights else None
        return data

    @property
    def profile_sizes(self) -> list[int]:
        return [self.size, *(self.scaling_sizes if self.scaling else ())]

    @property
    def profile_batches(self) -> list[int]:
        return [*self.batches, *(self.scaling_batches if self.scaling else ())]


def steps_override(method: str, steps: int | None) -> dict | None:
    """``{"steps": n}`` or ``{"iterations": n}``, whichever the method's Config has."""
    if steps is None:
        return None
    from ..pipelines import pipeline_class
    from ..pipelines.base import config_fields

    names = {f.name for f in config_fields(pipeline_class(method).Config)}
    return {"steps" if "steps" in names else "iterations": steps}
