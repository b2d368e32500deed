"""Stable Diffusion folders (SD 1.x/2.x and the x4 upscaler) as model sets.

Each test builds a tiny random-weight pipeline with diffusers' and transformers' own
classes and the public checkpoints' config keys, saves it with ``save_pretrained`` and
reads it back both with diffusers (the reference) and with ``load_model_set``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil

import pytest
import torch
from huggingface_hub import constants

pytest.importorskip("transformers", reason="Stable Diffusion folders need transformers (the sd extra)")

from diffusers import AutoencoderKL, StableDiffusionPipeline, StableDiffusionUpscalePipeline
from trt_restore import restore
from trt_restore.api import load_models
from trt_restore.cli import main
from trt_restore.errors import UserError
from trt_restore.export.model_sets import MODEL_SETS, PUBLIC_PIPELINES, ModelSet, load_model_set
from trt_restore.export.onnx_export import export_component
from trt_restore.export.prompt import PromptEmbedding
from trt_restore.export.tiny import tiny_autoencoder_kl, tiny_inn, tiny_sd_folder, tiny_sd_upscaler_folder
from trt_restore.io import read_image, write_image
from trt_restore.metrics import psnr
from trt_restore.pipelines.schedule import scheduler_config
from trt_restore.runtime.bundle import Bundle
from trt_restore.runtime.onnxruntime_backend import OnnxRuntimeEngine

SD_VERSIONS = ("1", "2-v")  # SD 1.x (PNDMScheduler config, ε) and SD 2.x 768 (DDIMScheduler, v prediction)


def tiny_kl(blocks: int, scaling_factor: float) -> AutoencoderKL:
    return tiny_autoencoder_kl(2 ** (blocks - 1), 4, seed=9, scaling_factor=scaling_factor)


@pytest.fixture(scope="module", params=SD_VERSIONS)
def sd_reference(request, tmp_path_factory):
    return tiny_sd_folder(tmp_path_factory.mktemp(request.param) / "sd", request.param)


@pytest.fixture(scope="module")
def upscaler_reference(tmp_path_factory):
    return tiny_sd_upscaler_folder(tmp_path_factory.mktemp("upscaler") / "x4")


def onnx_matches_torch(wrapper, tmp_path, size=(32, 32)) -> None:
    """The exported graph reproduces the wrapper on example inputs."""
    spec = export_component(wrapper, tmp_path / f"{wrapper.spec.name}.onnx", example_size=size)
    inputs = wrapper.example_inputs(1, *size, seed=3)
    with torch.no_grad():
        expected = wrapper(*inputs)
    got = OnnxRuntimeEngine(tmp_path / f"{wrapper.spec.name}.onnx", spec)(
        **{t.name: x for t, x in zip(spec.inputs, inputs)}
    )["model_output"]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_sd_folder_is_a_latent_prior_with_the_stored_empty_prompt(sd_reference, tmp_path):
    reference = StableDiffusionPipeline.from_pretrained(sd_reference)
    models = load_model_set(sd_reference)
    assert set(models.networks) == {"vae", "unet"}
    expected_embedding = reference.encode_prompt("", "cpu", 1, False)[0]
    torch.testing.assert_close(models.prompts["unet"].embedding, expected_embedding, rtol=0, atol=0)
    weights = (sd_reference / "text_encoder" / "model.safetensors").read_bytes()
    provenance = models.meta["roles"]["unet"]["prompt"]
    assert provenance["text_encoder_sha256"] == hashlib.sha256(weights).hexdigest()
    assert provenance["text_encoder"] == "CLIPTextModel" and provenance["prompt"] == ""
    scheduler = models.meta["roles"]["unet"]["scheduler"]
    assert scheduler["prediction_type"] == reference.scheduler.config.prediction_type
    assert scheduler["clip_sample"] is False  # PNDM configs carry no clip_sample, and PNDM never clips
    assert models.meta["roles"]["vae"]["scaling_factor"] == pytest.approx(0.18215)

    denoiser = models.wrapper("unet", "reld")
    assert [t.name for t in denoiser.spec.inputs] == ["latent", "timestep"]
    assert denoiser.spec.meta["prompt"] == provenance
    latent = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    timestep = torch.tensor([10.0, 700.0])
    with torch.no_grad():
        expected = reference.unet(latent, timestep, encoder_hidden_states=expected_embedding.expand(2, -1, -1)).sample
        torch.testing.assert_close(denoiser(latent, timestep), expected, rtol=0, atol=0)
        image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
        expected_latent = reference.vae.encode(2 * image - 1).latent_dist.mode() * 0.18215
        torch.testing.assert_close(models.wrapper("encoder", "reld")(image), expected_latent)
    onnx_matches_torch(denoiser, tmp_path)


def test_a_saved_sd_model_set_keeps_its_prompt_embedding(sd_reference, tmp_path):
    models = load_model_set(sd_reference)
    again = ModelSet.from_folder(models.save_pretrained(tmp_path / "saved"))
    assert again.meta == models.meta
    torch.testing.assert_close(again.prompts["unet"].embedding, models.prompts["unet"].embedding, rtol=0, atol=0)


def test_reld_on_an_sd_folder_runs_the_pipelines_own_networks(sd_reference, monkeypatch):
    """RELD on the folder equals RELD on a model set made of the diffusers pipeline's own VAE, UNet,
    scheduler and ``encode_prompt("")``: the loader picks every piece the pipeline uses."""
    reference = StableDiffusionPipeline.from_pretrained(sd_reference)
    embedding = PromptEmbedding(reference.encode_prompt("", "cpu", 1, False)[0], {})
    monkeypatch.setitem(MODEL_SETS, "sd-reference", lambda: ModelSet(
        "sd-reference", {"vae": reference.vae, "unet": reference.unet},
        {"unet": scheduler_config(reference.scheduler.config)}, {"unet": embedding},
    ))
    y = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    settings = {"method": "reld", "backend": "torch", "config": {"iterations": 2}, "seed": 5, "task": "sr4", "sigma": 0.05}
    ours = restore(y, model_set=sd_reference, **settings)
    assert ours.shape == (1, 3, 64, 64)
    torch.testing.assert_close(ours, restore(y, model_set="sd-reference", **settings), rtol=0, atol=1e-6)


def test_upscaler_components_match_diffusers(upscaler_reference, tmp_path):
    reference = StableDiffusionUpscalePipeline.from_pretrained(upscaler_reference)
    models = load_model_set(upscaler_reference)
    assert set(models.networks) == {"sr_vae", "sr_unet"}
    sr_unet = models.wrapper("sr_unet", "ldm-sr")
    assert [t.name for t in sr_unet.spec.inputs] == ["latent", "lr_image", "timestep", "lr_noise"]
    meta = sr_unet.spec.meta
    assert meta["prediction_type"] == "v_prediction" and meta["low_res_noise"]["noise_level"] == 20
    assert models.meta["roles"]["sr_vae"]["scaling_factor"] == pytest.approx(0.08333)
    generator = torch.Generator().manual_seed(6)
    latent, lr, noise = (torch.randn(1, c, 8, 8, generator=generator) for c in (4, 3, 3))
    lr = lr.sigmoid()
    timestep = torch.tensor([500.0])
    level = torch.tensor([20])
    with torch.no_grad():
        noisy_lr = reference.low_res_scheduler.add_noise(2 * lr - 1, noise, level)
        expected = reference.unet(
            torch.cat((latent, noisy_lr), 1), timestep, class_labels=level,
            encoder_hidden_states=reference.encode_prompt("", "cpu", 1, False)[0],
        ).sample
        torch.testing.assert_close(sr_unet(latent, lr, timestep, noise), expected, rtol=1e-5, atol=1e-5)
    onnx_matches_torch(sr_unet, tmp_path)


@pytest.mark.parametrize("backend", ["torch", pytest.param("onnxruntime", marks=pytest.mark.slow)])
def test_upscaler_matches_diffusers_pipeline(upscaler_reference, backend):
    """Guidance scale 1 (no CFG) on the empty prompt, the same seed (so the same LR noise, drawn first, and
    the same initial latent), DDIM η = 0: ≥ 45 dB against diffusers' pipeline on the same folder."""
    reference = StableDiffusionUpscalePipeline.from_pretrained(upscaler_reference)
    low_res = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    seed, steps = 11, 10
    with torch.no_grad():
        expected = reference(
            prompt="", image=low_res, num_inference_steps=steps, guidance_scale=1.0, noise_level=20, eta=0.0,
            generator=torch.Generator().manual_seed(seed), output_type="pt",
        ).images
    ours = restore(low_res, method="ldm-sr", task="sr4", backend=backend, model_set=upscaler_reference,
                   config={"steps": steps, "eta": 0.0}, seed=seed)
    quality = psnr(ours, expected)
    print(f"SD x4 upscaler, {steps} steps on {backend} against diffusers: {quality:.1f} dB")
    assert quality >= 45


