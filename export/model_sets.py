"""Model sets: the networks behind the components, with the facts the pipelines need.

A model set holds networks under fixed roles:

======================  ==========================================================
role                    network
======================  ==========================================================
``vae``                 autoencoder of the latent UNet (``reld``, ``indigo-*``)
``unet``                latent denoiser (``UNet2DModel``, or SD's ``UNet2DConditionModel``)
``sr_vae``              autoencoder of the SR UNet (``ldm-sr``, ``ddrm-ldm``)
``sr_unet``             SR UNet on ``concat(latent, LR image)`` (LDM-SR, SD x4 upscaler)
``pixel_unet``          pixel-space DDPM UNet (``ddrm``)
``inn_pixel``           wavelet INN on images (``indigo-pixel``)
``inn_latent``          wavelet INN on ``vae`` latents (``indigo-latent``)
======================  ==========================================================

and a noise schedule per UNet role; a Stable Diffusion UNet also has its stored
empty-prompt embedding (:mod:`.prompt`), and the x4 upscaler's SR UNet the noise
augmentation of its low-resolution input (:class:`.components.LowResNoise`).
:func:`load_model_set` takes a registered name (``"tiny"``, ``"bundled"``) or a folder:
one written by :meth:`ModelSet.save_pretrained` (``model_set.json`` plus one diffusers
model folder per role, UNet folders with their ``scheduler_config.json``, and
``prompt_embedding.safetensors`` and ``low_res_noise.json`` where they apply), a
public diffusers pipeline folder (:data:`PUBLIC_PIPELINES`), or an OpenAI guided-diffusion
UNet state dict (a ``.pt`` file, or a folder holding one; :mod:`.guided_diffusion`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

from diffusers import UNet2DConditionModel
from torch import nn

from trt_restore.errors import UserError
from trt_restore.methods import COMPONENTS, METHODS, components_for
from trt_restore.pipelines.base import PER_TASK
from trt_restore.pipelines.schedule import scheduler_config

from .components import (
    Component,
    Decoder,
    DecoderVJP,
    Denoiser,
    Encoder,
    INNForward,
    INNInverse,
    LowResNoise,
    SRDenoiser,
    autoencoder_meta,
)
from .group_stats import GroupStats, has_group_norm
from .guided_diffusion import checkpoint_file, load_guided_diffusion
from .models import (
    SCHEDULER_FILE,
    load_autoencoder,
    load_ddpm_unet,
    load_ldm_sr,
    load_network,
    load_scheduler_config,
    load_sd_upscaler,
    load_stable_diffusion,
    load_unet,
    read_json,
    resolve_source,
)
from .prompt import PROMPT_FILE, PromptEmbedding
from .tiny import tiny_autoencoder_kl, tiny_inn, tiny_pixel_unet, tiny_sr_unet, tiny_unet, tiny_vq

ROLES = ("vae", "unet", "sr_vae", "sr_unet", "pixel_unet", "inn_pixel", "inn_latent")
UNET_ROLES = ("unet", "sr_unet", "pixel_unet")
SR_METHODS = ("ldm-sr", "ddrm-ldm")
MANIFEST = "model_set.json"
LOW_RES_NOISE_FILE = "low_res_noise.json"
PUBLIC_PIPELINES = (
    "StableDiffusionPipeline",
    "StableDiffusionUpscalePipeline",
    "LDMSuperResolutionPipeline",
    "LDMPipeline",
    "DDPMPipeline",
    "DDIMPipeline",
)

# Noise schedules of the public models the tiny and bundled sets stand in for, sampled
# without clipping x̂₀ (latents are not confined to [−1, 1]; DDRM keeps the reference's
# unclipped x̂₀). OpenAI's guided-diffusion UNets were trained on DDPM_SCHEDULE too.
SD_SCHEDULE = scheduler_config({"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "clip_sample": False})
LDM_SR_SCHEDULE = scheduler_config({"beta_schedule": "scaled_linear", "beta_start": 0.0015, "beta_end": 0.0155, "clip_sample": False})
DDPM_SCHEDULE = scheduler_config({"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02, "clip_sample": False})


@dataclass
class ModelSet:
    """Named networks (by role), a noise schedule per UNet role, the stored prompt embedding of
    each text-conditioned UNet role and the SR UNet's low-resolution noise augmentation, if any."""

    name: str
    networks: dict[str, nn.Module]
    schedulers: dict[str, dict] = field(default_factory=dict)
    prompts: dict[str, PromptEmbedding] = field(default_factory=dict)
    low_res_noise: LowResNoise | None = None
    settings: dict[str, dict] = field(default_factory=dict)
    """Per method, the settings tuned for these networks (LDM-SR's step count, say). They replace
    the method's and the task's defaults; a setting that the caller passes replaces them. Under
    ``"tasks"``, settings for the tasks that a pattern matches (``{"sr.*": {"gamma": 4}}``,
    :func:`~trt_restore.pipelines.base.settings_for_task`)."""

    def __post_init__(self):
        unknown = set(self.networks) - set(ROLES)
        if unknown:
            raise UserError(f"model set '{self.name}': unknown roles {sorted(unknown)}; roles are {', '.join(ROLES)}")
        for role in UNET_ROLES:
            if role in self.networks and role not in self.schedulers:
                raise UserError(f"model set '{self.name}': the {role} network has no noise schedule")
            if role in self.networks and (role in self.prompts) != isinstance(self.networks[role], UNet2DConditionModel):
                raise UserError(
                    f"model set '{self.name}': the {role} network needs a prompt embedding exactly when it is text-conditioned"
                )
        if self.low_res_noise is not None and "sr_unet" not in self.networks:
            raise UserError(f"model set '{self.name}': low-resolution noise augmentation without an sr_unet network")
        for method, settings in self.settings.items():
            if method not in METHODS:
                raise UserError(f"model set '{self.name}' has settings for an unknown method '{method}'; methods are {', '.join(METHODS)}")
            if not isinstance(settings, dict):
                raise UserError(f"model set '{self.name}': the settings of '{method}' must be a JSON object of name: value")
            self._check_per_task(method, settings.get(PER_TASK, {}))

    def _check_per_task(self, method: str, per_task: object) -> None:
        """The ``"tasks"`` of a method's settings: task-name patterns to JSON objects of name: value."""
        where = f"model set '{self.name}': the per-task settings of '{method}'"
        if not isinstance(per_task, dict) or not all(isinstance(values, dict) for values in per_task.values()):
            raise UserError(f"{where} must be a JSON object of task pattern: {{name: value}}")
        for pattern in per_task:
            try:
                re.compile(pattern)
            except re.error as error:
                raise UserError(f"{where}: '{pattern}' is not a regular expression ({error})") from None

    def network(self, role: str) -> nn.Module:
        """The network in ``role``, or a UserError saying what the set holds."""
        if role not in self.networks:
            raise UserError(
                f"model set '{self.name}' has no {role} network (it holds: {', '.join(self.networks) or 'nothing'}); "
                "pick a model set that provides it"
            )
        return self.networks[role]

    @property
    def meta(self) -> dict:
        """JSON-able facts: per role its class, VAE geometry and scale, UNet schedules, INN levels; the settings."""
        roles = {}
        for role, net in self.networks.items():
            if role in ("vae", "sr_vae"):
                roles[role] = autoencoder_meta(net)
            elif role in UNET_ROLES:
                roles[role] = {"class": type(net).__name__, "scheduler": self.schedulers[role]}
                if role in self.prompts:
                    roles[role]["prompt"] = self.prompts[role].provenance
                if role == "sr_unet" and self.low_res_noise is not None:
                    roles[role]["low_res_noise"] = self.low_res_noise.to_json()
            else:
                roles[role] = {
                    "class": type(net).__name__,
                    "channels": net.config.channels,
                    "levels": net.config.levels,
                }
        return {"name": self.name, "roles": roles, **({"settings": self.settings} if self.settings else {})}

    def _downsample(self, vae_role: str) -> int:
        return autoencoder_meta(self.network(vae_role))["downsample"]

    def wrapper(self, component: str, method: str | None = None, *, group_stats: bool = False) -> Component:
        """The component wrapper (an ``nn.Module`` with ``.spec``) for ``component`` as ``method`` uses it.

        The autoencoder is ``sr_vae`` for the methods built on the SR UNet (``ldm-sr``,
        ``ddrm-ldm``) and ``vae`` otherwise; the INN is ``inn_latent`` for
        ``indigo-latent`` and ``inn_pixel`` otherwise. ``group_stats`` gives a network with
        GroupNorms the whole-image statistics interface of :class:`.group_stats.GroupStats`,
        which the engines of tiled runs need.
        """
        wrapper = self._wrapper(component, method)
        return GroupStats(wrapper) if group_stats and has_group_norm(wrapper) else wrapper

    def _wrapper(self, component: str, method: str | None) -> Component:
        if component not in COMPONENTS:
            raise UserError(f"unknown component '{component}'; choose one of: {', '.join(COMPONENTS)}")
        if method is not None:
            components_for(method)  # rejects an unknown method
        vae_role = "sr_vae" if method in SR_METHODS else "vae"
        if component == "encoder":
            return Encoder(self.network(vae_role))
        if component == "decoder":
            return Decoder(self.network(vae_role))
        if component == "decoder_vjp":
            return DecoderVJP(self.network(vae_role))
        if component == "unet":
            return Denoiser(
                self.network("unet"), self.schedulers["unet"], downsample=self._downsample("vae"),
                prompt=self.prompts.get("unet"),
            )
        if component == "sr_unet":
            return SRDenoiser(
                self.network("sr_unet"), self.schedulers["sr_unet"], downsample=self._downsample("sr_vae"),
                prompt=self.prompts.get("sr_unet"), low_res_noise=self.low_res_noise,
            )
        if component == "pixel_unet":
            return Denoiser(self.network("pixel_unet"), self.schedulers["pixel_unet"], component="pixel_unet")
        inn_class = INNForward if component == "inn_forward" else INNInverse
        if method == "indigo-latent":
            return inn_class(self.network("inn_latent"), "latent", self._downsample("vae"))
        return inn_class(self.network("inn_pixel"), "pixel")

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write ``model_set.json`` and one diffusers folder per role (UNets with ``scheduler_config.json``,
        and their prompt embedding and low-resolution noise augmentation where they have them)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for role, net in self.networks.items():
            net.save_pretrained(folder / role)
            if role in self.schedulers:
                (folder / role / SCHEDULER_FILE).write_text(json.dumps(self.schedulers[role], indent=2))
            if role in self.prompts:
                self.prompts[role].save(folder / role / PROMPT_FILE)
        if self.low_res_noise is not None:
            (folder / "sr_unet" / LOW_RES_NOISE_FILE).write_text(json.dumps(self.low_res_noise.to_json(), indent=2))
        manifest = {"name": self.name, "roles": list(self.networks), **({"settings": self.settings} if self.settings else {})}
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=2))
        return folder

    @classmethod
    def from_folder(cls, folder: str | Path) -> ModelSet:
        """Read a folder written by :meth:`save_pretrained`."""
        folder = Path(folder)
        manifest = read_json(folder / MANIFEST)
        networks, schedulers, prompts = {}, {}, {}
        for role in manifest.get("roles", []):
            networks[role] = load_network(folder / role)
            if role in UNET_ROLES:
                schedulers[role] = load_scheduler_config(folder / role / SCHEDULER_FILE)
            if (folder / role / PROMPT_FILE).is_file():
                prompts[role] = PromptEmbedding.load(folder / role / PROMPT_FILE)
        noise_file = folder / "sr_unet" / LOW_RES_NOISE_FILE
        low_res_noise = None
        if noise_file.is_file():
            stored = read_json(noise_file)
            low_res_noise = LowResNoise(
                scheduler_config(stored.get("scheduler", {}), noise_file),
                stored.get("noise_level", LowResNoise.noise_level),
                stored.get("max_noise_level", LowResNoise.max_noise_level),
            )
        return cls(manifest.get("name", folder.name), networks, schedulers, prompts, low_res_noise, manifest.get("settings", {}))


