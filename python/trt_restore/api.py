"""The Python API: load a method's engines and restore one image.

``restore(image, method=..., task=..., sigma=...)`` builds the degradation operator for
the image, pads the canvas to the networks' size multiple (the padding is unobserved,
see :class:`~trt_restore.operators.padded.PaddedOperator`), runs the method's loop on the
chosen backend and crops the result.
"""

from __future__ import annotations

import copy
import math
import re
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch

from .errors import UserError
from .image_types import as_batch, as_caller_type
from .methods import (
    BACKENDS,
    DEFAULT_METHOD,
    METHODS,
    Backend,
    InferencePrecision,
    NoiseSource,
    components_for,
)
from .noise_level import NoiseLevel, noise_level_of
from .operators import Operator, make_operator
from .operators.padded import PaddedOperator
from .pipelines import Models, Pipeline, pipeline_class
from .pipelines.base import StepCallback, settings_for_task

DEFAULT_MODEL_SET = "bundled"
DEFAULT_TILES = {"torch": 512, "onnxruntime": 256, "openvino": 256}
"""Tile (image pixels) of each backend's engines when none is given, from the memory of one tile:
a larger image runs on overlapping tiles, so that memory stays bounded. onnxruntime holds the
attention matrices of the VAE's mid-block (and their gradients, in the decoder VJP) in full, which
grow with the square of the tile's pixel count: reld peaks at 12 GB on 512-pixel tiles, 2 GB on
256-pixel ones; torch's attention needs no such matrices (1.8 GB on 512-pixel tiles). OpenVINO runs
the same graphs, the decoder VJP's explicit attention matrices included."""
ONNX_BACKENDS = ("onnxruntime", "openvino")
"""Backends that run the components as exported ONNX graphs."""


def load_models(
    method: str | None = None,
    *,
    engine: str | Path | None = None,
    model_set: str | Path = DEFAULT_MODEL_SET,
    vae: str | Path | None = None,
    backend: Backend = "auto",
    device: str | torch.device | None = None,
    image_size: tuple[int, int] = (64, 64),
    scale: int = 1,
    threads: int | None = None,
    adapt: bool = False,
    tile: int | None = None,
    precision: InferencePrecision | None = None,
) -> tuple[str, Models]:
    """The method and its engines: from a ``.plan`` bundle, or from a model set on torch or onnxruntime.

    ``image_size`` (the restored image's size) and the task's SR ``scale`` matter only to
    graphs with static shapes (the decoder VJP), which are exported for the padded canvas
    (at most a tile).
    ``adapt`` keeps a trainable copy of the INN. ``tile`` (image pixels) runs the networks
    on overlapping tiles for larger images: by default the backend's :data:`DEFAULT_TILES`,
    or a bundle's profile maximum. ``precision`` is the openvino backend's arithmetic.

    Args:
        method: one of :data:`METHODS` (None: the bundle's method, else ``reld``).
        engine: a ``.plan`` bundle made by ``trt-restore build`` (None: the networks of ``model_set``).
        model_set: ``bundled``, ``tiny`` or a model-set folder; unused with ``engine``.
        vae: an autoencoder folder or hub id in place of the model set's, of the same latent
            geometry and scale (:func:`~trt_restore.export.model_sets.with_vae`); unused with ``engine``.
        backend: ``auto`` (the bundle's backend, else torch), ``torch``, ``onnxruntime``, ``openvino`` (Intel and
            AMD CPUs), or ``tensorrt`` (needs ``engine``).
        device: where the engines run, e.g. ``cpu`` or ``cuda:0`` (None: the current CUDA device, else the CPU).
        image_size: (H, W) of the restored image, before padding.
        scale: the task's super-resolution factor (:func:`sr_factor`), ≥ 1.
        threads: CPU threads of each onnxruntime session or OpenVINO model (None: the runtime's choice);
            unused by the other backends.
        adapt: also load a trainable copy of the INN, for the INDIGO methods' ``adapt`` setting.
        tile: side in image pixels of the overlapping tiles (None: the default above).
        precision: the openvino backend's ``fp32``, ``bf16`` or ``auto`` (bf16 where the CPU computes it
            natively); None: a bundle's precision, else ``auto``. Other backends take only None.

    Loaded once, the engines serve many :func:`restore` calls (here the tiny random models):

    >>> import torch
    >>> from trt_restore.api import load_models, restore
    >>> method, models = load_models("ddrm", model_set="tiny", backend="torch")
    >>> method, sorted(models.engines)
    ('ddrm', ['pixel_unet'])
    >>> restore(torch.rand(2, 3, 8, 8), method, task="sr2", models=models, config={"steps": 2}).shape
    torch.Size([2, 3, 16, 16])
    """
    if backend not in BACKENDS:
        raise UserError(f"unknown backend '{backend}'; choose one of: {', '.join(BACKENDS)}")
    if engine is not None:
        return _models_from_bundle(method, engine, backend, device, threads, tile, precision)
    if precision is not None and backend != "openvino":
        raise UserError(f"a precision ('{precision}') applies to the openvino backend; drop it or use --backend openvino")
    method = method or DEFAULT_METHOD
    components_for(method)
    if backend == "tensorrt":
        raise UserError(
            "the tensorrt backend runs built engines: make a bundle with `trt-restore build` and pass --engine"
        )
    from .export.model_sets import load_model_set

    models = load_model_set(model_set, vae=vae)
    wrappers = {name: models.wrapper(name, method, group_stats=True) for name in components_for(method)}
    tile = backend_tile(backend, tile)
    if backend in ONNX_BACKENDS:
        multiple = math.lcm(scale, *(w.spec.multiple for w in wrappers.values()))
        canvas = padded_size(image_size, multiple)
        options = {name: {"threads": threads} for name in wrappers}
        if backend == "openvino":
            from .runtime.openvino_backend import component_precision

            for name in wrappers:
                options[name]["precision"] = component_precision(precision or "auto", method, name)
        engines = _onnx_engines(wrappers, (min(canvas[0], tile), min(canvas[1], tile)), backend, options)
    else:
        from .runtime.torch_backend import TorchEngine

        engines = {name: TorchEngine(w, w.spec, device) for name, w in wrappers.items()}
    trainable = {}
    if adapt:
        inn_role = "inn_latent" if method == "indigo-latent" else "inn_pixel"
        trainable["inn"] = copy.deepcopy(models.network(inn_role)).to(next(iter(engines.values())).device)
    return method, Models(tiled(engines, tile), trainable, settings=models.settings.get(method))


