"""Parity with the reference implementations, whose results diffusers computes itself.

Every reference here comes from a folder written with ``save_pretrained`` and read back by
diffusers on one side and by the project's loaders on the other, never from the
project's stored schedule.
"""

import json

import pytest
import torch
from diffusers import DDIMScheduler, UNet2DModel, VQModel
from diffusers.pipelines.latent_diffusion.pipeline_latent_diffusion_superresolution import (
    LDMSuperResolutionPipeline,
)
from trt_restore import restore
from trt_restore.errors import UserError
from trt_restore.export.models import load_scheduler_config
from trt_restore.metrics import psnr
from trt_restore.pipelines.schedule import SCHEDULER_DEFAULTS, NoiseSchedule

SPACINGS = ("leading", "trailing", "linspace")


def saved_scheduler(tmp_path, **config) -> tuple[DDIMScheduler, NoiseSchedule]:
    """diffusers' scheduler and the project's schedule, both read from one saved folder."""
    DDIMScheduler(**config).save_pretrained(tmp_path)
    reference = DDIMScheduler.from_pretrained(tmp_path)
    return reference, NoiseSchedule.from_config(load_scheduler_config(tmp_path / "scheduler_config.json"))


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("set_alpha_to_one", [True, False])
@pytest.mark.parametrize("steps", [10, 7, 50])
def test_ddim_timesteps_and_alphas_match_diffusers(tmp_path, spacing, set_alpha_to_one, steps):
    reference, ours = saved_scheduler(
        tmp_path,
        beta_schedule="scaled_linear",
        beta_start=0.0015,
        beta_end=0.0155,
        steps_offset=1,
        timestep_spacing=spacing,
        set_alpha_to_one=set_alpha_to_one,
    )
    reference.set_timesteps(steps)
    expected = [int(t) for t in reference.timesteps]
    assert [t for t, _ in ours.ddim_pairs(steps)] == expected
    ratio = reference.config.num_train_timesteps // steps
    for t, t_prev in ours.ddim_pairs(steps):
        assert t_prev == t - ratio  # DDIMScheduler.step's previous timestep
        expected_prev = float(reference.alphas_cumprod[t_prev]) if t_prev >= 0 else float(reference.final_alpha_cumprod)
        assert ours.alpha(t_prev) == pytest.approx(expected_prev, rel=1e-5)
    torch.testing.assert_close(ours.alphas_cumprod.float(), reference.alphas_cumprod, rtol=1e-5, atol=0)


STEP_CONFIGS = {
    "epsilon, clipped": {"prediction_type": "epsilon", "clip_sample": True, "clip_sample_range": 0.5},
    "v, zero terminal SNR": {"prediction_type": "v_prediction", "rescale_betas_zero_snr": True, "clip_sample": False,
                             "timestep_spacing": "trailing"},
    "sample, thresholded": {"prediction_type": "sample", "thresholding": True, "dynamic_thresholding_ratio": 0.9,
                            "sample_max_value": 1.5},
    "cosine, unclipped": {"beta_schedule": "squaredcos_cap_v2", "clip_sample": False, "steps_offset": 1},
}


@pytest.mark.parametrize("name", STEP_CONFIGS)
def test_ddim_step_matches_diffusers(tmp_path, name):
    """x̂₀ clipping, thresholding, zero-SNR betas and every prediction type: one DDIM step each."""
    reference, ours = saved_scheduler(tmp_path, **STEP_CONFIGS[name])
    steps = 10
    reference.set_timesteps(steps)
    generator = torch.Generator().manual_seed(0)
    sample = 1.5 * torch.randn(2, 3, 8, 8, generator=generator, dtype=torch.float64)
    for t, t_prev in ours.ddim_pairs(steps):
        model_output = 1.5 * torch.randn(2, 3, 8, 8, generator=generator, dtype=torch.float64)
        expected = reference.step(model_output, t, sample, eta=0.0).prev_sample
        x0, eps = ours.split_prediction(model_output, sample, t)
        got = ours.ddim_step(x0, eps, t, t_prev, eta=0.0, noise=None)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        sample = expected


def test_every_field_is_kept_and_unknown_fields_are_refused(tmp_path):
    DDIMScheduler(steps_offset=1, thresholding=True, timestep_spacing="trailing").save_pretrained(tmp_path)
    config = load_scheduler_config(tmp_path / "scheduler_config.json")
    assert set(config) == set(SCHEDULER_DEFAULTS)
    assert (config["steps_offset"], config["thresholding"], config["timestep_spacing"]) == (1, True, "trailing")
    saved = json.loads((tmp_path / "scheduler_config.json").read_text())
    (tmp_path / "scheduler_config.json").write_text(json.dumps({**saved, "karras_sigmas": True}))
    with pytest.raises(UserError, match="scheduler field\\(s\\) karras_sigmas are not supported"):
        load_scheduler_config(tmp_path / "scheduler_config.json")
    with pytest.raises(UserError, match="rescale_betas_zero_snr .* epsilon-prediction"):
        NoiseSchedule.from_config({"rescale_betas_zero_snr": True})
    with pytest.raises(UserError, match="timestep_spacing 'karras' is not supported"):
        NoiseSchedule.from_config({"timestep_spacing": "karras"})


def ldm_sr_folder(path):
    """A random-weight LDM-SR pipeline folder with non-default scheduler values.

    The VQ codebook is spread like the latents (N(0, 1)), so that quantisation maps nearby
    latents to different codes and a drift in the sampler shows in the decoded image.
    """
    torch.manual_seed(0)
    vqvae = VQModel(
        block_out_channels=(32, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        latent_channels=3,
        num_vq_embeddings=256,
        norm_num_groups=8,
        layers_per_block=1,
    )
    with torch.no_grad():
        vqvae.quantize.embedding.weight.normal_()
    unet = UNet2DModel(
        in_channels=6,
        out_channels=3,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=8,
        attention_head_dim=8,
    )
    scheduler = DDIMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.0015,
        beta_end=0.0155,
        steps_offset=1,
        set_alpha_to_one=False,
        clip_sample=False,
    )
    LDMSuperResolutionPipeline(vqvae=vqvae.eval(), unet=unet.eval(), scheduler=scheduler).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def ldm_sr_reference(tmp_path_factory):
    return ldm_sr_folder(tmp_path_factory.mktemp("ldm-sr"))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
@pytest.mark.parametrize("steps", [10, 50])
def test_ldm_sr_matches_diffusers_pipeline_on_a_saved_folder(ldm_sr_reference, backend, steps):
    """Same folder, same initial latent (same seed), DDIM η = 0: ≥ 45 dB against diffusers."""
    reference = LDMSuperResolutionPipeline.from_pretrained(ldm_sr_reference)
    low_res = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    seed = 11
    with torch.no_grad():
        expected = reference(
            2 * low_res - 1, num_inference_steps=steps, eta=0.0, generator=torch.Generator().manual_seed(seed),
            output_type="pt",
        ).images
    ours = restore(low_res, method="ldm-sr", task="sr4", backend=backend, model_set=ldm_sr_reference,
                   config={"steps": steps, "eta": 0.0}, seed=seed)
    quality = psnr(ours, expected)
    print(f"LDM-SR {steps} steps on {backend} against diffusers: {quality:.1f} dB")
    assert quality >= 45
