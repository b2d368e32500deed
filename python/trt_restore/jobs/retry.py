"""One image restored on a cache's engines, retried on ever smaller tiles while memory runs out."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..errors import UserError

if TYPE_CHECKING:
    import torch

    from ..io import Image
    from ..pipelines import Models
    from ..pipelines.base import StepCallback
    from .engines import EngineCache
    from .request import RestoreRequest

log = logging.getLogger(__name__)


def restore_with_retry(
    request: RestoreRequest, image: Image, engines: EngineCache, callback: StepCallback
) -> torch.Tensor:
    """Restore one image; each time memory runs out, retry on tiles half the size of those that
    failed, which the rest of the batch keeps.

    The engines that ran out of memory are closed, and their memory given back, before the new
    ones load. When the tiles cannot shrink further (two size multiples of the networks), the
    failure is a :class:`UserError` that says what else to try.
    """
    size = request.output_size(image)
    restored = _run_unless_out_of_memory(request, image, engines.get(size), callback)
    while restored is None and (tile := engines.use_smaller_tiles(size)) is not None:
        free_cached_memory()
        log.warning(
            "out of memory restoring %s; retrying with --tile %d for it and the remaining images", image.path, tile
        )
        restored = _run_unless_out_of_memory(request, image, engines.get(size), callback)
    if restored is None:
        tried = f" with --tile {engines.tile}" if engines.tile else ""
        raise UserError(
            f"out of memory restoring {image.path}{tried}; pass a smaller --tile, use --device cpu, "
            "or free memory that other programs hold"
        )
    return restored


def _run_unless_out_of_memory(
    request: RestoreRequest, image: Image, models: Models, callback: StepCallback
) -> torch.Tensor | None:
    """The restored image, or None (with the GPU cache emptied) when memory ran out."""
    try:
        return request.run(image, models, callback)
    except (MemoryError, RuntimeError) as error:
        if not is_out_of_memory(error):
            raise
    free_cached_memory()
    return None


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` says that host or device memory ran out (torch, onnxruntime or TensorRT)."""
    return isinstance(error, MemoryError) or (isinstance(error, RuntimeError) and "out of memory" in str(error).lower())


def free_cached_memory() -> None:
    """Give the GPU memory that torch caches back to the device, before a retry."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
