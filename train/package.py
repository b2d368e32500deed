"""Package the trained networks as the bundled model set, with a model card per role.

The set is written by :meth:`ModelSet.save_pretrained` with float16 weights (they load
back as float32), then read back and measured on the held-out images
(:mod:`.evaluation`), so the cards describe exactly the files that ship. The cards go
to ``README.md`` in the same folder, one section per role.

A work folder need not hold every component: the ones it lacks are kept, network, noise
schedule and card, from a packaged set (by default the bundled one), so that a set can be
improved one model at a time. The networks trained on the autoencoder's latents ship with
the autoencoder they were trained on, checked by its weights' digest: a new ``vae`` needs all of
them trained again, and ones trained with ``--vae-from`` a set keep that set's ``vae``. The roles of :data:`IDENTITY_ROLES`
ship as the identity INN on the new autoencoder's latents, whatever the work folder holds.
"""

from __future__ import annotations

import copy
from pathlib import Path

from diffusers.models.modeling_utils import ModelMixin

from trt_restore.demo import DEMO_IMAGES
from trt_restore.errors import UserError
from trt_restore.export.components import autoencoder_meta
from trt_restore.export.model_sets import UNET_ROLES, ModelSet, default_models_folder
from trt_restore.export.models import WEIGHT_FILES
from trt_restore.pipelines.base import settings_text

from .evaluation import EVAL_SIZE, EVAL_STEPS, autoencoder_quality, denoising_quality, held_out_images, inn_quality
from .inn import identity_inn
from .loop import final_losses, read_checkpoint, trained_network, weights_digest
from .registry import COMPONENTS, LATENT_COMPONENTS

SET_NAME = "bundled"
CARDS = "README.md"
CURVES = "training_curves.png"
# Role → the component whose checkpoint fills it; sr_vae shares the f=4 autoencoder.
ROLE_SOURCES = {
    "vae": "vae",
    "sr_vae": "vae",
    "unet": "unet",
    "sr_unet": "sr_unet",
    "pixel_unet": "pixel_unet",
    "inn_pixel": "inn_pixel",
    "inn_latent": "inn_latent",
}
NOTES = {
    "vae": (
        "8 latent channels: the best linear f4 code (PCA of 4×4×3 patches of the colour training pools) "
        "reconstructs the held-out images at 23.2 dB with 4 components, the old autoencoder's level (23.1 dB), "
        "against 30.4 dB with 8. Downsampling 4, not 8: one autoencoder serves both `vae` and `sr_vae` (LDM-SR x4 "
        "needs the low-resolution image at the latent's size). The mean-colour term (8×8 average-pooled L1) "
        "targets the colour cast of the first version."
    ),
    "sr_vae": "The same weights as `vae` (see its card).",
    "sr_unet": (
        "v-prediction: a first ε-prediction run (12 min) learned to ignore the low-resolution condition at high "
        "noise, where the ε-loss hardly depends on x₀; sampled from pure noise it kept the prior's mean colour "
        "whatever the input (LDM-SR 11.9 dB on the held-out images against 21.0 dB for bicubic)."
    ),
    "inn_latent": (
        "Shipped untrained, as the identity INN: the trained ones restored worse with indigo-latent on the held-out "
        "images (after 30 min of training, gain over the degraded input trained / identity: sr4-bicubic −4.10 / −1.92 dB, "
        "deblur-gauss +1.77 / +4.02, denoise +0.87 / +1.14), although their coarse part matched some observations "
        "(blur, inpainting, colourisation) better."
    ),
    "pixel_unet": (
        "Trained on a GPU (one H200) in place of the previous version's 25 minutes on one CPU thread (2637 steps × 16 "
        "crops of 32 px): the one-step estimate on the held-out images rose from 26.39 to 28.39 dB at t=100 and from "
        "17.83 to 19.98 dB at t=400, and DDRM's gain over the degraded input there from +8.24 to +9.75 dB on denoising "
        "(σ 25/255), +5.04 to +6.69 on deblur-gauss, +0.90 to +1.87 on sr4-bicubic and +15.73 to +16.95 on inpainting 50 %."
    ),
    "inn_pixel": (
        "For denoising and box-average SR the identity INN's box average is already the exact coarse target "
        "(hence its infinite or float-precision PSNR there): training can only keep it; it has something to learn "
        "for blur, bicubic SR, inpainting and colourisation. The previous version's data held `train/CBSD68`, the "
        "colour BSD68 test images; this one never saw them. indigo-pixel's gain over the degraded input on the "
        "held-out images, previous → this INN: sr4-bicubic −0.01 → +0.06 dB, denoise +4.45 → +4.97, deblur-gauss "
        "+5.81 → +5.84, inpainting 50 % +15.29 → +15.08."
    ),
}


