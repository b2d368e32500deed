"""The models of each method on each variant, loaded once per run and size, with what loading cost."""

from __future__ import annotations

import gc
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .config import BenchConfig, Variant
from .machine import MemoryMeter, default_device

if TYPE_CHECKING:
    import torch

    from ..pipelines import Models


@dataclass
class Loaded:
    """A method's models on one variant, with what loading them cost."""

    models: Models
    seconds: float
    memory_mb: float | None

    @property
    def device(self) -> torch.device:
        return next(iter(self.models.engines.values())).device


class ModelCache:
    """Models per (method, variant, image size, SR scale), loaded on first use.

    fp32 on torch and onnxruntime, and OpenVINO in fp32 and bf16, load through
    :func:`trt_restore.api.load_models`; fp16 and TensorRT go the deployment way, exported
    and built into a ``.plan`` bundle (in a temporary folder) for the run's sizes and
    batches, then loaded from it; torch fp16 runs an fp16 copy of each component with the
    normalisations in fp32 and torch's fused attention, as torch eager would run it; torch
    bf16 runs the fp32 modules under ``torch.autocast("cpu", torch.bfloat16)``, what a
    careful user of torch on a CPU would try.
    """

    def __init__(self, config: BenchConfig):
        self.config = config
        self._loaded: dict[tuple, Loaded] = {}
        self._model_set = None

    def get(self, method: str, variant: Variant, size: int, scale: int) -> Loaded:
        key = (method, variant, size, scale)
        if key not in self._loaded:
            meter = MemoryMeter(default_device())
            start = time.perf_counter()
            with meter.growth() as memory:
                models = self._load(method, variant, size, scale)
            self._loaded[key] = Loaded(models, time.perf_counter() - start, memory.get("kept"))
        return self._loaded[key]

    def release(self, method: str) -> None:
        """Forget the method's models."""
        for key in [key for key in self._loaded if key[0] == method]:
            del self._loaded[key]
        gc.collect()

    @property
    def model_set(self):
        if self._model_set is None:
            from ..export.model_sets import load_model_set

            self._model_set = load_model_set(self.config.model_set)
        return self._model_set

    def _load(self, method: str, variant: Variant, size: int, scale: int) -> Models:
        from ..api import load_models

        cfg = self.config
        if variant.backend == "openvino" or (variant.precision == "fp32" and variant.backend != "tensorrt"):
            _, models = load_models(
                method, model_set=cfg.model_set, backend=variant.backend, image_size=(size, size), scale=scale,
                threads=cfg.threads, tile=cfg.tile, precision=variant.precision if variant.backend == "openvino" else None,
            )
            return models
        if variant.backend == "torch":
            return self._torch_reduced(method, variant.precision)
        return self._from_bundle(method, variant, size, scale)

    def _torch_reduced(self, method: str, precision: str) -> Models:
        """torch eager in fp16 (an fp16 copy with fp32 normalisations) or bf16 (autocast on the CPU)."""
        import torch

        from ..api import backend_tile, tiled
        from ..export.precision import HalfPrecision
        from ..methods import components_for
        from ..pipelines import Models
        from ..runtime.torch_backend import TorchEngine

        wrappers = {name: self.model_set.wrapper(name, method, group_stats=True) for name in components_for(method)}
        if precision == "bf16":
            engines = {name: TorchEngine(w, w.spec, "cpu", autocast=torch.bfloat16) for name, w in wrappers.items()}
        else:
            engines = {name: TorchEngine(HalfPrecision(w, fused_attention=True), w.spec) for name, w in wrappers.items()}
        return Models(tiled(engines, backend_tile("torch", self.config.tile)), settings=self.model_set.settings.get(method))

    def _from_bundle(self, method: str, variant: Variant, size: int, scale: int) -> Models:
        from ..api import load_models, padded_size
        from ..engine.bundle_writer import build_bundle
        from ..export.onnx_export import export_method
        from ..methods import components_for

        cfg = self.config
        multiple = math.lcm(scale, *(self.model_set.wrapper(c, method).spec.multiple for c in components_for(method)))
        canvas = padded_size((size, size), multiple)
        smallest, largest = min(64, *cfg.profile_sizes), max(cfg.profile_sizes)
        profile = ((smallest, smallest), canvas, padded_size((largest, largest), multiple))
        with tempfile.TemporaryDirectory(prefix="trt-restore-bench-") as folder:
            exported = export_method(method, self.model_set, folder, precision=variant.precision, example_size=canvas)
            bundle = build_bundle(
                method, exported, Path(folder) / f"{method}.plan", backend=variant.backend,
                precision=variant.precision, profile=profile, batch=(1, 1, max(cfg.profile_batches)),
                meta=self.model_set.meta, model_set=self.model_set.name,
            )
            _, models = load_models(method, engine=bundle, backend=variant.backend, threads=cfg.threads, tile=cfg.tile)
        return models
