"""CUDA-graph capture of the loop step: when it is allowed, the deferred NaN/Inf check, and on a GPU
the captured path against the eager one, bit for bit."""

from __future__ import annotations

import importlib.util
import logging

import pytest
import torch
from torch import nn
from trt_restore import restore
from trt_restore.api import load_models
from trt_restore.cli import main
from trt_restore.cli.arguments import method_settings
from trt_restore.errors import UserError
from trt_restore.operators import Degradation, make_operator
from trt_restore.pipelines import Models
from trt_restore.pipelines.ddrm import DDRM, DDRMConfig
from trt_restore.runtime.graphs import CapturedStep, LoopGraphs, capture_blocker, step_table
from trt_restore.runtime.torch_backend import TorchEngine
from trt_restore.specs import ComponentSpec, TensorSpec

# Methods whose step is captured, with a task each supports and η > 0 so that noise enters the step.
CASES = [("ddrm", "sr4"), ("ldm-sr", "sr4"), ("ddrm-ldm", "sr4-bicubic")]
CONFIG = {"ddrm": {"steps": 4, "eta": 0.85}, "ldm-sr": {"steps": 4, "eta": 0.5}, "ddrm-ldm": {"steps": 3}}

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def low_resolution(seed: int = 0) -> torch.Tensor:
    """A 16×16 observation of ×4 super-resolution (64×64 output)."""
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(seed))
    x = nn.functional.avg_pool2d(x, 5, stride=1, padding=2)
    return Degradation(make_operator("sr4", size=(64, 64), channels=3), 0.02).observe(x, seed=seed)


class Amplify(nn.Module):
    """``x · 10⁵ / 10⁵`` in ``dtype``: infinite in fp16 where |x| > 0.65, as an fp16 engine overflows."""

    def __init__(self, dtype: torch.dtype):
        super().__init__()
        self.dtype = dtype

    def forward(self, sample, timestep):
        return (sample.to(self.dtype) * 1e5).float() / 1e5 + 0 * timestep.view(-1, 1, 1, 1)


def amplify_models(device: str) -> Models:
    """A pixel_unet that overflows as fp16, and its fp32 fallback."""
    spec = ComponentSpec(
        "pixel_unet",
        inputs=(TensorSpec("sample", ("B", 3, "H", "W")), TensorSpec("timestep", ("B",))),
        outputs=(TensorSpec("model_output", ("B", 3, "H", "W")),),
        meta={"scheduler": {"num_train_timesteps": 1000}},
    )
    return Models(
        {"pixel_unet": TorchEngine(Amplify(torch.float16), spec, device)},
        fallbacks={"pixel_unet": TorchEngine(Amplify(torch.float32), spec, device)},
    )


def loop_over(models: Models, graphs: LoopGraphs, generator: torch.Generator, device: str):
    """A three-step loop in the shape of the pipelines': noise drawn outside the step, scalars from a table."""
    table = step_table([(100.0, 0.5), (50.0, 0.25), (0.0, 1.0)], torch.device(device))

    def body(x, scalars, draw):
        t, weight = scalars.unbind()
        out = models.call("pixel_unet", sample=x, timestep=t.expand(x.shape[0]))
        return (weight * out + draw,)

    def loop():
        x = torch.randn(1, 3, 8, 8, generator=generator).to(device)
        step = graphs.step(body, len(table))
        for k in range(len(table)):
            (x,) = step(x, table[k], torch.randn(1, 3, 8, 8, generator=generator).to(device))
        return x.clone()

    return loop


# ----------------------------------------------------------------------------------------- any machine


def test_capture_is_allowed_only_on_cuda_with_capturable_engines():
    torch_models = load_models("ddrm", backend="torch", model_set="tiny")[1]
    engines = list(torch_models.engines.values())
    cuda = torch.device("cuda", 0)
    assert capture_blocker("auto", cuda, engines) is None
    assert capture_blocker("off", cuda, engines) == "--cuda-graphs off"
    assert capture_blocker("auto", torch.device("cpu"), engines) == "cpu is not a CUDA device"
    assert capture_blocker("auto", cuda, engines, "--adapt trains the INN") == "--adapt trains the INN"
    ort_models = load_models("ddrm", backend="onnxruntime", model_set="tiny")[1]
    blocker = capture_blocker("auto", cuda, [*engines, *ort_models.engines.values()])
    assert blocker is not None and "'pixel_unet' runs on onnxruntime" in blocker
    with pytest.raises(UserError, match="--cuda-graphs must be one of auto, off, got 'on'"):
        capture_blocker("on", cuda, engines)


