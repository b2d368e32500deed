"""Wavelet-lifting invertible network: the degradation model of LatentINDIGO.

The network maps a clean signal ``x`` (an image in [0, 1], or a VAE latent) of shape
``(B, C, H, W)`` to a pair ``(coarse, detail)``:

- ``coarse``: ``(B, C, H/2^L, W/2^L)``, the part that plays the role of the degraded
  observation ``y``;
- ``detail``: ``(B, C·(4^L − 1), H/2^L, W/2^L)``, everything else, every level packed at
  the coarse resolution (finest level first).

Each of the ``L`` levels splits its input into 2×2 polyphase components ``a, b, c, d``
(``x[2i, 2j]``, ``x[2i, 2j+1]``, ``x[2i+1, 2j]``, ``x[2i+1, 2j+1]``), takes their Haar
transform

    ll = (a + b + c + d)/4,  lh = (a − b + c − d)/4,  hl = (a + b − c − d)/4,  hh = (a − b − c + d)/4

(coarse ``ll``, details ``[lh, hl, hh]``), then applies ``steps`` lifting couplings, each
a predict and an update conditioned on the degradation embedding ``e``:

    d ← d − P(ll, e);   ll ← ll + U(d, e)

The inverse runs the same couplings backwards (``ll ← ll − U(d, e); d ← d + P(ll, e)``)
and undoes the Haar transform, so ``inverse(forward(x)) = x`` exactly by construction,
whatever the coupling weights.

Convention for the observation: with untrained (identity) couplings the coarse part
is the ``2^L × 2^L`` box average of ``x``. A box-average SR observation by ``2^L`` is
therefore compared directly with ``coarse``; for same-size tasks (denoising, deblurring,
inpainting, colourisation) ``coarse`` is compared with ``y`` box-averaged by ``2^L``. In
the latent variant ``x`` is a VAE latent (``C`` latent channels) and ``coarse`` is compared
with the latent of the observation treated the same way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from trt_restore.errors import UserError
from trt_restore.inn_condition import COND_DIM


def polyphase(x: torch.Tensor, factor: int) -> torch.Tensor:
    """``(B, C, H, W) → (B, C, s², H/s, W/s)`` with phase ``i·s + j`` holding ``x[..., i::s, j::s]``."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // factor, factor, w // factor, factor).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, c, factor * factor, h // factor, w // factor)


def unpolyphase(p: torch.Tensor, factor: int) -> torch.Tensor:
    """Inverse of :func:`polyphase`: ``(B, C, s², h, w) → (B, C, h·s, w·s)``."""
    b, c, _, h, w = p.shape
    p = p.reshape(b, c, factor, factor, h, w).permute(0, 1, 4, 2, 5, 3)
    return p.reshape(b, c, h * factor, w * factor)


def haar_split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One Haar level: ``(B, C, H, W) → (ll (B, C, H/2, W/2), [lh, hl, hh] (B, 3C, H/2, W/2))``."""
    a, b, c, d = polyphase(x, 2).unbind(2)
    ll = (a + b + c + d) / 4
    details = torch.stack(((a - b + c - d) / 4, (a + b - c - d) / 4, (a - b - c + d) / 4), dim=2)
    return ll, details.flatten(1, 2)


def haar_merge(ll: torch.Tensor, details: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`haar_split`: ``a = ll + lh + hl + hh``, ``b = ll − lh + hl − hh``, … ."""
    b, c, h, w = ll.shape
    lh, hl, hh = details.reshape(b, c, 3, h, w).unbind(2)
    phases = (ll + lh + hl + hh, ll - lh + hl - hh, ll + lh - hl - hh, ll - lh - hl + hh)
    return unpolyphase(torch.stack(phases, dim=2), 2)