def tiny_model_set() -> ModelSet:
    """Every role filled with a tiny random network (fixed seeds): for tests and smoke runs."""
    return ModelSet(
        "tiny",
        networks={
            "vae": tiny_autoencoder_kl(down=8, latent_channels=4, seed=0),
            "unet": tiny_unet(4, 4, seed=1),
            "sr_vae": tiny_vq(down=4, latent_channels=3, seed=2),
            "sr_unet": tiny_sr_unet(latent_channels=3, seed=3),
            "pixel_unet": tiny_pixel_unet(3, seed=4),
            "inn_pixel": tiny_inn(3, levels=2, seed=5),
            "inn_latent": tiny_inn(4, levels=1, seed=6),
        },
        schedulers={"unet": SD_SCHEDULE, "sr_unet": LDM_SR_SCHEDULE, "pixel_unet": DDPM_SCHEDULE},
    )


def default_models_folder() -> Path:
    """The package's ``models/`` folder, where ``load_model_set("bundled")`` looks."""
    return Path(str(files("trt_restore.models")))


def bundled_model_set() -> ModelSet:
    """The small trained models shipped in the package's ``models/`` folder."""
    folder = default_models_folder()
    if not (folder / MANIFEST).is_file():
        raise UserError(
            f"the bundled models are not in this installation ({folder / MANIFEST} is missing); "
            "train them with `trt-restore train` or pass a model-set folder"
        )
    return ModelSet.from_folder(folder)