def test_an_unknown_mode_is_a_user_error_on_any_device():
    models = load_models("ddrm", backend="torch", model_set="tiny")[1]
    operator = make_operator("sr4", size=(64, 64), channels=3)
    with pytest.raises(UserError, match="--cuda-graphs must be one of auto, off"):
        DDRM(models, DDRMConfig(steps=2, cuda_graphs="always"))(low_resolution(), operator, 0.02)


def test_the_switch_is_a_flag_of_the_captured_methods(tmp_path, capsys):
    assert set(method_settings()["cuda_graphs"].per_method) == {method for method, _ in CASES}
    argv = [
        "restore",
        "--method",
        "reld",
        "--task",
        "sr4",
        "--cuda-graphs",
        "off",
        "in.png",
        "-o",
        str(tmp_path / "o.png"),
    ]
    assert main(argv) == 2
    assert "--cuda-graphs is a setting of" in capsys.readouterr().err


@pytest.mark.parametrize("method, task", CASES)
def test_auto_on_the_cpu_gives_the_result_of_off(method, task, one_torch_thread):
    outputs = [
        restore(
            low_resolution()[0],
            method=method,
            task=task,
            sigma=0.02,
            backend="torch",
            model_set="tiny",
            config={**CONFIG[method], "cuda_graphs": mode},
            seed=3,
        )
        for mode in ("auto", "off")
    ]
    assert torch.isfinite(outputs[0]).all()
    assert torch.equal(outputs[0], outputs[1])


def test_captured_step_runs_cpu_tensors_eagerly():
    calls = []
    step = CapturedStep(lambda x: (calls.append(1), (x + 1,))[1])
    for value in (1.0, 2.0):
        (out,) = step(torch.full((3,), value))
        assert torch.equal(out, torch.full((3,), value + 1))
    assert step.graph is None and len(calls) == 2


def test_deferred_checks_flag_non_finite_outputs_without_a_fallback():
    models = amplify_models("cpu")
    inputs = {"sample": torch.ones(1, 3, 4, 4), "timestep": torch.zeros(1)}
    finite = torch.ones((), dtype=torch.bool)
    with models.deferred_checks(finite):
        deferred = models.call("pixel_unet", **inputs)
    assert not bool(finite) and torch.isinf(deferred).all()
    assert torch.equal(models.call("pixel_unet", **inputs), torch.ones(1, 3, 4, 4))  # the fp32 fallback


def test_non_finite_deferred_loop_reruns_eagerly_from_the_same_noise(caplog):
    """With the check deferred (as when the step is captured), a NaN/Inf reruns the loop with the fp32 fallback."""
    models = amplify_models("cpu")
    eager = LoopGraphs(models, "off", torch.device("cpu"))
    expected = eager.run(loop_over(models, eager, torch.Generator().manual_seed(5), "cpu"), torch.Generator())

    deferred = LoopGraphs(models, "auto", torch.device("cpu"))
    deferred.blocker = None  # defer the check as a CUDA run would; CPU steps still run eagerly
    generator = torch.Generator().manual_seed(5)
    with caplog.at_level(logging.WARNING, logger="trt_restore"):
        result = deferred.run(loop_over(models, deferred, generator, "cpu"), generator)
    assert torch.equal(result, expected)
    messages = [record.getMessage() for record in caplog.records]
    assert any("rerunning the loop eagerly" in m for m in messages)
    assert any("rerunning it in fp32" in m for m in messages)
    assert deferred.blocker == "a captured step produced NaN or Inf"


# ------------------------------------------------------------------------------------------- on a GPU