class LiftingNet(nn.Module):
    """A predict or update operator ``u ↦ conv₂(SiLU(conv₁(u) · (1 + γ(e)) + β(e)))``.

    ``γ, β`` are a linear map of the degradation embedding ``e``, broadcast over the image.
    With ``zero_out`` the last convolution starts at zero, so the coupling starts as the identity.
    """

    def __init__(self, in_channels: int, out_channels: int, hidden: int, cond_dim: int, zero_out: bool):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, hidden, 3, padding=1)
        self.film = nn.Linear(cond_dim, 2 * hidden)
        self.conv_out = nn.Conv2d(hidden, out_channels, 3, padding=1)
        if zero_out:
            nn.init.zeros_(self.conv_out.weight)
            nn.init.zeros_(self.conv_out.bias)

    def forward(self, u: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.film(cond)[:, :, None, None].chunk(2, dim=1)
        return self.conv_out(F.silu(self.conv_in(u) * (1 + gamma) + beta))


class LiftingStep(nn.Module):
    """One coupling: ``d ← d − P(c, e); c ← c + U(d, e)``."""

    def __init__(self, channels: int, hidden: int, cond_dim: int, zero_out: bool):
        super().__init__()
        self.predict = LiftingNet(channels, 3 * channels, hidden, cond_dim, zero_out)
        self.update = LiftingNet(3 * channels, channels, hidden, cond_dim, zero_out)

    def forward(self, coarse: torch.Tensor, detail: torch.Tensor, cond: torch.Tensor):
        detail = detail - self.predict(coarse, cond)
        return coarse + self.update(detail, cond), detail

    def inverse(self, coarse: torch.Tensor, detail: torch.Tensor, cond: torch.Tensor):
        coarse = coarse - self.update(detail, cond)
        return coarse, detail + self.predict(coarse, cond)


class WaveletINN(ModelMixin, ConfigMixin):
    """Exactly invertible ``x ↔ (coarse, detail)`` with ``levels`` Haar levels of ``steps`` lifting couplings.

    See the module docstring for the transform and the observation convention.
    ``identity_init`` starts every coupling at the identity (the plain Haar transform).
    """

    @register_to_config
    def __init__(
        self,
        channels: int = 3,
        levels: int = 2,
        steps: int = 2,
        hidden: int = 32,
        cond_dim: int = COND_DIM,
        identity_init: bool = True,
    ):
        super().__init__()
        self.couplings = nn.ModuleList(
            nn.ModuleList(LiftingStep(channels, hidden, cond_dim, identity_init) for _ in range(steps))
            for _ in range(levels)
        )

    @property
    def factor(self) -> int:
        """Downsampling factor ``2^L`` between ``x`` and ``coarse``."""
        return 2**self.config.levels

    @property
    def detail_channels(self) -> int:
        """Channels of the packed detail tensor, ``C·(4^L − 1)``."""
        return self.config.channels * (self.factor**2 - 1)

    def _level_channels(self) -> list[int]:
        """Channels each level's details take in the packed tensor, finest level first."""
        c, levels = self.config.channels, self.config.levels
        return [3 * c * 4 ** (levels - 1 - i) for i in range(levels)]

    def _check_condition(self, batch: int, cond: torch.Tensor) -> None:
        if tuple(cond.shape) != (batch, self.config.cond_dim):
            raise UserError(
                f"the INN condition must have shape ({batch}, {self.config.cond_dim}), got {tuple(cond.shape)}"
            )

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x (B, C, H, W) → (coarse (B, C, H/2^L, W/2^L), detail (B, C·(4^L − 1), H/2^L, W/2^L))``."""
        if x.shape[1] != self.config.channels or x.shape[-1] % self.factor or x.shape[-2] % self.factor:
            raise UserError(
                f"the INN needs {self.config.channels} channels and a size divisible by {self.factor}, "
                f"got shape {tuple(x.shape)}"
            )
        self._check_condition(x.shape[0], cond)
        coarse, details = x, []
        for steps in self.couplings:
            coarse, detail = haar_split(coarse)
            for step in steps:
                coarse, detail = step(coarse, detail, cond)
            details.append(detail)
        levels = len(details)
        packed = [polyphase(d, 2 ** (levels - 1 - i)).flatten(1, 2) for i, d in enumerate(details)]
        return coarse, torch.cat(packed, dim=1)

    def inverse(self, coarse: torch.Tensor, detail: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """``(coarse, detail) → x``, the exact inverse of :meth:`forward`."""
        channels, levels = self.config.channels, self.config.levels
        expected = (coarse.shape[0], self.detail_channels, *coarse.shape[-2:])
        if coarse.shape[1] != channels or tuple(detail.shape) != expected:
            raise UserError(
                f"the INN inverse needs coarse with {channels} channels and detail of shape {expected}, "
                f"got {tuple(coarse.shape)} and {tuple(detail.shape)}"
            )
        self._check_condition(coarse.shape[0], cond)
        parts = detail.split(self._level_channels(), dim=1)
        batch, _, height, width = coarse.shape
        x = coarse
        for i in reversed(range(levels)):
            factor = 2 ** (levels - 1 - i)
            d = unpolyphase(parts[i].reshape(batch, 3 * channels, factor * factor, height, width), factor)
            for step in reversed(self.couplings[i]):
                x, d = step.inverse(x, d, cond)
            x = haar_merge(x, d)
        return x