def _public_pipeline_set(folder: Path) -> ModelSet:
    """A public diffusers pipeline folder (:data:`PUBLIC_PIPELINES`): Stable Diffusion, its x4 upscaler,
    LDM-SR, LDM (latent UNet on a VQ autoencoder) or DDPM."""
    pipeline = read_json(folder / "model_index.json").get("_class_name")
    if pipeline == "StableDiffusionPipeline":
        vae, unet, scheduler, prompt = load_stable_diffusion(folder)
        return ModelSet(folder.name, {"vae": vae, "unet": unet}, {"unet": scheduler}, {"unet": prompt})
    if pipeline == "StableDiffusionUpscalePipeline":
        vae, unet, scheduler, prompt, low_res_noise = load_sd_upscaler(folder)
        return ModelSet(
            folder.name, {"sr_vae": vae, "sr_unet": unet}, {"sr_unet": scheduler}, {"sr_unet": prompt}, low_res_noise
        )
    if pipeline == "LDMSuperResolutionPipeline":
        vqvae, unet, scheduler = load_ldm_sr(folder)
        return ModelSet(folder.name, {"sr_vae": vqvae, "sr_unet": unet}, {"sr_unet": scheduler})
    if pipeline == "LDMPipeline":
        scheduler = load_scheduler_config(folder / "scheduler" / SCHEDULER_FILE)
        networks = {"vae": load_autoencoder(folder, "vqvae"), "unet": load_unet(folder, "unet")}
        return ModelSet(folder.name, networks, {"unet": scheduler})
    if pipeline in ("DDPMPipeline", "DDIMPipeline"):
        unet, scheduler = load_ddpm_unet(folder)
        return ModelSet(folder.name, {"pixel_unet": unet}, {"pixel_unet": scheduler})
    raise UserError(
        f"{folder / 'model_index.json'} describes a '{pipeline}'; supported pipelines: {', '.join(PUBLIC_PIPELINES)}"
    )