@pytest.fixture
def captures(monkeypatch):
    """The outcome (None: captured, else why not) of every capture attempt during the test."""
    outcomes: list[str | None] = []
    capture = CapturedStep._capture

    def record(self, stream):
        outcomes.append(capture(self, stream))
        return outcomes[-1]

    monkeypatch.setattr(CapturedStep, "_capture", record)
    return outcomes


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("method, task", CASES)
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.usefixtures("one_torch_thread")
def test_captured_loop_matches_eager_bit_for_bit_on_torch(method, task, seed, captures):
    models = load_models(method, backend="torch", model_set="tiny", device="cuda")[1]
    y = low_resolution(seed)[0].cuda()
    config = CONFIG[method]
    eager = restore(
        y, method=method, task=task, sigma=0.02, models=models, config={**config, "cuda_graphs": "off"}, seed=seed
    )
    assert captures == []
    graphed = restore(y, method=method, task=task, sigma=0.02, models=models, config=config, seed=seed)
    assert captures == [None]
    assert graphed.is_cuda and torch.equal(graphed, eager)


@pytest.mark.gpu
@needs_gpu
def test_captured_loop_matches_eager_bit_for_bit_on_tensorrt(tmp_path, captures):
    if importlib.util.find_spec("tensorrt") is None and importlib.util.find_spec("tensorrt_rtx") is None:
        pytest.skip("neither tensorrt nor tensorrt_rtx is installed")
    path = tmp_path / "ddrm.plan"
    # Static shapes: TensorRT-RTX specialises dynamic-shape kernels lazily, so eager runs could change kernels.
    profile = ("--min", "64", "64", "--opt", "64", "64", "--max", "64", "64", "--batch", "1", "1", "1")
    assert main(["build", "--method", "ddrm", "--model-set", "tiny", *profile, "-o", str(path)]) == 0
    try:
        models = load_models(engine=path, device="cuda")[1]
    except UserError as error:
        pytest.skip(f"the TensorRT engine cannot run on this GPU: {error}")
    y = low_resolution()[0].cuda()
    run = {"method": "ddrm", "task": "sr4", "sigma": 0.02, "models": models, "seed": 2}
    eager = restore(y, **run, config={"steps": 4, "cuda_graphs": "off"})
    graphed = restore(y, **run, config={"steps": 4})
    assert captures == [None]
    assert torch.equal(graphed, eager)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.usefixtures("one_torch_thread")
def test_replay_after_an_input_change_gives_the_new_result(captures):
    models = load_models("ddrm", backend="torch", model_set="tiny", device="cuda")[1]
    unet = models.engines["pixel_unet"]

    def body(x, t):
        return (unet(sample=x, timestep=t)["model_output"] * 0.5 - x,)

    step = CapturedStep(body, [unet])
    generator = torch.Generator().manual_seed(0)
    inputs = [
        (torch.randn(1, 3, 64, 64, generator=generator).cuda(), torch.tensor([t], device="cuda")) for t in (900.0, 10.0)
    ]
    results = [step(*pair)[0].clone() for pair in (*inputs, inputs[0])]
    assert captures == [None] and step.graph is not None
    expected = [body(*pair)[0] for pair in (*inputs, inputs[0])]
    assert not torch.equal(results[0], results[1])
    for result, reference in zip(results, expected):
        assert torch.equal(result, reference)


@pytest.mark.gpu
@needs_gpu
def test_non_finite_captured_loop_reruns_eagerly_with_the_fp32_fallback(captures, caplog):
    models = amplify_models("cuda")
    eager = LoopGraphs(models, "off", torch.device("cuda", torch.cuda.current_device()))
    expected = eager.run(loop_over(models, eager, torch.Generator().manual_seed(5), "cuda"), torch.Generator())

    graphs = LoopGraphs(models, "auto", torch.device("cuda", torch.cuda.current_device()))
    generator = torch.Generator().manual_seed(5)
    with caplog.at_level(logging.WARNING, logger="trt_restore"):
        result = graphs.run(loop_over(models, graphs, generator, "cuda"), generator)
    assert captures == [None]
    assert torch.equal(result, expected)
    assert any("rerunning the loop eagerly" in record.getMessage() for record in caplog.records)