def backend_tile(backend: str, tile: int | None) -> int:
    """``tile``, or the backend's default (:data:`DEFAULT_TILES`; torch's for the backends it lacks)."""
    return DEFAULT_TILES[backend if backend in ONNX_BACKENDS else "torch"] if tile is None else tile


def tiled(engines: dict, tile: int | None, largest: dict[str, int] | None = None) -> dict:
    """Engines wrapped to run on overlapping tiles where the image exceeds ``tile`` (a latent
    UNet's: :func:`latent_unet_tile`, at most its ``largest`` accepted side) or the graph is static.

    The decoder uses the decoder VJP's tiles when that graph is static, so that the VJP stays
    the exact adjoint of the tiled decoder (at the decoder's whole-image GroupNorm statistics,
    which the VJP takes from it).
    """
    from .runtime.tiling import TiledEngine, statistics_passes, tile_for, whole

    largest = largest or {}
    plans = {name: tile_for(engine.spec, latent_unet_tile(engine.spec, tile, largest.get(name))) for name, engine in engines.items()}
    if "decoder" in engines and plans.get("decoder_vjp"):
        plans["decoder"] = plans["decoder_vjp"]
    wrapped = {
        name: whole(engine)
        if plans[name] is None
        else TiledEngine(engine, *plans[name], statistics_passes=statistics_passes(engine.spec))
        for name, engine in engines.items()
        if name != "decoder_vjp"
    }
    if "decoder_vjp" in engines:
        vjp, decoder = engines["decoder_vjp"], wrapped.get("decoder")
        source = decoder if isinstance(decoder, TiledEngine) and decoder.group_stats else None
        wrapped["decoder_vjp"] = whole(vjp) if plans["decoder_vjp"] is None else TiledEngine(
            vjp, *plans["decoder_vjp"], adjoint_of="cotangent", statistics_from=source
        )
    return {name: wrapped[name] for name in engines}