def test_ddrm_ldm_runs_on_the_upscaler(upscaler_reference):
    y = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    out = restore(y, method="ddrm-ldm", task="sr4", backend="torch", model_set=upscaler_reference,
                  config={"steps": 2}, seed=0)
    assert out.shape == (1, 3, 64, 64) and bool(torch.isfinite(out).all())


def test_an_unsupported_pipeline_folder_lists_the_supported_ones(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionXLPipeline"}))
    with pytest.raises(UserError, match="describes a 'StableDiffusionXLPipeline'; supported pipelines: ") as error:
        load_model_set(tmp_path)
    assert all(name in str(error.value) for name in PUBLIC_PIPELINES) and "\n" not in str(error.value)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["reld", "ldm-sr"])
def test_build_makes_a_bundle_that_info_describes(method, tmp_path, capsys):
    """``trt-restore build`` on an SD folder (reld) and on an upscaler folder (ldm-sr), with TensorRT-RTX
    (no GPU needed to build); ``info`` shows the stored text condition and its provenance."""
    if importlib.util.find_spec("tensorrt_rtx") is None:
        pytest.skip("tensorrt_rtx is not installed; `pip install tensorrt-rtx` to test the TensorRT build")
    (tmp_path / "folder").mkdir()
    folder = (
        tiny_sd_folder(tmp_path / "folder" / "sd", "2-v") if method == "reld"
        else tiny_sd_upscaler_folder(tmp_path / "folder" / "x4")
    )
    bundle = tmp_path / f"{method}.plan"
    profile = ("--min", "32", "32", "--opt", "32", "32", "--max", "64", "64", "--batch", "1", "1", "1")
    assert main(["build", "--method", method, "--model-set", str(folder), *profile, "--compute-capability", "8.6",
                 "-o", str(bundle)]) == 0
    capsys.readouterr()
    main(["info", str(bundle)])
    described = capsys.readouterr().out
    assert f"method {method}, model set {folder.name}, precision fp16, backend tensorrt" in described
    digest = hashlib.sha256((folder / "text_encoder" / "model.safetensors").read_bytes()).hexdigest()
    condition = f"text condition: prompt '' embedded by CLIPTextModel (text_encoder/model.safetensors, sha256 {digest[:16]})"
    assert condition in described and "prediction_type=v_prediction" in described
    assert ("low-resolution noise: level 20 of 350" in described) == (method == "ldm-sr")
    unet = "unet" if method == "reld" else "sr_unet"
    spec = Bundle.open(bundle).spec(unet)
    assert spec.meta["prompt"]["text_encoder_sha256"] == digest
    assert [t.name for t in spec.inputs][:2] == (["latent", "timestep"] if method == "reld" else ["latent", "lr_image"])


