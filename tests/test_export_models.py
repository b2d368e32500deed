"""Tiny factories, checkpoint loaders and model sets (torch side only)."""

import dataclasses
import json
import shutil

import pytest
import torch
from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DModel, VQModel
from safetensors.torch import load_file, save_file
from trt_restore.errors import UserError
from trt_restore.export.components import Decoder, Encoder
from trt_restore.export.inn import WaveletINN
from trt_restore.export.model_sets import (
    MODEL_SETS,
    ModelSet,
    load_model_set,
    tiny_model_set,
)
from trt_restore.export.models import (
    load_autoencoder,
    load_ddpm_unet,
    load_inn,
    load_ldm_sr,
    load_unet,
)
from trt_restore.pipelines.schedule import SCHEDULER_DEFAULTS, scheduler_config
from trt_restore.export.tiny import (
    tiny_autoencoder_kl,
    tiny_autoencoder_tiny,
    tiny_inn,
    tiny_pixel_unet,
    tiny_sr_unet,
    tiny_unet,
    tiny_vq,
)
from trt_restore.methods import COMPONENTS

WEIGHTS = "diffusion_pytorch_model.safetensors"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


FACTORIES = [
    lambda seed: tiny_autoencoder_kl(8, seed=seed),
    lambda seed: tiny_autoencoder_kl(4, seed=seed),
    lambda seed: tiny_vq(seed=seed),
    lambda seed: tiny_autoencoder_tiny(seed=seed),
    lambda seed: tiny_unet(seed=seed),
    lambda seed: tiny_sr_unet(seed=seed),
    lambda seed: tiny_pixel_unet(seed=seed),
    lambda seed: tiny_inn(seed=seed),
]


@pytest.fixture(scope="module")
def tiny_set() -> ModelSet:
    return tiny_model_set()


@pytest.mark.parametrize("factory", FACTORIES)
def test_tiny_factories_are_small_seeded_and_leave_the_global_rng_alone(factory):
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a, b, c = factory(0), factory(0), factory(1)
    assert torch.rand(1) == expected_next
    assert sum(p.numel() for p in a.parameters()) <= 1_000_000
    assert not a.training
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters(), strict=True))


@pytest.mark.parametrize(
    "factory, cls",
    [(tiny_autoencoder_kl, AutoencoderKL), (tiny_vq, VQModel), (tiny_autoencoder_tiny, AutoencoderTiny)],
)
def test_load_autoencoder_picks_the_class_from_config(tmp_path, factory, cls):
    vae = factory()
    vae.save_pretrained(tmp_path)
    loaded = load_autoencoder(tmp_path)
    assert type(loaded) is cls
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        latent = Encoder(vae)(x)
        assert torch.equal(Encoder(loaded)(x), latent)
        assert torch.equal(Decoder(loaded)(latent), Decoder(vae)(latent))


