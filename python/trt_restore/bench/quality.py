"""Quality: the cases of a data set, the trivial baselines and the per-image scores (PSNR, SSIM, LPIPS)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError
from .config import TaskSetting
from .images import dataset_label, dataset_paths, modcrop, observe

if TYPE_CHECKING:
    import torch


def baseline(y: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The trivial restoration: the degraded input itself, or its bicubic upsampling to ``size`` for SR; in [0, 1]."""
    import torch.nn.functional as F

    if tuple(y.shape[-2:]) != tuple(size):
        y = F.interpolate(y, size=size, mode="bicubic", align_corners=False)
    return y.clamp(0, 1)


def baseline_name(setting: TaskSetting) -> str:
    return "bicubic" if setting.scale > 1 else "degraded input"


class LPIPS:
    """LPIPS distance with weights from a local file (nothing is downloaded).

    The file is the full state dict of ``lpips.LPIPS(net=NET)`` (backbone and linear
    layers), e.g. written once with ``torch.save(lpips.LPIPS(net='alex').state_dict(), PATH)``.
    """

    def __init__(self, weights: Path, net: str = "alex"):
        import torch

        try:
            import lpips
        except ImportError as error:
            raise UserError(
                f"--lpips-weights needs the 'lpips' package, which is not installed ({error}); "
                "`pip install lpips`, or drop --lpips-weights"
            ) from None
        if not weights.is_file():
            raise UserError(f"LPIPS weights {weights} not found; pass the state dict of lpips.LPIPS(net='{net}')")
        self.model = lpips.LPIPS(net=net, pretrained=False, pnet_rand=True, verbose=False).eval()
        state = torch.load(weights, map_location="cpu", weights_only=True)
        missing, _ = self.model.load_state_dict(state, strict=False)
        if missing:
            raise UserError(
                f"{weights} lacks {len(missing)} of LPIPS({net})'s parameters (e.g. {missing[0]}); "
                f"save the full state dict of lpips.LPIPS(net='{net}')"
            )

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> float:
        import torch

        x, y = (t.expand(-1, 3, -1, -1) if t.shape[1] == 1 else t for t in (x, y))
        with torch.inference_mode():
            return float(self.model(2 * x - 1, 2 * y - 1).mean())


@dataclass
class Case:
    """One test image and its observation."""

    name: str
    x: torch.Tensor
    y: torch.Tensor


def quality_cases(setting: TaskSetting, dataset: str, limit: int | None, seed: int) -> list[Case]:
    """The data set's images (cropped to the SR factor) and their observations, the k-th seeded with seed + k."""
    from ..io import read_image

    cases = []
    for index, path in enumerate(dataset_paths(dataset)[:limit]):
        x = modcrop(read_image(path).data[None], setting.scale)
        y, _ = observe(setting, x, seed + index)
        cases.append(Case(path.name, x, y))
    return cases


def image_scores(out: torch.Tensor, x: torch.Tensor, crop: int, lpips: LPIPS | None) -> dict[str, float]:
    from ..metrics import psnr, ssim

    if crop:
        out, x = out[..., crop:-crop, crop:-crop], x[..., crop:-crop, crop:-crop]
    scores = {"psnr": psnr(out, x), "ssim": ssim(out, x)}
    if lpips is not None:
        scores["lpips"] = lpips(out, x)
    return scores


def quality_row(name: str, kind: str, setting: TaskSetting, dataset: str, scores: dict[str, dict], seconds: list[float]) -> dict:
    """The means over the images of their ``scores`` (image name → metric → value), and the scores
    themselves under ``per_image``, so that two runs can be compared image by image."""
    return {
        "method": name,
        "kind": kind,
        "task": setting.task,
        "sigma": setting.sigma,
        "dataset": dataset_label(dataset),
        "images": len(scores),
        **{metric: statistics.fmean(s[metric] for s in scores.values()) for metric in next(iter(scores.values()))},
        "seconds_per_image": statistics.fmean(seconds) if seconds else None,
        "per_image": scores,
    }
