"""Training of the bundled models: the data pipeline, resumable runs, every trainer and the packaged set."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from PIL import Image
from safetensors import safe_open

from trt_restore.cli import main
from trt_restore.data import data_root
from trt_restore.demo import DEMO_IMAGES
from trt_restore.errors import UserError
from trt_restore.export.model_sets import ROLES, load_model_set
from trt_restore.train.autoencoder import AutoencoderTask
from trt_restore.train.data import SKIMAGE_SAMPLES, CropSampler, load_pool, training_files
from trt_restore.train.diffusion import LatentDiffusionTask, PixelDiffusionTask, gaussian_noise
from trt_restore.train.inn import identity_inn
from trt_restore.train.package import TUNED_SETTINGS, card_sections
from trt_restore.train.loop import CHECKPOINT, RunOptions, TrainingRun, read_checkpoint, trained_network


@pytest.fixture
def one_thread():
    """Train on one thread (the test machine is shared), restoring torch's setting afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def skimage_pool():
    return load_pool(["skimage"])


def _write_png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(path)


def test_training_files_come_from_the_train_sets_only(tmp_path, monkeypatch):
    pools = ("train/BSDS400/a.png", "train/CSunHays80/s.png", "train/CUrban100-half/u.png", "train/Train400/b.png")
    for relative in (*pools, "train/CBSD68/x.png", "test/Set5/baby.png", "test/BSD68/c.png"):
        _write_png(tmp_path / relative)
    monkeypatch.setenv("TRT_RESTORE_DATA", str(tmp_path))
    files = training_files()
    assert [path.name for path in files] == ["a.png", "s.png", "u.png", "b.png"]
    assert not any(path.resolve().is_relative_to(tmp_path / "test") for path in files)
    assert [image.name for image in load_pool(["train400"])] == ["b.png"]


def test_a_train_set_that_leads_into_test_is_refused(tmp_path, monkeypatch):
    _write_png(tmp_path / "test/Set5/baby.png")
    for relative in ("train/CSunHays80/s.png", "train/CUrban100-half/u.png", "train/Train400/b.png"):
        _write_png(tmp_path / relative)
    (tmp_path / "train").joinpath("BSDS400").symlink_to(tmp_path / "test/Set5")
    monkeypatch.setenv("TRT_RESTORE_DATA", str(tmp_path))
    with pytest.raises(UserError, match="never be trained on"):
        training_files()


def test_the_real_training_list_excludes_test_sets():
    if not (data_root() / "train").is_dir():
        pytest.skip(f"{data_root() / 'train'} not found; set TRT_RESTORE_DATA to the folder holding train/ and test/")
    files = training_files()
    assert files
    assert all("test" not in path.relative_to(data_root()).parts for path in files)


def test_package_samples_hold_out_the_demo_images(skimage_pool):
    assert not set(SKIMAGE_SAMPLES) & set(DEMO_IMAGES)
    names = {image.name.removeprefix("skimage.") for image in skimage_pool}
    assert names == set(SKIMAGE_SAMPLES)
    assert all(image.pixels.dtype == torch.uint8 and image.pixels.shape[0] == 3 for image in skimage_pool)


def test_crops_are_seeded_augmented_patches_in_unit_range(skimage_pool):
    sampler = CropSampler(skimage_pool, crop=24, min_scale=0.3)
    first = sampler.batch(6, torch.Generator().manual_seed(3))
    again = sampler.batch(6, torch.Generator().manual_seed(3))
    assert first.shape == (6, 3, 24, 24)
    assert 0 <= first.min() and first.max() <= 1
    assert torch.equal(first, again)
    assert not torch.equal(first[0], first[1])


def test_unknown_data_source_is_a_user_error():
    with pytest.raises(UserError, match="choose from: train, bsds400, csunhays80, curban100, train400, skimage, sklearn"):
        load_pool(["imagenet"])
    with pytest.raises(UserError, match="either 'train' or the sets"):
        load_pool(["train", "bsds400"])


def test_a_crop_bank_is_cut_once_and_every_batch_is_drawn_from_it(monkeypatch, skimage_pool):
    monkeypatch.setattr("trt_restore.train.diffusion.load_pool", lambda sources: skimage_pool)
    task = PixelDiffusionTask(["skimage"], arch="tiny", crop=16, bank_size=3)
    task.prepare(torch.device("cpu"), torch.Generator().manual_seed(0))
    bank = {tuple(crop.flatten().tolist()) for crop in 2 * task.bank.images.float() / 255 - 1}
    assert len(bank) == 3
    batch, condition = task.clean_batch(12, torch.Generator().manual_seed(1))
    assert condition is None and batch.shape == (12, 3, 16, 16)
    assert {tuple(crop.flatten().tolist()) for crop in batch} <= bank
    assert task.describe()["bank"] == 3
    with pytest.raises(UserError, match="--bank-size must be at least 1"):
        PixelDiffusionTask(["skimage"], arch="tiny", crop=16, bank_size=0)