def test_vae_override_replaces_the_autoencoder_of_the_same_geometry_and_scale(sd_reference, tmp_path):
    """``--vae`` (e.g. sd-vae-ft-mse for SD 1.x): same config, other weights; the encoder is then the new VAE's."""
    tiny_kl(4, 0.18215).save_pretrained(tmp_path / "vae-ft")
    models = load_model_set(sd_reference, vae=tmp_path / "vae-ft")
    assert models.name == "sd+vae:vae-ft"
    replacement = AutoencoderKL.from_pretrained(tmp_path / "vae-ft")
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = replacement.encode(2 * image - 1).latent_dist.mode() * 0.18215
        torch.testing.assert_close(models.wrapper("encoder", "reld")(image), expected)
    assert "unet" in models.prompts
    _, loaded = load_models("reld", model_set=sd_reference, vae=tmp_path / "vae-ft", backend="torch")
    with loaded:
        torch.testing.assert_close(loaded.call("encoder", image=image), expected)


@pytest.mark.parametrize(
    ("blocks", "scaling_factor", "expected"),
    [
        (4, 0.13025, "has scaling_factor 0.13025, but the UNets of model set 'sd' were trained on latents with its vae's 0.18215"),
        (3, 0.18215, "has image_channels 3, latent_channels 4, downsample 4, which fits no autoencoder of model set 'sd'"),
    ],
)
def test_vae_override_of_another_scale_or_geometry_is_a_one_line_error(sd_reference, tmp_path, capsys, blocks,
                                                                        scaling_factor, expected):
    tiny_kl(blocks, scaling_factor).save_pretrained(tmp_path / "other-vae")
    args = ["export", "--method", "reld", "--model-set", str(sd_reference), "--vae", str(tmp_path / "other-vae"),
            "-o", str(tmp_path / "out")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and expected in err, err


def test_a_hub_id_in_the_local_cache_is_a_model_set(upscaler_reference, tmp_path, monkeypatch):
    """``--model-set owner/name`` finds a downloaded snapshot in the hub cache (nothing is fetched)."""
    snapshot = tmp_path / "hub" / "models--tiny--sd-x4-upscaler" / "snapshots" / ("0" * 40)
    shutil.copytree(upscaler_reference, snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    from_hub = load_model_set("tiny/sd-x4-upscaler")
    assert from_hub.meta["roles"]["sr_unet"] == load_model_set(upscaler_reference).meta["roles"]["sr_unet"]


@pytest.mark.slow
@pytest.mark.parametrize(("version", "method"), [("1", "indigo-pixel"), ("2-v", "indigo-latent")])
def test_latent_indigo_on_the_sd_prior_gives_the_same_image_on_torch_and_onnxruntime(tmp_path, version, method):
    """An SD folder plus INNs (pixel: 3 channels; latent: SD's 4), saved as one model set: both
    LatentINDIGO variants run the SD UNet on its stored prompt, on both backends alike."""
    models = load_model_set(tiny_sd_folder(tmp_path / "sd", version))
    models.networks.update(inn_pixel=tiny_inn(3, levels=2, seed=5), inn_latent=tiny_inn(4, levels=1, seed=6))
    folder = models.save_pretrained(tmp_path / "sd-indigo")
    y = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(8))
    settings = {"method": method, "task": "sr4", "sigma": 0.05, "model_set": folder, "config": {"steps": 3}, "seed": 2}
    outputs = [restore(y, backend=backend, **settings) for backend in ("torch", "onnxruntime")]
    assert outputs[0].shape == (1, 3, 64, 64)
    assert psnr(outputs[0], outputs[1]) >= 45


def test_restore_takes_vae_with_a_model_set_and_refuses_it_with_a_bundle(sd_reference, tmp_path, capsys):
    tiny_kl(4, 0.18215).save_pretrained(tmp_path / "vae-ft")
    low_res = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(4))
    write_image(tmp_path / "in.png", low_res)
    common = ["--method", "reld", "--task", "sr4", "--iterations", "1", "--seed", "3"]
    assert main(["restore", str(tmp_path / "in.png"), *common, "--model-set", str(sd_reference),
                 "--vae", str(tmp_path / "vae-ft"), "--backend", "torch", "-o", str(tmp_path / "out.png")]) == 0
    expected = restore(read_image(tmp_path / "in.png").data, method="reld", task="sr4", config={"iterations": 1},
                       seed=3, model_set=sd_reference, vae=tmp_path / "vae-ft", backend="torch")
    assert psnr(read_image(tmp_path / "out.png").data, expected) >= 45  # 8-bit PNG of the same image
    capsys.readouterr()
    (tmp_path / "x.plan").write_bytes(b"")
    assert main(["restore", str(tmp_path / "in.png"), *common, "--engine", str(tmp_path / "x.plan"),
                 "--vae", str(tmp_path / "vae-ft"), "-o", str(tmp_path / "out2.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--vae replaces a model set's autoencoder" in err, err


def test_an_upscaler_vae_config_without_its_scaling_factor_gets_diffusers_0_08333(upscaler_reference, tmp_path):
    """Older x4 upscaler configs lack ``scaling_factor``; diffusers' pipeline imposes 0.08333, and so does the loader."""
    folder = tmp_path / "x4"
    shutil.copytree(upscaler_reference, folder)
    config = json.loads((folder / "vae" / "config.json").read_text())
    del config["scaling_factor"]
    (folder / "vae" / "config.json").write_text(json.dumps(config))
    assert load_model_set(folder).meta["roles"]["sr_vae"]["scaling_factor"] == pytest.approx(0.08333)
    assert StableDiffusionUpscalePipeline.from_pretrained(folder).vae.config.scaling_factor == pytest.approx(0.08333)