def test_load_unet_and_inn_round_trip(tmp_path):
    unet, inn = tiny_unet(), tiny_inn()
    unet.save_pretrained(tmp_path / "unet")
    inn.save_pretrained(tmp_path / "inn")
    loaded_unet, loaded_inn = load_unet(tmp_path, subfolder="unet"), load_inn(tmp_path / "inn")
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([10.0, 700.0])
    with torch.no_grad():
        torch.testing.assert_close(loaded_unet(x, t).sample, unet(x, t).sample)
    assert isinstance(loaded_inn, WaveletINN) and loaded_inn.config.levels == inn.config.levels
    for a, b in zip(loaded_inn.parameters(), inn.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.fixture
def vae_folder(tmp_path):
    folder = tmp_path / "vae"
    tiny_autoencoder_kl().save_pretrained(folder)
    return folder


def test_missing_folder_and_files_name_the_path(tmp_path, vae_folder):
    with pytest.raises(UserError, match="nowhere"):
        load_autoencoder(tmp_path / "nowhere")
    (vae_folder / WEIGHTS).unlink()
    with pytest.raises(UserError, match=WEIGHTS):
        load_autoencoder(vae_folder)
    (vae_folder / "config.json").unlink()
    with pytest.raises(UserError, match="config.json"):
        load_autoencoder(vae_folder)


def _rewrite_weights(folder, edit):
    state = load_file(folder / WEIGHTS)
    edit(state)
    save_file(state, folder / WEIGHTS)


def test_mismatched_tensor_shape_names_file_and_tensor(vae_folder):
    name = "decoder.conv_in.weight"
    _rewrite_weights(vae_folder, lambda s: s.__setitem__(name, torch.zeros(3, 3, 3, 3)))
    with pytest.raises(UserError, match=rf"{WEIGHTS}.*'{name}' has shape \(3, 3, 3, 3\)"):
        load_autoencoder(vae_folder)


def test_missing_and_unexpected_tensors_are_named(vae_folder):
    _rewrite_weights(vae_folder, lambda s: s.pop("encoder.conv_out.bias"))
    with pytest.raises(UserError, match="'encoder.conv_out.bias' is missing"):
        load_autoencoder(vae_folder)
    _rewrite_weights(
        vae_folder, lambda s: s.update({"encoder.conv_out.bias": torch.zeros(8), "extra.w": torch.ones(1)})
    )
    with pytest.raises(UserError, match="unexpected tensor 'extra.w'"):
        load_autoencoder(vae_folder)


def test_corrupted_weights_and_config_are_user_errors(vae_folder):
    (vae_folder / WEIGHTS).write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="cannot read weights"):
        load_autoencoder(vae_folder)
    (vae_folder / "config.json").write_text("{broken")
    with pytest.raises(UserError, match="not valid JSON"):
        load_autoencoder(vae_folder)


def test_wrong_model_class_is_rejected(vae_folder):
    with pytest.raises(UserError, match="describes a 'AutoencoderKL'.*UNet2DModel"):
        load_unet(vae_folder)


def test_uncached_hub_id_is_a_user_error():
    with pytest.raises(UserError, match="'not-a-real/model' is neither a folder nor a hub id in the local cache"):
        load_autoencoder("not-a-real/model")


def _write_schedule(path, **config):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"_class_name": "DDIMScheduler", **config}))


def test_load_ldm_sr_layout(tmp_path):
    tiny_vq(seed=1).save_pretrained(tmp_path / "vqvae")
    tiny_sr_unet(seed=2).save_pretrained(tmp_path / "unet")
    _write_schedule(tmp_path / "scheduler" / "scheduler_config.json", beta_schedule="scaled_linear", beta_end=0.0155)
    vqvae, unet, scheduler = load_ldm_sr(tmp_path)
    assert isinstance(vqvae, VQModel) and isinstance(unet, UNet2DModel)
    assert scheduler == {**SCHEDULER_DEFAULTS, "beta_schedule": "scaled_linear", "beta_end": 0.0155}

    tiny_unet(4, 4).save_pretrained(tmp_path / "unet")
    with pytest.raises(UserError, match="LDM-SR UNet"):
        load_ldm_sr(tmp_path)


def test_load_ddpm_unet_root_layout(tmp_path):
    tiny_pixel_unet().save_pretrained(tmp_path)
    _write_schedule(tmp_path / "scheduler_config.json", prediction_type="v_prediction", num_train_timesteps=500)
    unet, scheduler = load_ddpm_unet(tmp_path)
    assert isinstance(unet, UNet2DModel)
    assert scheduler["prediction_type"] == "v_prediction" and scheduler["num_train_timesteps"] == 500

    _write_schedule(tmp_path / "scheduler_config.json", prediction_type="flow")
    with pytest.raises(UserError, match="prediction_type 'flow'"):
        load_ddpm_unet(tmp_path)
    (tmp_path / "scheduler_config.json").unlink()
    with pytest.raises(UserError, match="scheduler_config.json not found"):
        load_ddpm_unet(tmp_path)