def test_a_bank_size_of_zero_is_refused_for_every_diffusion_unet(tmp_path, one_thread, capsys):
    _vae_run(tmp_path, steps=1).train()  # the latent UNets need a trained vae first
    for component in ("unet", "sr_unet", "pixel_unet"):
        status = main(["train", component, "--workdir", str(tmp_path), "--arch", "tiny", "--data", "skimage",
                       "--steps", "1", "--bank-size", "0", "--threads", "1"])
        assert status != 0 and "--bank-size must be at least 1" in capsys.readouterr().err, component
        assert read_checkpoint(tmp_path, component) is None


def test_the_steps_noise_repeats_from_the_generators_state():
    generator = torch.Generator().manual_seed(5)
    state = generator.get_state()
    first = gaussian_noise((2, 3, 4, 4), generator, torch.device("cpu"))
    generator.set_state(state)
    assert torch.equal(first, gaussian_noise((2, 3, 4, 4), generator, torch.device("cpu")))
    assert not torch.equal(first, gaussian_noise((2, 3, 4, 4), generator, torch.device("cpu")))


def _vae_run(workdir: Path, steps: int) -> TrainingRun:
    task = AutoencoderTask(["skimage"], arch="tiny", crop=32)
    return TrainingRun(task, RunOptions(workdir=workdir, steps=steps, batch_size=2, log_every=1), report=lambda line: None)


def test_a_run_resumes_from_its_checkpoint(tmp_path, one_thread):
    first = _vae_run(tmp_path, steps=2)
    assert not first.resume()
    first.train()
    checkpoint = read_checkpoint(tmp_path, "vae")
    assert checkpoint["step"] == 2
    assert all(math.isfinite(record["loss"]) for record in checkpoint["history"])
    scale = checkpoint["network_config"]["scaling_factor"]  # measured: 1/√E[μ²]
    assert scale not in (1.0, AutoencoderKL().config.scaling_factor)
    assert trained_network(tmp_path, "vae").config.scaling_factor == scale

    second = _vae_run(tmp_path, steps=3)
    assert second.resume()
    assert second.step == 2
    for name, tensor in second.model.state_dict().items():
        assert torch.equal(tensor, checkpoint["model"][name]), name
    for name, tensor in second.ema.state_dict().items():
        assert torch.equal(tensor, checkpoint["ema"][name]), name
    second.train()
    assert read_checkpoint(tmp_path, "vae")["step"] == 3
    assert [record["step"] for record in second.history] == [1, 2, 3]


def test_resuming_with_another_architecture_is_refused(tmp_path, one_thread):
    _vae_run(tmp_path, steps=1).train()
    other = TrainingRun(AutoencoderTask(["skimage"], arch="small", crop=32), RunOptions(workdir=tmp_path, steps=2))
    with pytest.raises(UserError, match="another architecture"):
        other.resume()


def test_latent_trainers_need_the_trained_vae(tmp_path):
    with pytest.raises(UserError, match="train vae"):
        LatentDiffusionTask(tmp_path, ["skimage"], arch="tiny", crop=32)


def test_a_run_needs_a_budget(tmp_path):
    with pytest.raises(UserError, match="budget"):
        RunOptions(workdir=tmp_path)
    assert main(["train", "vae", "--workdir", str(tmp_path), "--steps", "0"]) == 2


def test_every_trainer_runs_and_the_package_loads_as_float32(tmp_path, one_thread):
    workdir, out = tmp_path / "work", tmp_path / "models"
    common = ["--workdir", str(workdir), "--arch", "tiny", "--data", "skimage", "--steps", "1", "--batch-size", "2", "--log-every", "1"]
    for component in ("vae", "unet", "sr_unet", "pixel_unet", "inn_pixel", "inn_latent"):
        assert main(["train", component, *common, "--crop", "32"]) == 0, component
        losses = read_checkpoint(workdir, component)["history"]
        assert math.isfinite(losses[-1]["loss"]), component
    assert main(["train", "package", "--workdir", str(workdir), "--out", str(out)]) == 0

    model_set = load_model_set(out)
    assert sorted(model_set.networks) == sorted(ROLES)
    with safe_open(out / "unet" / "diffusion_pytorch_model.safetensors", "pt") as weights:
        assert {weights.get_tensor(name).dtype for name in weights.keys()} == {torch.float16}
    assert all(p.dtype == torch.float32 for net in model_set.networks.values() for p in net.parameters())
    assert model_set.meta["roles"]["vae"]["downsample"] == model_set.meta["roles"]["sr_vae"]["downsample"] == 4
    scale = read_checkpoint(workdir, "vae")["network_config"]["scaling_factor"]
    assert model_set.meta["roles"]["vae"]["scaling_factor"] == pytest.approx(scale)
    cards = (out / "README.md").read_text()
    assert all(f"## {role}" in cards for role in ROLES)
    assert (workdir / "vae" / CHECKPOINT).is_file()
    assert (out / "training_curves.png").read_bytes().startswith(b"\x89PNG") and "training_curves.png" in cards
    assert model_set.schedulers["sr_unet"]["prediction_type"] == "v_prediction"
    assert model_set.schedulers["sr_unet"]["timestep_spacing"] == "trailing"
    assert model_set.settings == {**TUNED_SETTINGS["sr_unet"], **TUNED_SETTINGS["unet"]}
    assert model_set.schedulers["unet"]["timestep_spacing"] == "trailing"
    channels = model_set.meta["roles"]["vae"]["latent_channels"]
    latent, cond = torch.randn(2, channels, 8, 8), torch.randn(2, model_set.network("inn_latent").config.cond_dim)
    with torch.no_grad():  # the shipped latent INN is the plain Haar lifting
        for shipped, haar in zip(model_set.network("inn_latent")(latent, cond), identity_inn("latent", channels)(latent, cond), strict=True):
            assert torch.equal(shipped, haar)
    assert "| training | none: the identity INN" in card_sections(out / "README.md")["inn_latent"]