# Roles that ship untrained, as the identity INN (the plain Haar lifting), because the trained
# ones restored worse on the held-out images (the measurements are in their NOTES, on the card).
IDENTITY_ROLES = ("inn_latent",)
# Method settings tuned for a newly trained role (model_set.json "settings"), on the held-out images.
# LDM-SR, sr4-bicubic, 8-channel f4 autoencoder, sr_unet of 4224 steps, trailing timesteps, PSNR
# against bicubic's 24.36 dB: 1 step 23.43, 2 steps 23.96, 3 23.82, 5 23.62, 10 23.22, 50 (the
# method's default, leading timesteps) 22.18. Fewer steps keep the sample nearer the x₀ regression.
# LatentINDIGO, unet of 3532 steps, trailing timesteps, identity latent INN, gain over the degraded
# input: indigo-latent sr4-bicubic 3 steps −1.15 dB, 5 −0.91, 10 −1.20, 20 −1.54, 50 (leading) −1.92;
# deblur-gauss 3 +4.28, 5 +4.55, 10 +4.44, 50 (leading) +4.02; denoise 5 +1.18, 10 +1.17, 50 +1.14.
# indigo-pixel sr4-bicubic 5 −1.37, 10 −1.88, 50 −2.78; deblur-gauss 5 +4.09; denoise 5 +0.94.
# With the data step at every guided step (unet of 5447 steps, 5 steps; gain indigo-latent / indigo-pixel on
# sr4-bicubic, denoise, deblur-gauss): η 0, γ 0.25, e 0.1: +0.15 / −0.42, +1.55 / +3.32, +5.76 / +5.58;
# η 1: sr4 +0.38 / +0.02; η 1, γ 0: sr4 +0.39 / −0.01, e 0.04 denoise +1.83 / +2.05, e 0.06 +3.76 / +3.82,
# e 0.08 +4.47 / +4.45 and deblur +6.01 / +5.81, e 0.1 +4.13 / +4.11 and +5.82 / +5.66, e 0.14 deblur
# +5.01 / +4.91, e 0.2 denoise +1.61 / +1.61; inpaint 50 % σ 0.01 (e 0.08) γ 0 +8.16 / +15.29, γ 0.25
# +8.48 / +14.42, γ 1 +9.04 / +11.50. The identity pixel INN in place of the trained one: sr4 −0.07,
# denoise +5.10, deblur +5.98, but inpaint +8.00: the trained one stays.
# DDRM-LDM, sr4-bicubic, sr_unet of 6883 steps, gain over bicubic: 1 step −10.83 dB, 2 +0.64 (η 0:
# +0.62), 3 +0.23, 4 +0.01, 5 −0.03, 10 −0.04, 20 (the method's default) +0.09.
# RELD, unet of 5447 steps (λ; Den's steps p from → to; PSNR in dB on denoise σ 25/255 / deblur-gauss /
# sr4-bicubic; noisy 20.65, blurred 23.26, bicubic 24.36): the method's defaults (1; 400 → 40) 24.01 (τ 0.1) /
# 28.65 / 25.30; 0.5; 150 → 20 24.82 / 29.23 / 25.55; 0.5; 80 → 10 24.86 / 29.37 / 25.55; 1; 80 → 10 24.75
# (60 → 10) / 29.00 / 25.43; 0.25; 100 → 10 24.84 / 29.61 / 25.60; λ 0 (no prior) 24.66 / 29.73 / 25.39.
# Den at a high p over-smooths; this prior adds at most ~0.2 dB over λ 0, and costs 0.1 dB on deblurring.
# With the output's own τ_out and the task defaults of RELD that use it (denoise τ 0.5, τ_out 0.02; deblur
# τ 0.1), the same unet and p 100 → 10, PSNR for λ 0 / 0.25 / 0.5 / 1 / 2 on denoise: 27.65 / 28.11 /
# 28.20 / 27.87 / 26.68; λ 0 / 0.25 on deblur-gauss 28.67 / 29.87 and on sr4-bicubic 25.36 / 25.56 (τ 0.04).
# λ 0.25 stays: the prior is now worth +0.46, +1.20 and +0.20 dB; p 200 → 20 on denoise: 28.12.
# indigo-pixel, the same settings, γ on ×4 SR (256² held-out crops, gain over bicubic): sr4-bicubic γ 0 −0.14,
# 0.25 −0.04, 0.5 +0.02, 1 +0.11, 2 +0.22, 4 +0.27, 8 +0.30, 10⁶ (the guided estimate left out) +0.32;
# sr4-gauss γ 0 +3.55, 4 +4.15; but sr4 (box) γ 0 −0.48, 4 −1.76 and sr2-bicubic γ 0 +2.43, 4 +1.24. The INN's
# coarse grid is a 4× box average: where y is that (box) or near it (2× bicubic, then box-averaged) its guidance
# helps; where y measures a wider kernel at 4× (bicubic, Gaussian) the guided estimate departs from the data step's
# and the prior does better. γ 4: the smallest within 0.05 dB of the best on sr4-bicubic. steps 10 −0.20, 20
# −0.51, η 0 −0.50, guide_from 500 −0.55 (all at γ 0). indigo-latent sr4-bicubic γ 0 +0.26, 4 +0.31: kept at 0.
INDIGO_SETTINGS = {"steps": 5, "eta": 1.0, "gamma": 0.0, "prior_error": 0.08}
TUNED_SETTINGS = {
    "sr_unet": {"ldm-sr": {"steps": 2}, "ddrm-ldm": {"steps": 2}},
    "unet": {
        "indigo-latent": INDIGO_SETTINGS,
        "indigo-pixel": {**INDIGO_SETTINGS, "tasks": {"sr4-bicubic": {"gamma": 4.0}, "sr4-gauss": {"gamma": 4.0}}},
        "reld": {"lam": 0.25, "p_start": 100, "p_end": 10},
    },
}