# Every network of the tiny set once; the decoder VJP is the decoder's gradient.
ROUND_TRIP_CASES = [
    ("encoder", "reld"),
    ("decoder", "reld"),
    ("unet", "reld"),
    ("encoder", "ldm-sr"),
    ("decoder", "ldm-sr"),
    ("sr_unet", "ldm-sr"),
    ("pixel_unet", "ddrm"),
    ("inn_forward", "indigo-pixel"),
    ("inn_forward", "indigo-latent"),
]


def _outputs(model_set: ModelSet, component: str, method: str) -> tuple[torch.Tensor, ...]:
    wrapper = model_set.wrapper(component, method)
    with torch.no_grad():
        out = wrapper(*wrapper.example_inputs(1, 32, 32, seed=5))
    return out if isinstance(out, tuple) else (out,)


def test_model_set_round_trip_gives_identical_outputs(tmp_path, tiny_set):
    tiny_set.save_pretrained(tmp_path / "set")
    loaded = load_model_set(str(tmp_path / "set"))
    assert loaded.meta == tiny_set.meta
    for component, method in ROUND_TRIP_CASES:
        for a, b in zip(_outputs(loaded, component, method), _outputs(tiny_set, component, method), strict=True):
            assert torch.equal(a, b), (method, component)


def test_tiny_set_meta_and_wrapper_resolution(tiny_set):
    meta = tiny_set.meta["roles"]
    assert meta["vae"]["downsample"] == 8 and meta["vae"]["latent_channels"] == 4
    assert meta["sr_vae"] == {**meta["sr_vae"], "class": "VQModel", "downsample": 4, "scaling_factor": 1.0}
    assert meta["unet"]["scheduler"]["beta_schedule"] == "scaled_linear"
    json.dumps(tiny_set.meta)
    assert tiny_set.wrapper("decoder", "ldm-sr").spec.meta["downsample"] == 4
    assert tiny_set.wrapper("decoder", "reld").spec.meta["downsample"] == 8
    assert tiny_set.wrapper("inn_forward", "indigo-latent").spec.meta["space"] == "latent"
    assert tiny_set.wrapper("inn_forward", "indigo-pixel").spec.meta["space"] == "pixel"
    for component in COMPONENTS:
        assert tiny_set.wrapper(component).spec.name == component


def test_registered_model_set_loads_by_name(monkeypatch, tiny_set):
    monkeypatch.setitem(MODEL_SETS, "mine", lambda: tiny_set)
    assert load_model_set("mine") is tiny_set


def test_model_set_errors(tmp_path, tiny_set):
    with pytest.raises(UserError, match="unknown model set 'nope'"):
        load_model_set("nope")
    with pytest.raises(UserError, match="not a model set"):
        load_model_set(str(tmp_path))
    with pytest.raises(UserError, match="unknown component"):
        tiny_set.wrapper("vocoder")
    with pytest.raises(UserError, match="unknown method"):
        tiny_set.wrapper("decoder", "magic")
    partial = ModelSet("partial", {"pixel_unet": tiny_set.networks["pixel_unet"]}, {"pixel_unet": scheduler_config({})})
    with pytest.raises(UserError, match="no vae network"):
        partial.wrapper("encoder", "reld")
    with pytest.raises(UserError, match="no noise schedule"):
        ModelSet("bad", {"unet": tiny_set.networks["unet"]})