def test_a_partly_trained_work_folder_keeps_the_other_networks(tmp_path, one_thread):
    first, second = tmp_path / "first", tmp_path / "second"
    common = ["--arch", "tiny", "--data", "skimage", "--steps", "1", "--batch-size", "2", "--crop", "32"]
    for component in ("vae", "unet", "sr_unet", "pixel_unet", "inn_pixel", "inn_latent"):
        assert main(["train", component, "--workdir", str(tmp_path / "work"), *common]) == 0, component
    assert main(["train", "package", "--workdir", str(tmp_path / "work"), "--out", str(first)]) == 0
    model_set_settings = {**TUNED_SETTINGS["sr_unet"], **TUNED_SETTINGS["unet"]}
    assert main(["train", "pixel_unet", "--workdir", str(tmp_path / "new"), *common, "--seed", "1"]) == 0
    assert main(["train", "package", "--workdir", str(tmp_path / "new"), "--out", str(second), "--keep-from", str(first)]) == 0

    weights = "diffusion_pytorch_model.safetensors"
    for role in ROLES:
        same = (first / role / weights).read_bytes() == (second / role / weights).read_bytes()
        assert same == (role != "pixel_unet"), role
    old_cards, new_cards = card_sections(first / "README.md"), card_sections(second / "README.md")
    assert all(new_cards[role] == old_cards[role] for role in ROLES if role != "pixel_unet")
    assert new_cards["pixel_unet"] != old_cards["pixel_unet"]
    assert load_model_set(second).settings == load_model_set(first).settings == model_set_settings  # kept

    shutil.copytree(tmp_path / "work" / "unet", tmp_path / "new" / "unet")
    # a unet trained on another autoencoder's latents cannot join the kept one
    assert main(["train", "package", "--workdir", str(tmp_path / "new"), "--out", str(tmp_path / "x"), "--keep-from", str(first)]) == 2


def test_latent_networks_train_on_a_packaged_sets_vae_and_ship_with_it(tmp_path, one_thread):
    work, first, second = tmp_path / "work", tmp_path / "first", tmp_path / "second"
    common = ["--arch", "tiny", "--data", "skimage", "--steps", "1", "--batch-size", "2", "--crop", "32"]
    for component in ("vae", "unet", "sr_unet"):
        assert main(["train", component, "--workdir", str(work), *common]) == 0, component
    assert main(["train", "package", "--workdir", str(work), "--out", str(first)]) == 0
    for component in ("unet", "sr_unet"):  # no vae in this work folder: the packaged set's
        assert main(["train", component, "--workdir", str(tmp_path / "new"), *common, "--seed", "1", "--vae-from", str(first)]) == 0
    task = LatentDiffusionTask(tmp_path / "new", ["skimage"], arch="tiny", crop=32, vae_from=first)
    shipped = load_model_set(first).network("vae").state_dict()
    assert all(torch.equal(tensor, shipped[name]) for name, tensor in task.vae.state_dict().items())
    assert "--vae-from" in read_checkpoint(tmp_path / "new", "unet")["facts"]["command"]
    assert main(["train", "pixel_unet", "--workdir", str(tmp_path / "new"), *common, "--vae-from", str(first)]) == 2
    assert read_checkpoint(tmp_path / "new", "pixel_unet") is None

    assert main(["train", "package", "--workdir", str(tmp_path / "new"), "--out", str(second), "--keep-from", str(first)]) == 0
    weights = "diffusion_pytorch_model.safetensors"
    for role in ROLES:
        same = (first / role / weights).read_bytes() == (second / role / weights).read_bytes()
        assert same == (role not in ("unet", "sr_unet")), role
    # the same networks next to another autoencoder: the work folder's float32 one, not its float16 package
    shutil.copytree(work / "vae", tmp_path / "new" / "vae")
    assert main(["train", "package", "--workdir", str(tmp_path / "new"), "--out", str(tmp_path / "x"), "--keep-from", str(first)]) == 2
