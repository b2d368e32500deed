"""One ``nn.Module`` per network component, each with its graph interface (``spec``).

A component's ``forward`` takes the tensors of ``spec.inputs`` positionally, in order,
and returns those of ``spec.outputs`` (a tuple when there are several). Shapes use the
image size symbols ``H``, ``W`` (``H/f`` for a latent of a VAE with downsampling factor
``f``). Conventions at the boundaries:

- images are in [0, 1];
- latents are the VAE's scaled latents, ``z = s·(μ − shift)``, the space the UNets see;
- ``pixel_unet``'s ``sample`` is in the DDPM space [-1, 1] (``2x − 1``), since its noisy
  inputs leave [0, 1] anyway;
- timesteps are float32 of shape ``(B,)`` on the training scale ``[0, num_train_timesteps)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel, UNet2DModel, VQModel
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from trt_restore.errors import UserError
from trt_restore.inn_condition import TASK_FAMILIES
from trt_restore.pipelines.schedule import NoiseSchedule
from trt_restore.specs import ComponentSpec, TensorSpec

from .inn import WaveletINN
from .prompt import PromptEmbedding


def _dim(symbol: str, divisor: int) -> str:
    return symbol if divisor == 1 else f"{symbol}/{divisor}"


def _planes(channels: int, divisor: int = 1) -> tuple:
    """Symbolic shape ``(B, channels, H/divisor, W/divisor)``."""
    return ("B", channels, _dim("H", divisor), _dim("W", divisor))


def autoencoder_meta(vae: ModelMixin) -> dict:
    """JSON-able facts about a VAE: class, channels, downsampling factor ``f``, latent scale and shift.

    A VQ model's latents are used unscaled (``s = 1``), as the LDM pipelines built on
    VQ autoencoders (LDM-SR, LDM) do; KL and tiny autoencoders use their config's
    ``scaling_factor`` (and ``shift_factor`` where set).
    """
    config = vae.config
    if isinstance(vae, AutoencoderTiny):
        downsample = config.upsampling_scaling_factor ** (len(config.decoder_block_out_channels) - 1)
    elif isinstance(vae, (AutoencoderKL, VQModel)):
        downsample = 2 ** (len(config.block_out_channels) - 1)
    else:
        raise UserError(
            f"{type(vae).__name__} is not a supported autoencoder (AutoencoderKL, VQModel, AutoencoderTiny)"
        )
    return {
        "class": type(vae).__name__,
        "image_channels": config.in_channels,
        "latent_channels": config.latent_channels,
        "downsample": downsample,
        "scaling_factor": 1.0 if isinstance(vae, VQModel) else float(config.scaling_factor),
        "shift_factor": float(getattr(config, "shift_factor", None) or 0.0),
    }


def unet_multiple(unet: UNet2DModel | UNet2DConditionModel) -> int:
    """Factor a UNet's input size must be divisible by: 2 per downsampling block."""
    return 2 ** (len(unet.config.down_block_types) - 1)