MODEL_SETS: dict[str, Callable[[], ModelSet]] = {"tiny": tiny_model_set, "bundled": bundled_model_set}


def register_model_set(name: str, factory: Callable[[], ModelSet]) -> None:
    """Make ``load_model_set(name)`` call ``factory``."""
    MODEL_SETS[name] = factory


def load_model_set(name: str | Path, vae: str | Path | None = None) -> ModelSet:
    """A registered model set by name, or a model-set folder, or a public pipeline folder or hub id;
    with ``vae`` (an autoencoder folder or hub id), its autoencoder replaced (:func:`with_vae`)."""
    models = _load_model_set(name)
    return models if vae is None else with_vae(models, vae)


# The latent geometry and scale a replacement autoencoder must share with the one it replaces.
VAE_COMPATIBILITY = ("image_channels", "latent_channels", "downsample", "scaling_factor", "shift_factor")


def with_vae(models: ModelSet, source: str | Path) -> ModelSet:
    """``models`` with the autoencoder folder (or hub id) ``source`` in each autoencoder role (``vae``,
    ``sr_vae``) of the same latent geometry: image and latent channels, downsampling factor.

    The UNets were trained on latents ``z = s·(μ − shift)`` of the autoencoder they came with, so
    a replacement must also have its ``scaling_factor`` and ``shift_factor`` (e.g. sd-vae-ft-mse
    for Stable Diffusion 1.x); anything else is a one-line :class:`UserError` naming the mismatch.
    """
    vae = load_autoencoder(source)
    new = autoencoder_meta(vae)
    current = {role: autoencoder_meta(models.networks[role]) for role in ("vae", "sr_vae") if role in models.networks}
    if not current:
        raise UserError(f"model set '{models.name}' has no autoencoder for --vae to replace; it is for the latent methods")
    geometry = VAE_COMPATIBILITY[:3]
    roles = [role for role, meta in current.items() if all(meta[key] == new[key] for key in geometry)]
    if not roles:
        found = "; ".join(f"{role}: " + ", ".join(f"{key} {meta[key]}" for key in geometry) for role, meta in current.items())
        wanted = ", ".join(f"{key} {new[key]}" for key in geometry)
        raise UserError(f"--vae {source} has {wanted}, which fits no autoencoder of model set '{models.name}' ({found})")
    for role in roles:
        for key in VAE_COMPATIBILITY[3:]:
            if not math.isclose(current[role][key], new[key], rel_tol=1e-6):
                raise UserError(
                    f"--vae {source} has {key} {new[key]}, but the UNets of model set '{models.name}' were trained on "
                    f"latents with its {role}'s {current[role][key]}; use an autoencoder with the same latent scale"
                )
    networks = {**models.networks, **dict.fromkeys(roles, vae)}
    return dataclasses.replace(models, name=f"{models.name}+vae:{Path(str(source)).name}", networks=networks)