def latent_unet_tile(spec, tile: int | None, largest: int | None = None) -> int | None:
    """The tile (image pixels) of a component: ``tile``, except for a latent UNet, whose tiles span
    ``tile // 2`` latent pixels (``f/2`` times the image side; at most ``largest``), so that its
    self-attention sees a whole latent up to that size; its attention at half the latent's
    resolution then holds at most ``(tile/4)²`` tokens, 4096 on onnxruntime's 256-pixel tiles."""
    downsample = spec.meta.get("downsample", 1)
    if tile is None or "scheduler" not in spec.meta or downsample == 1:
        return tile
    wider = max(tile, tile // 2 * downsample // spec.multiple * spec.multiple)
    return wider if largest is None else max(tile, min(wider, largest // spec.multiple * spec.multiple))


def _models_from_bundle(method, engine, backend, device, threads, tile, precision) -> tuple[str, Models]:
    from .runtime.bundle import Bundle

    bundle = Bundle.open(engine)
    if method is not None and method != bundle.method:
        raise UserError(f"{engine} holds a '{bundle.method}' bundle, not '{method}'; drop --method or pick another bundle")
    if backend not in ("auto", bundle.backend):
        raise UserError(f"{engine} holds {bundle.backend} graphs; use --backend {bundle.backend} or auto")
    if precision is not None and bundle.backend != "openvino":
        raise UserError(f"{engine} holds {bundle.backend} engines, whose precision is set when they are built; drop the precision")
    options = {"threads": threads} if bundle.backend in ONNX_BACKENDS else {}
    if bundle.backend == "openvino" and precision is not None:
        options["precision"] = precision
    largest = {name: min(min(p.max["H"], p.max["W"]) for p in bundle.profiles(name)) for name in bundle.components}
    tile = min(largest.values()) if tile is None else tile
    return bundle.method, Models(tiled(bundle.engines(device, **options), tile, largest), settings=bundle.settings)


def _onnx_engines(wrappers, image_size, backend, options):
    """Export each component to ONNX in a temporary folder and load it on ``backend`` (onnxruntime or openvino)
    with its ``options`` (by component name)."""
    from .export.onnx_export import export_component

    if backend == "openvino":
        from .runtime.openvino_backend import OpenVinoEngine as engine_class
    else:
        from .runtime.onnxruntime_backend import OnnxRuntimeEngine as engine_class
    engines = {}
    with tempfile.TemporaryDirectory(prefix="trt-restore-") as folder:
        for name, wrapper in wrappers.items():
            path = Path(folder) / f"{name}.onnx"
            spec = export_component(wrapper, path, example_size=image_size)
            engines[name] = engine_class(path, spec, **options[name])
    return engines


def sr_factor(task: str) -> int:
    """The upscaling factor of a task: N for ``srN…``, else 1."""
    match = re.match(r"^sr(\d+)", task)
    return int(match.group(1)) if match else 1


def size_multiple(models: Models) -> int:
    """The factor that the image height and width must be divisible by for every engine."""
    return math.lcm(*(engine.spec.multiple for engine in models.engines.values()))


def padded_size(size: tuple[int, int], multiple: int) -> tuple[int, int]:
    """``size`` rounded up to ``multiple``."""
    return (math.ceil(size[0] / multiple) * multiple, math.ceil(size[1] / multiple) * multiple)


def canvas_operator(operator: Operator, multiple: int) -> Operator:
    """``operator`` on a canvas padded up to ``multiple`` (unchanged when it already fits)."""
    padded = padded_size(operator.size, multiple)
    return operator if padded == operator.size else PaddedOperator(operator, padded)


def restore(
    image: Any,
    method: str | None = None,
    task: str = "sr4",
    sigma: NoiseLevel | None = None,
    engine: str | Path | None = None,
    backend: Backend = "auto",
    seed: int = 0,
    *,
    noise: NoiseSource = "host",
    model_set: str | Path = DEFAULT_MODEL_SET,
    vae: str | Path | None = None,
    device: str | torch.device | None = None,
    config: dict | None = None,
    task_params: dict | None = None,
    callback: StepCallback | None = None,
    models: Models | None = None,
    tile: int | None = None,
    precision: InferencePrecision | None = None,
) -> Any:
    """Restore one degraded image (or a batch) and return it as the caller holds it: the same type,
    dtype, range and layout (see :mod:`trt_restore.image_types`; a file path gives a tensor).

    ``image`` is the observation y (the low-resolution image for SR). ``method`` is taken
    from the bundle when ``engine`` is given, else defaults to ``reld``. ``config`` sets the
    method's hyperparameters by name; ``task_params`` the operator's (kernel, mask, …).
    ``models`` reuses engines already loaded with :func:`load_models`; ``tile`` runs the
    networks on overlapping tiles of that many pixels (see :mod:`trt_restore.runtime.tiling`).
    ``noise`` is where the sampling noise is drawn: ``host`` gives the same result for a seed
    on every device; ``device`` saves the host's generator, which bounds large images on a GPU.
    Engines that ``restore`` loads itself are closed before it returns; ``models`` stay open.

    Args:
        image: the observation y: a file path, a PIL image, an (H, W[, C]) array (integers scaled
            by their maximum, floats in [0, 1]) or a (C, H, W) or (B, C, H, W) tensor in [0, 1].
        method: one of :data:`METHODS` (None: the bundle's method with ``engine``, else ``reld``).
        task: the degradation: denoise, srN, srN-bicubic, srN-gauss, deblur-gauss, deblur-uniform,
            deblur-motion, inpaint or colorize.
        sigma: noise std of y on the [0, 1] scale (25/255 is "noise level 25"), ≥ 0; ``"auto"`` estimates
            it from each image (:func:`~trt_restore.noise_level.estimate_noise_sigma`); None: 0, except
            for denoise, which needs it.
        engine: a ``.plan`` bundle made by ``trt-restore build`` (None: the networks of ``model_set``).
        backend: ``auto`` (the bundle's backend, else torch), ``torch``, ``onnxruntime``, ``openvino``, or ``tensorrt``
            (needs ``engine``).
        seed: seed of the sampling noise; the same seed gives the same result.
        noise: ``host`` or ``device``, as above.
        model_set: ``bundled``, ``tiny`` or a model-set folder; unused with ``engine`` or ``models``.
        vae: an autoencoder folder in place of the model set's (as :func:`load_models`); unused with ``engine`` or ``models``.
        device: where the engines run, e.g. ``cpu`` or ``cuda:0`` (None: the current CUDA device, else the CPU).
        config: the method's settings by name (e.g. ``{"steps": 50}``), over its per-task defaults.
        task_params: the operator's options, as :func:`~trt_restore.operators.make_operator` takes them.
        callback: ``callback(step, total_steps, estimate)`` after each step; ``estimate()`` is in [0, 1].
        models: engines from :func:`load_models`, reused as they are (``engine``, ``backend``,
            ``model_set``, ``device``, ``tile`` and ``precision`` are then unused).
        tile: side in image pixels of the overlapping tiles (None: the backend's or bundle's default).
        precision: the openvino backend's arithmetic, as :func:`load_models` takes it.

    Returns:
        The restored image, of the input's type, dtype, range and layout (a tensor for a path), batched
        as the input was, s times its height and width for the task's SR factor s; with the input's
        channels, but 3 for colorize.

    On the tiny random models, in two steps:

    >>> import torch
    >>> from trt_restore import restore
    >>> y = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    >>> x = restore(y, "ddrm", task="sr2", sigma=0.05, backend="torch", model_set="tiny", config={"steps": 2})
    >>> x.shape, x.dtype, 0 <= float(x.min()) <= float(x.max()) <= 1
    (torch.Size([3, 32, 32]), torch.float32, True)
    """
    y, kind = as_batch(image)
    if y.shape[-2] < 2 or y.shape[-1] < 2:
        raise UserError(f"the image is {y.shape[-1]}×{y.shape[-2]} pixels; restoration needs at least 2×2")
    sigmas = [noise_level_of(task, sigma, observed) for observed in y]
    scale = sr_factor(task)
    size = (y.shape[-2] * scale, y.shape[-1] * scale)
    with ExitStack() as loaded_here:
        if models is None:
            wants_adapt = bool((config or {}).get("adapt"))
            method, models = load_models(
                method, engine=engine, model_set=model_set, vae=vae, backend=backend, device=device, adapt=wants_adapt,
                image_size=size, scale=scale, tile=tile, precision=precision,
            )
            loaded_here.enter_context(models)
        method = method or DEFAULT_METHOD
        pipeline = _pipeline(method, task, models, config)
        channels = 3 if task == "colorize" else y.shape[1]
        gray_to_rgb = channels == 1 and _model_channels(models) == 3
        if gray_to_rgb:
            y, channels = y.expand(-1, 3, -1, -1), 3
        operator = make_operator(task, size=size, channels=channels, **(task_params or {}))
        operator = canvas_operator(operator, math.lcm(size_multiple(models), scale))
        y = y.to(next(iter(models.engines.values())).device)
        if len(set(sigmas)) == 1:
            out = pipeline(y, operator, sigmas[0], seed=seed, noise=noise, callback=callback)
        else:  # estimated per image: each image restored with its own σ
            out = torch.cat([
                pipeline(y[i : i + 1], operator, sigmas[i], seed=seed, noise=noise, callback=callback)
                for i in range(len(sigmas))
            ])
    out = out[..., : size[0], : size[1]]
    if gray_to_rgb:
        out = out.mean(dim=1, keepdim=True)
    return as_caller_type(out, kind)


def _pipeline(method: str, task: str, models: Models, config: dict | None) -> Pipeline:
    """The method's pipeline with its Config: the defaults, the task's own defaults, the model set's
    settings for the method (and for the task, :func:`~.pipelines.base.settings_for_task`), then ``config``."""
    cls = pipeline_class(method)
    settings = cls.Config()
    model_set = settings_for_task(models.settings, task)
    for source, values in (("task", cls.task_defaults(task)), ("model set", model_set), ("caller", config or {})):
        for key, value in values.items():
            if not hasattr(settings, key):
                origin = " (a setting of the model set)" if source == "model set" else ""
                raise UserError(f"method '{method}' has no setting '{key}'{origin}")
            setattr(settings, key, value)
    return cls(models, settings)


def _model_channels(models: Models) -> int:
    """Image channels the networks expect (3 for the RGB model sets)."""
    for name in ("encoder", "pixel_unet"):
        if name in models.engines:
            return int(models.engines[name].spec.inputs[0].shape[1])
    return 3


__all__ = ["BACKENDS", "METHODS", "load_models", "restore"]
