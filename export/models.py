"""Loaders for public checkpoints in diffusers' folder layout.

A source is a local folder or a Hugging Face hub id (``owner/name``). Hub ids are
resolved in the local cache only; nothing is downloaded here. A model folder holds
``config.json`` (whose ``_class_name`` picks the diffusers class) and
``diffusion_pytorch_model.safetensors`` (or ``.bin``). Every problem with a folder (a
missing file, an unreadable file, a tensor missing, unexpected or of the wrong shape)
raises a :class:`UserError` that names the file and the tensor.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel, UNet2DModel, VQModel
from diffusers.models.modeling_utils import ModelMixin
from safetensors import SafetensorError
from safetensors.torch import load_file

from trt_restore.errors import UserError
from trt_restore.pipelines.schedule import scheduler_config

from .components import LowResNoise
from .inn import WaveletINN
from .prompt import PromptEmbedding, empty_prompt_embedding

AUTOENCODER_CLASSES: dict[str, type[ModelMixin]] = {
    "AutoencoderKL": AutoencoderKL,
    "VQModel": VQModel,
    "AutoencoderTiny": AutoencoderTiny,
}
UNET_CLASSES: dict[str, type[ModelMixin]] = {"UNet2DModel": UNet2DModel, "UNet2DConditionModel": UNet2DConditionModel}
INN_CLASSES: dict[str, type[ModelMixin]] = {"WaveletINN": WaveletINN}
NETWORK_CLASSES = {**AUTOENCODER_CLASSES, **UNET_CLASSES, **INN_CLASSES}

CONFIG_FILE = "config.json"
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
SCHEDULER_FILE = "scheduler_config.json"
UPSCALER_SCALING_FACTOR = 0.08333
"""The x4 upscaler's latent scale, which diffusers' pipeline imposes on its VAE whatever the config says."""

log = logging.getLogger(__name__)


def resolve_source(source: str | Path, subfolder: str | None = None) -> Path:
    """The local folder for ``source`` (a folder, or a hub id found in the local cache), plus ``subfolder``."""
    path = Path(source).expanduser()
    if not path.exists():
        path = _cached_hub_snapshot(str(source))
    if subfolder:
        path = path / subfolder
    if not path.is_dir():
        raise UserError(f"model folder {path} not found; pass a diffusers model folder")
    return path


def _cached_hub_snapshot(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    looks_like_id = repo_id.count("/") == 1 and not repo_id.startswith((".", "/", "~"))
    if looks_like_id:
        try:
            return Path(snapshot_download(repo_id, local_files_only=True))
        except (LocalEntryNotFoundError, HFValidationError):
            raise UserError(
                f"model '{repo_id}' is neither a folder nor a hub id in the local cache; "
                f"download it first (`hf download {repo_id}`) or pass a local folder"
            ) from None
    raise UserError(f"model folder '{repo_id}' not found; pass an existing diffusers model folder or a hub id")


def read_json(path: Path) -> dict:
    """A JSON file as a dict, or a UserError naming the file."""
    if not path.is_file():
        raise UserError(f"{path} not found; the folder is not in diffusers' layout")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"{path} is not valid JSON ({error}); restore or re-save the file") from None


def _weights_file(folder: Path) -> Path:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise UserError(f"{folder / WEIGHT_FILES[0]} not found (nor {WEIGHT_FILES[1]}); the model folder has no weights")


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            return load_file(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    except (SafetensorError, OSError, RuntimeError, ValueError) as error:
        raise UserError(f"cannot read weights from {path} ({error}); re-download or re-save the model") from None


def _check_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], weights: Path, config: Path) -> None:
    """UserError naming the first tensor that is missing, unexpected or of the wrong shape."""
    expected = model.state_dict()
    for name, tensor in expected.items():
        if name not in state:
            raise UserError(f"{weights}: tensor '{name}' is missing; the weights do not match {config}")
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise UserError(
                f"{weights}: tensor '{name}' has shape {tuple(state[name].shape)} but {config} "
                f"builds {tuple(tensor.shape)}; the weights do not match the config"
            )
    for name in state:
        if name not in expected:
            raise UserError(f"{weights}: unexpected tensor '{name}'; the weights do not match {config}")


def load_network(folder: Path, classes: dict[str, type[ModelMixin]] = NETWORK_CLASSES) -> ModelMixin:
    """Build the model ``config.json`` describes (one of ``classes``) and load its weights, in eval mode."""
    config_path = folder / CONFIG_FILE
    config = read_json(config_path)
    class_name = config.get("_class_name")
    if class_name not in classes:
        raise UserError(f"{config_path} describes a '{class_name}'; expected one of: {', '.join(classes)}")
    try:
        model = classes[class_name].from_config(config)
    except (TypeError, ValueError) as error:
        raise UserError(f"{config_path}: cannot build a {class_name} ({error})") from None
    weights = _weights_file(folder)
    state = _read_state_dict(weights)
    model._fix_state_dict_keys_on_load(state)  # diffusers' renames of pre-0.14 attention weights
    _check_state_dict(model, state, weights, config_path)
    model.load_state_dict(state)
    return model.eval()


def load_scheduler_config(path: Path) -> dict:
    """The complete sampling config (:func:`~trt_restore.pipelines.schedule.scheduler_config`) of a
    ``scheduler_config.json`` file: every field honoured or refused, none dropped."""
    return scheduler_config(read_json(path), path)


def load_autoencoder(source: str | Path, subfolder: str | None = None) -> ModelMixin:
    """An ``AutoencoderKL``, ``VQModel`` or ``AutoencoderTiny`` folder (class from ``config.json``)."""
    return load_network(resolve_source(source, subfolder), AUTOENCODER_CLASSES)


def load_unet(source: str | Path, subfolder: str | None = None) -> UNet2DModel | UNet2DConditionModel:
    """A ``UNet2DModel`` or ``UNet2DConditionModel`` folder."""
    return load_network(resolve_source(source, subfolder), UNET_CLASSES)


def load_inn(source: str | Path, subfolder: str | None = None) -> WaveletINN:
    """A :class:`WaveletINN` folder written by ``save_pretrained``."""
    return load_network(resolve_source(source, subfolder), INN_CLASSES)


def _first_existing(root: Path, candidates: tuple[str, ...]) -> Path:
    """The first of ``candidates`` (paths relative to ``root``) that exists, or a UserError naming the first."""
    for candidate in candidates:
        if (root / candidate).exists():
            return root / candidate
    raise UserError(f"{root / candidates[0]} not found; the folder is not in the expected diffusers layout")


def _scheduler_file(root: Path) -> Path:
    """The noise schedule: ``scheduler/scheduler_config.json`` (pipeline layout) or ``scheduler_config.json``."""
    return _first_existing(root, (f"scheduler/{SCHEDULER_FILE}", SCHEDULER_FILE))


def load_ldm_sr(source: str | Path) -> tuple[ModelMixin, UNet2DModel, dict]:
    """The LDM-SR layout (CompVis/ldm-super-resolution-4x-openimages): ``(vqvae, unet, scheduler)``.

    ``vqvae/`` is the f4 autoencoder, ``unet/`` the UNet on ``concat(latent, LR image)``
    and ``scheduler/scheduler_config.json`` its noise schedule.
    """
    root = resolve_source(source)
    vqvae = load_autoencoder(root, "vqvae")
    unet = load_unet(root, "unet")
    latent = vqvae.config.latent_channels
    if unet.config.out_channels != latent or unet.config.in_channels <= latent:
        raise UserError(
            f"{root / 'unet' / CONFIG_FILE}: an LDM-SR UNet maps {latent} latent channels plus the image to {latent}, "
            f"but this one maps {unet.config.in_channels} channels to {unet.config.out_channels}"
        )
    return vqvae, unet, load_scheduler_config(_scheduler_file(root))


def load_ddpm_unet(source: str | Path) -> tuple[UNet2DModel, dict]:
    """A pixel-space DDPM (google/ddpm-* layout): ``(unet, scheduler)``.

    The UNet files sit in the folder itself or in ``unet/``; the schedule in
    ``scheduler_config.json`` or ``scheduler/scheduler_config.json``.
    """
    root = resolve_source(source)
    unet_folder = _first_existing(root, (f"unet/{CONFIG_FILE}", CONFIG_FILE)).parent
    return load_network(unet_folder, UNET_CLASSES), load_scheduler_config(_scheduler_file(root))


def _stable_diffusion_parts(
    root: Path, with_image: bool
) -> tuple[AutoencoderKL, UNet2DConditionModel, dict, PromptEmbedding]:
    """``vae/``, ``unet/``, the scheduler and the empty-prompt embedding of a Stable Diffusion folder,
    checked to fit together: the UNet takes the VAE's latent channels (plus, ``with_image``, the
    image's), returns the latent channels, and attends to embeddings of the text encoder's width."""
    vae = load_network(root / "vae", {"AutoencoderKL": AutoencoderKL})
    unet = load_network(root / "unet", {"UNet2DConditionModel": UNet2DConditionModel})
    latent, config = vae.config.latent_channels, root / "unet" / CONFIG_FILE
    latent_inputs = vae.config.in_channels if with_image else 0
    if (unet.config.in_channels, unet.config.out_channels) != (latent + latent_inputs, latent):
        raise UserError(
            f"{config}: the UNet maps {unet.config.in_channels} channels to {unet.config.out_channels}, but the VAE's "
            f"{latent} latent channels{f' plus a {latent_inputs}-channel image' if latent_inputs else ''} need "
            f"{latent + latent_inputs} to {latent}"
        )
    prompt = empty_prompt_embedding(root, read_json(root / "model_index.json"))
    if prompt.embedding.shape[-1] != unet.config.cross_attention_dim:
        raise UserError(
            f"{config}: cross_attention_dim is {unet.config.cross_attention_dim}, but the text encoder gives "
            f"{prompt.embedding.shape[-1]}-wide embeddings; the folder mixes models"
        )
    return vae, unet, load_scheduler_config(_scheduler_file(root)), prompt


def load_stable_diffusion(source: str | Path) -> tuple[AutoencoderKL, UNet2DConditionModel, dict, PromptEmbedding]:
    """A ``StableDiffusionPipeline`` folder (SD 1.x, 2.x): ``(vae, unet, scheduler, c∅)``.

    ``vae/`` is the f8 KL autoencoder (``scaling_factor`` from its config), ``unet/`` the
    ``UNet2DConditionModel`` (ε or, for 2.x 768, v prediction, as the scheduler says), and
    ``c∅`` the empty-prompt embedding of ``text_encoder/`` and ``tokenizer/`` (:mod:`.prompt`).
    """
    return _stable_diffusion_parts(resolve_source(source), with_image=False)


def load_sd_upscaler(
    source: str | Path,
) -> tuple[AutoencoderKL, UNet2DConditionModel, dict, PromptEmbedding, LowResNoise]:
    """A ``StableDiffusionUpscalePipeline`` folder (the x4 upscaler): ``(vae, unet, scheduler, c∅, low_res_noise)``.

    As :func:`load_stable_diffusion`, with the f4 VAE, a UNet on ``concat(latent, LR image)``
    (4 + 3 channels) whose class label is the noise level of the LR image, and the
    ``low_res_scheduler`` that noises it (:class:`~.components.LowResNoise`).
    """
    root = resolve_source(source)
    vae, unet, scheduler, prompt = _stable_diffusion_parts(root, with_image=True)
    if vae.config.scaling_factor != UPSCALER_SCALING_FACTOR:  # as StableDiffusionUpscalePipeline.__init__ does
        log.warning("%s: the upscaler's VAE has scaling_factor %s; using %s as diffusers does",
                    root / "vae" / CONFIG_FILE, vae.config.scaling_factor, UPSCALER_SCALING_FACTOR)
        vae.register_to_config(scaling_factor=UPSCALER_SCALING_FACTOR)
    max_noise_level = int(read_json(root / "model_index.json").get("max_noise_level", 350))
    low_res = load_scheduler_config(root / "low_res_scheduler" / SCHEDULER_FILE)
    if unet.config.num_class_embeds is None or unet.config.num_class_embeds <= max_noise_level:
        raise UserError(
            f"{root / 'unet' / CONFIG_FILE}: an upscaler UNet embeds noise levels up to max_noise_level "
            f"{max_noise_level} as class labels, but num_class_embeds is {unet.config.num_class_embeds}"
        )
    return vae, unet, scheduler, prompt, LowResNoise(low_res, max_noise_level=max_noise_level)