class Component(nn.Module):
    """Base of the component wrappers: ``spec`` plus example inputs that respect it.

    ``fp32_inputs`` name the inputs that stay float32 in a half-precision graph.
    ``unit_range_inputs`` name the inputs that are images in [0, 1].
    """

    spec: ComponentSpec
    fp32_inputs: tuple[str, ...] = ()
    unit_range_inputs: tuple[str, ...] = ()

    def __init__(self):
        super().__init__()
        self.train(False)  # an inference graph

    def example_inputs(self, batch: int, height: int, width: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
        """Random inputs for an image of ``height × width``: images uniform in [0, 1],
        timesteps uniform in ``[0, num_train_timesteps)``, everything else standard normal."""
        multiple = self.spec.multiple
        if height % multiple or width % multiple:
            raise UserError(
                f"{self.spec.name} needs an image size divisible by {multiple}, got {height}x{width}; "
                "pad or crop the image"
            )
        generator = torch.Generator().manual_seed(seed)
        sizes = {"B": batch, "H": height, "W": width}
        tensors = []
        for tensor in self.spec.inputs:
            shape = tensor.resolve(sizes)
            if tensor.name == "timestep":
                steps = self.spec.meta["scheduler"]["num_train_timesteps"]
                tensors.append(torch.rand(shape, generator=generator) * steps)
            elif tensor.name in self.unit_range_inputs:
                tensors.append(torch.rand(shape, generator=generator))
            else:
                tensors.append(torch.randn(shape, generator=generator))
        return tuple(tensors)


class Encoder(Component):
    """``image x ∈ [0, 1] → z = s·(μ(2x − 1) − shift)``: the posterior mean (KL) or the
    pre-quantisation latent (VQ, tiny), scaled to the UNet's latent space."""

    unit_range_inputs = ("image",)

    def __init__(self, vae: ModelMixin):
        super().__init__()
        self.vae = vae
        meta = autoencoder_meta(vae)
        f, c = meta["downsample"], meta["latent_channels"]
        self.spec = ComponentSpec(
            "encoder",
            inputs=(TensorSpec("image", _planes(meta["image_channels"])),),
            outputs=(TensorSpec("latent", _planes(c, f)),),
            multiple=f,
            meta=meta,
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        encoded = self.vae.encode(2 * image - 1)
        latent = encoded.latent_dist.mode() if isinstance(self.vae, AutoencoderKL) else encoded.latents
        meta = self.spec.meta
        return (latent - meta["shift_factor"]) * meta["scaling_factor"]


class Decoder(Component):
    """``z → x = (D(z/s + shift) + 1)/2``, the image in [0, 1] (not clamped, so that the
    decoder stays differentiable where the VJP is taken).

    For a VQ model ``quantize`` snaps the latent to the codebook first, as the LDM
    pipelines do; without it the decoder is the straight-through (unquantised) one.
    """

    def __init__(self, vae: ModelMixin, quantize: bool = True):
        super().__init__()
        self.vae = vae
        meta = autoencoder_meta(vae)
        self.decode_kwargs = {"force_not_quantize": not quantize} if isinstance(vae, VQModel) else {}
        if isinstance(vae, VQModel):
            meta["quantize"] = quantize
        f, c = meta["downsample"], meta["latent_channels"]
        self.spec = ComponentSpec(
            "decoder",
            inputs=(TensorSpec("latent", _planes(c, f)),),
            outputs=(TensorSpec("image", _planes(meta["image_channels"])),),
            multiple=f,
            meta=meta,
        )

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        meta = self.spec.meta
        decoded = self.vae.decode(latent / meta["scaling_factor"] + meta["shift_factor"], **self.decode_kwargs)
        return (decoded.sample + 1) / 2


class DecoderVJP(Component):
    """``(z, r) → J_D(z)ᵀ r``: the decoder's vector-Jacobian product, image-space cotangent
    ``r`` back to latent space. For a VQ model it is the straight-through VJP (the
    quantiser's Jacobian taken as the identity). Its graph has static shapes
    (``meta["static_shapes"]``): export one per tile size.
    """

    def __init__(self, vae: ModelMixin):
        super().__init__()
        self.decoder = Decoder(vae, quantize=False)
        meta = {**self.decoder.spec.meta, "static_shapes": True}
        meta.pop("quantize", None)
        f, c = meta["downsample"], meta["latent_channels"]
        self.spec = ComponentSpec(
            "decoder_vjp",
            inputs=(TensorSpec("latent", _planes(c, f)), TensorSpec("cotangent", _planes(meta["image_channels"]))),
            outputs=(TensorSpec("latent_grad", _planes(c, f)),),
            multiple=f,
            meta=meta,
        )

    def forward(self, latent: torch.Tensor, cotangent: torch.Tensor) -> torch.Tensor:
        # Engines run under inference mode, whose tensors cannot enter autograd: leave it and copy.
        with torch.inference_mode(False), torch.enable_grad():
            latent = latent.clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.decoder(latent), latent, cotangent.clone())
        return grad


@dataclass(frozen=True)
class LowResNoise:
    """The x4 upscaler's noise augmentation of its low-resolution input (``StableDiffusionUpscalePipeline``):
    ``y_l = √ᾱ_l (2y − 1) + √(1 − ᾱ_l) n``, ``n ~ N(0, I)`` drawn once per image, with ᾱ of the folder's
    ``low_res_scheduler`` at the noise level ``l``, which the UNet also gets as its class label."""

    scheduler: dict
    noise_level: int = 20  # the pipeline's default
    max_noise_level: int = 350

    def __post_init__(self):
        if not 0 <= self.noise_level <= self.max_noise_level:
            raise UserError(f"noise level {self.noise_level} is outside the upscaler's range 0..{self.max_noise_level}")

    @property
    def alpha(self) -> float:
        """ᾱ_l."""
        return NoiseSchedule.from_config(self.scheduler).alpha(self.noise_level)

    def to_json(self) -> dict:
        return {"scheduler": self.scheduler, "noise_level": self.noise_level, "max_noise_level": self.max_noise_level}


class _UNetComponent(Component):
    """A diffusion UNet, with the stored text embedding ``c∅`` of a ``UNet2DConditionModel``
    (:mod:`.prompt`) passed as its ``encoder_hidden_states`` on every call."""

    fp32_inputs = ("timestep",)

    def __init__(self, unet: UNet2DModel | UNet2DConditionModel, prompt: PromptEmbedding | None):
        super().__init__()
        conditional = isinstance(unet, UNet2DConditionModel)
        if conditional != (prompt is not None):
            raise ValueError("a UNet2DConditionModel needs a prompt embedding, and only it takes one")
        self.unet = unet
        self.register_buffer("prompt", None if prompt is None else prompt.embedding.clone(), persistent=False)
        self.prompt_meta = {} if prompt is None else {"prompt": prompt.provenance}

    def conditioning(self, batch: int) -> dict[str, torch.Tensor]:
        """The UNet's ``encoder_hidden_states`` (``c∅`` for each of ``batch`` samples), if it takes any."""
        return {} if self.prompt is None else {"encoder_hidden_states": self.prompt.expand(batch, -1, -1)}


class Denoiser(_UNetComponent):
    """``(x_t, t) → model output`` (ε, v or x₀ as ``meta["prediction_type"]`` says) of a
    ``UNet2DModel`` or, run on the stored ``c∅``, a Stable Diffusion ``UNet2DConditionModel``:
    component ``unet`` on latents of a VAE with downsampling factor ``downsample``, or
    ``pixel_unet`` on images in the DDPM space [-1, 1] (``downsample = 1``).

    A UNet with learned variance (``2·C`` outputs ``[ε, v]`` for ``C`` inputs, e.g. a guided-diffusion
    checkpoint) gives its first ``C`` channels, ε; the samplers use the schedule's fixed variances."""

    def __init__(
        self,
        unet: UNet2DModel | UNet2DConditionModel,
        scheduler: dict,
        *,
        component: str = "unet",
        downsample: int = 1,
        prompt: PromptEmbedding | None = None,
    ):
        super().__init__(unet, prompt)
        if component not in ("unet", "pixel_unet"):
            raise ValueError(f"a Denoiser is the unet or the pixel_unet component, not {component}")
        sample = "latent" if component == "unet" else "sample"
        channels = unet.config.in_channels
        self.output_channels = channels if unet.config.out_channels == 2 * channels else unet.config.out_channels
        self.spec = ComponentSpec(
            component,
            inputs=(TensorSpec(sample, _planes(channels, downsample)), TensorSpec("timestep", ("B",))),
            outputs=(TensorSpec("model_output", _planes(self.output_channels, downsample)),),
            multiple=downsample * unet_multiple(unet),
            meta={
                "scheduler": scheduler,
                "prediction_type": scheduler["prediction_type"],
                "downsample": downsample,
                **self.prompt_meta,
            },
        )

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return self.unet(sample, timestep, **self.conditioning(sample.shape[0])).sample[:, : self.output_channels]


class SRDenoiser(_UNetComponent):
    """``(z_t, y, t) → model output`` of an SR UNet on ``concat(z_t, 2y − 1)``.

    ``y`` is the low-resolution image in [0, 1] at the latent's size, so for an output
    image ``H × W`` both are ``H/f × W/f`` (LDM-SR x4 with its f4 VQ autoencoder, and the
    Stable Diffusion x4 upscaler with its f4 KL one). The upscaler's UNet also takes the
    noise ``n`` of its :class:`LowResNoise` as a fourth input, ``(z_t, y, t, n)``, sees
    ``concat(z_t, y_l)`` with the class label ``l`` and runs on the stored ``c∅``.
    """

    unit_range_inputs = ("lr_image",)

    def __init__(
        self,
        unet: UNet2DModel | UNet2DConditionModel,
        scheduler: dict,
        *,
        downsample: int,
        prompt: PromptEmbedding | None = None,
        low_res_noise: LowResNoise | None = None,
    ):
        super().__init__(unet, prompt)
        latent = unet.config.out_channels
        image = unet.config.in_channels - latent
        self.low_res_noise = low_res_noise
        lr_planes = _planes(image, downsample)
        noise_input = (TensorSpec("lr_noise", lr_planes),) if low_res_noise else ()
        self.spec = ComponentSpec(
            "sr_unet",
            inputs=(
                TensorSpec("latent", _planes(latent, downsample)),
                TensorSpec("lr_image", lr_planes),
                TensorSpec("timestep", ("B",)),
                *noise_input,
            ),
            outputs=(TensorSpec("model_output", _planes(latent, downsample)),),
            multiple=downsample * unet_multiple(unet),
            meta={
                "scheduler": scheduler,
                "prediction_type": scheduler["prediction_type"],
                "downsample": downsample,
                **self.prompt_meta,
                **({"low_res_noise": low_res_noise.to_json()} if low_res_noise else {}),
            },
        )

    def forward(
        self, latent: torch.Tensor, lr_image: torch.Tensor, timestep: torch.Tensor, lr_noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        lr, kwargs = 2 * lr_image - 1, self.conditioning(latent.shape[0])
        if self.low_res_noise is not None:
            a = self.low_res_noise.alpha
            lr = a**0.5 * lr + (1 - a) ** 0.5 * lr_noise
            kwargs["class_labels"] = torch.full_like(timestep, self.low_res_noise.noise_level).long()
        return self.unet(torch.cat((latent, lr), dim=1), timestep, **kwargs).sample


class _INNComponent(Component):
    """Shared interface of the INN's two directions; ``space`` is ``"pixel"`` (images in
    [0, 1]) or ``"latent"`` (latents of a VAE with downsampling factor ``downsample``)."""

    def __init__(self, inn: WaveletINN, space: str, downsample: int, direction: str):
        super().__init__()
        if space not in ("pixel", "latent"):
            raise ValueError(f"INN space must be 'pixel' or 'latent', not {space}")
        self.inn = inn
        name = "image" if space == "pixel" else "latent"
        self.unit_range_inputs = (name,) if space == "pixel" else ()
        channels, coarse_factor = inn.config.channels, downsample * inn.factor
        signal = TensorSpec(name, _planes(channels, downsample))
        coarse = TensorSpec("coarse", _planes(channels, coarse_factor))
        detail = TensorSpec("detail", _planes(inn.detail_channels, coarse_factor))
        cond = TensorSpec("cond", ("B", inn.config.cond_dim))
        inputs, outputs = (
            ((signal, cond), (coarse, detail)) if direction == "forward" else ((coarse, detail, cond), (signal,))
        )
        meta = {
            "space": space,
            "levels": inn.config.levels,
            "factor": inn.factor,
            "cond_dim": inn.config.cond_dim,
            "task_families": list(TASK_FAMILIES),
            "downsample": downsample,
        }
        self.spec = ComponentSpec(f"inn_{direction}", inputs, outputs, coarse_factor, meta)


class INNForward(_INNComponent):
    """``(x, e) → (coarse, detail)``, :meth:`WaveletINN.forward`."""

    def __init__(self, inn: WaveletINN, space: str = "pixel", downsample: int = 1):
        super().__init__(inn, space, downsample, "forward")

    def forward(self, signal: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inn(signal, cond)


class INNInverse(_INNComponent):
    """``(coarse, detail, e) → x``, :meth:`WaveletINN.inverse`."""

    def __init__(self, inn: WaveletINN, space: str = "pixel", downsample: int = 1):
        super().__init__(inn, space, downsample, "inverse")

    def forward(self, coarse: torch.Tensor, detail: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.inn.inverse(coarse, detail, cond)
