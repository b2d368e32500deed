"""Checkpoint formats on their tiny random-weight instances: UNet step time and parity.

For each format (SD 1.x, SD 2.x 768 with v prediction, the x4 upscaler, an OpenAI
guided-diffusion UNet state dict) this builds the tiny folder or file of
:mod:`trt_restore.export.tiny`, loads it with ``load_model_set`` and measures, in one run:

- the UNet component (one sampling step's network call) on torch eager and on onnxruntime
  (fp32, the exported graph), median of ``--repeats`` calls after a warm-up, one thread;
- its largest difference from diffusers' own call of the same folder (the pipeline's ``unet``
  on ``encode_prompt("")``, the upscaler's with its ``low_res_scheduler`` noise), and the
  exported graph's from torch (the guided-diffusion UNet is diffusers' ``UNet2DModel``
  itself, so it has no separate diffusers call);
- for the upscaler, the end-to-end parity of ``ldm-sr`` against diffusers'
  ``StableDiffusionUpscalePipeline`` at guidance scale 1, 10 DDIM steps, same seed.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/checkpoints.py --json benchmarks/cpu/checkpoints.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline, StableDiffusionUpscalePipeline

from trt_restore import restore
from trt_restore.export.model_sets import load_model_set
from trt_restore.export.onnx_export import export_component
from trt_restore.export.tiny import tiny_guided_diffusion_checkpoint, tiny_sd_folder, tiny_sd_upscaler_folder
from trt_restore.metrics import psnr
from trt_restore.runtime.onnxruntime_backend import OnnxRuntimeEngine

IMAGE = 64
"""Side of the restored image; the latent UNets see its latent (8×8 for f8, 16×16 for f4), the pixel UNet the image."""


def median_seconds(call, repeats: int) -> float:
    call()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def reference_output(folder: Path, upscaler: bool, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """diffusers' UNet call on the folder, as its pipeline makes it at guidance scale 1."""
    if upscaler:
        pipe = StableDiffusionUpscalePipeline.from_pretrained(folder)
        latent, lr, timestep, noise = inputs
        level = torch.full((latent.shape[0],), 20)
        sample = torch.cat((latent, pipe.low_res_scheduler.add_noise(2 * lr - 1, noise, level)), 1)
        extra = {"class_labels": level}
    else:
        pipe = StableDiffusionPipeline.from_pretrained(folder)
        (sample, timestep), extra = inputs, {}
    embedding = pipe.encode_prompt("", "cpu", 1, False)[0].expand(sample.shape[0], -1, -1)
    return pipe.unet(sample, timestep, encoder_hidden_states=embedding, **extra).sample


def upscaler_pipeline_parity(folder: Path) -> float:
    """``ldm-sr`` on the folder against diffusers' pipeline: guidance 1, 10 steps, same seed (dB)."""
    pipe = StableDiffusionUpscalePipeline.from_pretrained(folder)
    low_res = torch.rand(1, 3, IMAGE // 4, IMAGE // 4, generator=torch.Generator().manual_seed(3))
    expected = pipe(prompt="", image=low_res, num_inference_steps=10, guidance_scale=1.0, noise_level=20, eta=0.0,
                    generator=torch.Generator().manual_seed(11), output_type="pt").images
    ours = restore(low_res, method="ldm-sr", task="sr4", backend="torch", model_set=folder,
                   config={"steps": 10, "eta": 0.0}, seed=11)
    return psnr(ours, expected)


def measure(label: str, folder: Path, kind: str, repeats: int, work: Path) -> dict:
    """One format's row; ``kind`` is ``sd``, ``upscaler`` or ``guided`` (guided-diffusion)."""
    models = load_model_set(folder)
    upscaler = kind == "upscaler"
    component, method = {"sd": ("unet", "reld"), "upscaler": ("sr_unet", "ldm-sr"), "guided": ("pixel_unet", "ddrm")}[kind]
    wrapper = models.wrapper(component, method)
    inputs = wrapper.example_inputs(1, IMAGE, IMAGE, seed=1)
    spec = export_component(wrapper, work / f"{label}.onnx", example_size=(IMAGE, IMAGE))
    session = OnnxRuntimeEngine(work / f"{label}.onnx", spec, threads=1)
    named = {t.name: x for t, x in zip(spec.inputs, inputs)}
    with torch.inference_mode():
        ours = wrapper(*inputs)
        row = {
            "format": label,
            "component": component,
            "unet_parameters": sum(p.numel() for p in wrapper.unet.parameters()),
            "torch_ms": 1e3 * median_seconds(lambda: wrapper(*inputs), repeats),
            "onnxruntime_ms": 1e3 * median_seconds(lambda: session(**named), repeats),
            "onnx_vs_torch_max_abs": float((session(**named)["model_output"] - ours).abs().max()),
        }
        if kind != "guided":
            row["component_vs_diffusers_max_abs"] = float((ours - reference_output(folder, upscaler, inputs)).abs().max())
    row["onnxruntime_speedup"] = row["torch_ms"] / row["onnxruntime_ms"]
    if upscaler:
        row["pipeline_vs_diffusers_db"] = upscaler_pipeline_parity(folder)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        formats = (
            ("SD 1.x", lambda: tiny_sd_folder(work / "sd1", "1"), "sd"),
            ("SD 2.x 768 (v)", lambda: tiny_sd_folder(work / "sd2", "2-v"), "sd"),
            ("SD x4 upscaler", lambda: tiny_sd_upscaler_folder(work / "x4"), "upscaler"),
            ("guided-diffusion .pt", lambda: tiny_guided_diffusion_checkpoint(work / "guided.pt"), "guided"),
        )
        for label, make, kind in formats:
            rows.append(measure(label, make(), kind, args.repeats, work))
    print("| format | UNet step, torch | onnxruntime | ratio | UNet vs diffusers (max abs) | pipeline vs diffusers |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        component = f"{row['component_vs_diffusers_max_abs']:.1e}" if "component_vs_diffusers_max_abs" in row else "n/a"
        pipeline = f"{row['pipeline_vs_diffusers_db']:.1f} dB" if "pipeline_vs_diffusers_db" in row else "n/a"
        print(f"| {row['format']} | {row['torch_ms']:.1f} ms | {row['onnxruntime_ms']:.1f} ms | "
              f"{row['onnxruntime_speedup']:.2f}× | {component} | {pipeline} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