def package_models(workdir: Path, out: Path | None = None, keep_from: Path | None = None) -> Path:
    """Write the trained networks of ``workdir`` as a model set in ``out`` (float16) with model cards.

    Components with no checkpoint in ``workdir`` are kept from the packaged set ``keep_from``
    (default: the bundled set), with their cards (module docstring).
    """
    out = Path(out) if out is not None else default_models_folder()
    checkpoints = {c: checkpoint for c in COMPONENTS
                   if c not in IDENTITY_ROLES and (checkpoint := read_checkpoint(workdir, c)) is not None}
    if not checkpoints:
        raise UserError(f"{workdir} holds no trained component; run `trt-restore train COMPONENT --workdir {workdir}` first")
    needed = [c for c in LATENT_COMPONENTS if c not in IDENTITY_ROLES]
    if "vae" in checkpoints and not set(needed) <= set(checkpoints):
        raise UserError(f"{workdir} has a new vae but not {', '.join(c for c in needed if c not in checkpoints)}; "
                        "the networks trained on its latents must be trained again too")
    keep_from = Path(keep_from) if keep_from is not None else default_models_folder()
    kept, kept_cards = ModelSet.from_folder(keep_from), card_sections(keep_from / CARDS)
    vae_source = workdir if "vae" in checkpoints else keep_from
    shipped_vae = weights_digest(trained_network(workdir, "vae") if "vae" in checkpoints else kept.network("vae"))
    for component in (c for c in needed if c in checkpoints):
        if checkpoints[component]["facts"].get("vae") != shipped_vae:
            raise UserError(f"{component} in {workdir} was trained on another autoencoder's latents than the vae of {vae_source}; "
                            "package it with the vae it was trained on (--keep-from the set named by its --vae-from)")
    trained = [role for role, component in ROLE_SOURCES.items() if component in checkpoints]
    networks = {role: copy.deepcopy(trained_network(workdir, ROLE_SOURCES[role])).half() if role in trained
                else kept.network(role).half() for role in ROLE_SOURCES}
    if "vae" in trained:  # identity roles follow the autoencoder's latent channels
        channels = autoencoder_meta(networks["vae"])["latent_channels"]
        networks.update({role: identity_inn(role.removeprefix("inn_"), channels).half() for role in IDENTITY_ROLES})
        trained += IDENTITY_ROLES
    schedulers = {role: checkpoints[role]["facts"]["schedule"] if role in trained else kept.schedulers[role]
                  for role in UNET_ROLES}
    settings = dict(kept.settings)
    for role in trained:
        settings.update(TUNED_SETTINGS.get(role, {}))
    ModelSet(SET_NAME, networks, schedulers, settings=settings).save_pretrained(out)
    shipped = ModelSet.from_folder(out)
    (out / CARDS).write_text(model_cards(shipped, checkpoints, out, {r: kept_cards[r] for r in ROLE_SOURCES if r not in trained}))
    plot_training_curves(checkpoints, out / CURVES)
    return out