def _load_model_set(name: str | Path) -> ModelSet:
    if str(name) in MODEL_SETS:
        return MODEL_SETS[str(name)]()
    if not Path(name).expanduser().exists() and "/" not in str(name):
        raise UserError(f"unknown model set '{name}'; choose one of: {', '.join(MODEL_SETS)}, or pass a folder")
    if Path(name).expanduser().is_file():
        return _guided_diffusion_set(Path(name).expanduser())
    folder = resolve_source(name)
    if (folder / MANIFEST).is_file():
        return ModelSet.from_folder(folder)
    if (folder / "model_index.json").is_file():
        return _public_pipeline_set(folder)
    if checkpoint_file(folder) is not None:
        return _guided_diffusion_set(checkpoint_file(folder))
    raise UserError(
        f"{folder} is not a model set: expected {MANIFEST} (a saved model set), "
        f"model_index.json (a diffusers pipeline: {', '.join(PUBLIC_PIPELINES)}) "
        "or one guided-diffusion UNet .pt state dict"
    )


def _guided_diffusion_set(checkpoint: Path) -> ModelSet:
    """An OpenAI guided-diffusion UNet checkpoint as the ``pixel_unet`` of ``ddrm``, on its linear β schedule."""
    return ModelSet(checkpoint.stem, {"pixel_unet": load_guided_diffusion(checkpoint)}, {"pixel_unet": DDPM_SCHEDULE})