def test_public_pipeline_folders_become_model_sets(tmp_path):
    ldm_sr = tmp_path / "ldm-sr"
    tiny_vq().save_pretrained(ldm_sr / "vqvae")
    tiny_sr_unet().save_pretrained(ldm_sr / "unet")
    _write_schedule(ldm_sr / "scheduler" / "scheduler_config.json")
    (ldm_sr / "model_index.json").write_text(json.dumps({"_class_name": "LDMSuperResolutionPipeline"}))
    model_set = load_model_set(ldm_sr)
    assert set(model_set.networks) == {"sr_vae", "sr_unet"}
    assert model_set.wrapper("sr_unet", "ldm-sr").spec.multiple == 16

    ddpm = tmp_path / "ddpm"
    shutil.copytree(ldm_sr / "unet", ddpm)
    tiny_pixel_unet().save_pretrained(ddpm)
    _write_schedule(ddpm / "scheduler_config.json")
    (ddpm / "model_index.json").write_text(json.dumps({"_class_name": "DDPMPipeline"}))
    assert set(load_model_set(ddpm).networks) == {"pixel_unet"}


def test_model_set_settings_travel_with_the_set_and_sit_between_the_defaults_and_the_caller(tmp_path, tiny_set):
    from trt_restore.api import restore

    folder = tmp_path / "set"
    dataclasses.replace(tiny_set, settings={"ldm-sr": {"steps": 2}}).save_pretrained(folder)
    assert load_model_set(str(folder)).meta["settings"] == {"ldm-sr": {"steps": 2}}
    y = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))

    def sr(model_set, **config):
        return restore(y, "ldm-sr", task="sr4", model_set=model_set, backend="torch", config=config or None)

    with_settings = sr(str(folder))
    assert torch.equal(with_settings, sr("tiny", steps=2))
    assert not torch.equal(with_settings, sr("tiny"))  # the method's default is 50 steps
    assert torch.equal(sr(str(folder), steps=3), sr("tiny", steps=3))


def test_model_set_settings_for_some_tasks_apply_where_their_pattern_matches(tmp_path, tiny_set):
    from trt_restore.api import _pipeline, load_models
    from trt_restore.pipelines.base import settings_text

    settings = {"indigo-pixel": {"steps": 5, "gamma": 0.0, "tasks": {"sr.*": {"gamma": 4.0}, "s.*": {"steps": 9}}}}
    folder = tmp_path / "set"
    dataclasses.replace(tiny_set, settings=settings).save_pretrained(folder)
    _, models = load_models("indigo-pixel", backend="torch", model_set=str(folder))

    def config(task, **caller):
        return dataclasses.asdict(_pipeline("indigo-pixel", task, models, caller).config)

    assert config("denoise")["gamma"] == 0.0 and config("denoise")["steps"] == 5
    assert config("sr4-bicubic")["gamma"] == 4.0
    assert config("sr4-bicubic")["steps"] == 5  # the first pattern that matches applies, alone
    assert config("sr4-bicubic", gamma=1.0)["gamma"] == 1.0  # the caller's setting still wins
    assert settings_text(settings["indigo-pixel"]) == "steps 5, gamma 0 (on sr.*: gamma 4) (on s.*: steps 9)"


def test_model_set_settings_are_checked(tmp_path, tiny_set):
    from trt_restore.api import restore

    with pytest.raises(UserError, match="settings for an unknown method 'magic'"):
        dataclasses.replace(tiny_set, settings={"magic": {"steps": 2}})
    folder = tmp_path / "set"
    dataclasses.replace(tiny_set, settings={"ldm-sr": {"stepz": 2}}).save_pretrained(folder)
    with pytest.raises(UserError, match=r"no setting 'stepz' \(a setting of the model set\)"):
        restore(torch.rand(1, 3, 8, 8), "ldm-sr", task="sr4", model_set=str(folder), backend="torch")
    with pytest.raises(UserError, match=r"'sr\(' is not a regular expression"):
        dataclasses.replace(tiny_set, settings={"ldm-sr": {"tasks": {"sr(": {"steps": 2}}}})
    with pytest.raises(UserError, match="per-task settings of 'ldm-sr' must be a JSON object"):
        dataclasses.replace(tiny_set, settings={"ldm-sr": {"tasks": {"sr.*": 2}}})