def card_sections(cards: Path) -> dict[str, str]:
    """The ``## role`` sections of a model-card file, by role (empty when there is no file)."""
    if not cards.is_file():
        return {}
    sections = cards.read_text().split("\n## ")[1:]
    return {section.split("\n", 1)[0].strip(): "## " + section.rstrip() + "\n" for section in sections}


def plot_training_curves(checkpoints: dict[str, dict], path: Path) -> None:
    """One panel per component: the logged training loss (mean over each log window) against minutes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(checkpoints), figsize=(3.2 * len(checkpoints), 2.8), squeeze=False)
    for axis, (component, checkpoint) in zip(axes[0], checkpoints.items()):
        history = checkpoint["history"]
        axis.plot([r["minutes"] for r in history], [r["loss"] for r in history], lw=1.2)
        axis.set(title=component, xlabel="minutes of steps", yscale="log")
        axis.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("training loss")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def _parameters(network: ModelMixin) -> str:
    return f"{sum(p.numel() for p in network.parameters()) / 1e6:.2f} M parameters"


def _megabytes(folder: Path) -> float:
    return sum((folder / name).stat().st_size for name in WEIGHT_FILES if (folder / name).is_file()) / 2**20


def _network_line(role: str, network: ModelMixin) -> str:
    name = type(network).__name__
    if role in ("vae", "sr_vae"):
        meta = autoencoder_meta(network)
        return (
            f"{name}, downsampling {meta['downsample']}, {meta['latent_channels']} latent channels, "
            f"latent scale {meta['scaling_factor']:.4g}, {_parameters(network)}"
        )
    if role.startswith("inn"):
        config = network.config
        levels = f"{config.levels} level{'s' if config.levels > 1 else ''}"
        return f"{name}, {config.channels} channels, {levels} of {config.steps} lifting steps, {_parameters(network)}"
    config = network.config
    return (
        f"{name}, {config.in_channels} → {config.out_channels} channels, widths {tuple(config.block_out_channels)}, "
        f"{_parameters(network)}"
    )


def _quality(role: str, model_set: ModelSet, images) -> str:
    held_out = f"the held-out images ({', '.join(DEMO_IMAGES)}, {EVAL_SIZE} px)"
    if role in ("vae", "sr_vae"):
        scores = autoencoder_quality(model_set.network(role), images)
        listed = ", ".join(f"{name} {value:.2f} dB" for name, value in scores.items())
        return f"reconstruction PSNR on {held_out}: {listed}; mean {sum(scores.values()) / len(scores):.2f} dB"
    if role.startswith("inn"):
        encoder = model_set.wrapper("encoder", "reld") if role == "inn_latent" else None
        scores = inn_quality(model_set.network(role), images, encoder)
        listed = ", ".join(f"{task} {trained:.1f} ({identity:.1f})" for task, (trained, identity) in scores.items())
        return f"PSNR of the coarse part against the noiseless observation's coarse target on {held_out}, trained (identity INN): {listed}"
    scores = denoising_quality(model_set, role, images)
    listed = ", ".join(f"t={t}: {scores[f'x0 t={t}']:.2f} dB (input {scores[f'input t={t}']:.2f} dB)" for t in EVAL_STEPS)
    return f"PSNR of the one-step clean estimate on {held_out}: {listed}"


def _card(role: str, model_set: ModelSet, checkpoint: dict | None, folder: Path, images) -> str:
    """The card of a trained role, or of an identity role (``checkpoint`` None)."""
    rows = [
        ("network", _network_line(role, model_set.network(role))),
        ("weights", f"`{role}/{WEIGHT_FILES[0]}`, float16, {_megabytes(folder / role):.2f} MB"),
    ]
    untrained = [("training", "none: the identity INN (the plain Haar lifting), see the notes")]
    rows += untrained if checkpoint is None else _training_rows(checkpoint)
    rows.append(("quality", _quality(role, model_set, images)))
    if checkpoint is not None:
        rows.append(("command", f"`{checkpoint['facts']['command']}`"))
    if role in NOTES:
        rows.append(("notes", NOTES[role]))
    table = "\n".join(f"| {key} | {value} |" for key, value in rows)
    return f"## {role}\n\n| | |\n| --- | --- |\n{table}\n"


def _training_rows(checkpoint: dict) -> list[tuple[str, str]]:
    """The card rows of a training run: data, loss, schedule, steps and time, final loss."""
    facts = checkpoint["facts"]
    history = checkpoint["history"]
    losses = ", ".join(f"{key} {value:.4g}" for key, value in final_losses(history).items())
    window = history[-1]["step"] - (history[-2]["step"] if len(history) > 1 else 0)
    rows = [
        ("data", f"{facts['data']}; {facts['crop']} px crops at scales {facts['min_scale']:g}–1, flips and 90° rotations"),
    ]
    rows += [(key, str(facts[key])) for key in ("loss", "observations") if key in facts]
    if "schedule" in facts:
        schedule = facts["schedule"]
        rows.append(("schedule", f"{schedule['beta_schedule']} β {schedule['beta_start']}–{schedule['beta_end']}, "
                                 f"{schedule['num_train_timesteps']} steps, {schedule['prediction_type']} prediction"))
    rows += [
        ("training", f"{checkpoint['step']} steps × {facts['batch_size']} crops, {checkpoint['elapsed'] / 60:.1f} min of "
                     f"steps on {facts['device']} ({facts['threads']} thread(s)), AdamW lr {facts['lr']:g}, "
                     f"EMA {facts['ema_decay']:g}"),
        ("final loss", f"{losses} (mean of the last {window} steps)"),
    ]
    return rows


def _settings_line(model_set: ModelSet) -> str:
    """The header bullet listing the per-method settings the set carries (none: an empty string)."""
    if not model_set.settings:
        return ""
    listed = "; ".join(f"{method}: {settings_text(values)}" for method, values in sorted(model_set.settings.items()))
    return ("- Method settings tuned for these networks on the held-out images (`model_set.json`; they apply over each "
            f"method's task defaults, and a caller's settings over them): {listed}.\n")


def model_cards(model_set: ModelSet, checkpoints: dict[str, dict], folder: Path, kept: dict[str, str] | None = None) -> str:
    """The Markdown model cards of every role of ``model_set`` (written to ``README.md``); ``kept`` holds the
    cards of roles kept from an earlier set, by role."""
    kept = kept or {}
    images = held_out_images()
    total = sum(_megabytes(folder / role) for role in model_set.networks)
    header = (
        "# Bundled models\n\n"
        "Small networks trained from scratch by `trt-restore train` so that every method runs offline. "
        "They show the pipelines working end to end; they are far from the quality of public checkpoints.\n\n"
        f"- Weights: float16 safetensors in diffusers folders, {total:.1f} MB in all; they load as float32.\n"
        "- Training data: each card's data row names the sources its run read. Today's sources are the colour "
        "training pools under the data root (`train/BSDS400`, `train/CSunHays80`, `train/CUrban100-half`), "
        "`train/Train400` as grey augmentation, and sample photographs shipped by scikit-image and scikit-learn; "
        "no test set (Set5, Set14, set3c, Set12, BSD68) and not CBSD68 (the colour versions of the BSD68 images).\n"
        f"- Quality is measured on {', '.join(DEMO_IMAGES)} from scikit-image, which training never sees "
        "(the demo uses them too).\n"
        "- Rebuild: `trt-restore train all --workdir DIR` (or one component at a time, then `trt-restore train package`).\n"
        f"- Training curves (the logged loss of each network trained for this version of the set): `{CURVES}`.\n"
        f"{_settings_line(model_set)}\n"
        f"![training curves]({CURVES})\n"
    )
    sections = [kept[role] if role in kept else _card(role, model_set, checkpoints.get(ROLE_SOURCES[role]), folder, images)
                for role in model_set.networks]
    return "\n".join([header, *sections])
