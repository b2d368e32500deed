"""The method loops on the tiny model set: backend parity and RELD's objective (diffusers parity: test_reference_parity)."""

import pytest
import skimage.data
import torch
from trt_restore import restore
from trt_restore.api import load_models
from trt_restore.errors import UserError
from trt_restore.metrics import psnr
from trt_restore.operators import Degradation, make_operator
from trt_restore.pipelines import Models, reld
from trt_restore.pipelines.base import Noise
from trt_restore.pipelines.reld import RELD, RELDConfig
from trt_restore.runtime.torch_backend import TorchEngine
from trt_restore.specs import ComponentSpec, TensorSpec

# (method, task) pairs each method supports, at 64×64 with few steps.
CASES = [
    ("reld", "sr4"),
    ("ddrm", "deblur-gauss"),
    ("ldm-sr", "sr4"),
    ("ddrm-ldm", "sr4-bicubic"),
    ("indigo-pixel", "sr4"),
    ("indigo-latent", "denoise"),
]
FEW_STEPS = {"reld": {"iterations": 3}}


def observation(task: str, sigma: float, size=(64, 64), seed=0) -> torch.Tensor:
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(seed))
    x = torch.nn.functional.avg_pool2d(x, 5, stride=1, padding=2)  # some structure, values stay in [0, 1]
    return Degradation(make_operator(task, size=size, channels=3), sigma).observe(x, seed=seed)


@pytest.mark.parametrize("method, task", CASES)
def test_torch_and_onnxruntime_backends_agree(method, task):
    y = observation(task, 0.02)[0]
    config = FEW_STEPS.get(method, {"steps": 3})
    outputs = [
        restore(y, method=method, task=task, sigma=0.02, backend=backend, model_set="tiny", config=config, seed=7)
        for backend in ("torch", "onnxruntime")
    ]
    assert outputs[0].shape == (3, 64, 64)
    assert bool(torch.isfinite(outputs[0]).all())
    assert psnr(outputs[0], outputs[1]) >= 45


def natural_image(size: int) -> torch.Tensor:
    """scikit-image's astronaut, area-resized to size × size: a photo the autoencoder can represent."""
    photo = torch.from_numpy(skimage.data.astronaut()).permute(2, 0, 1)[None].float() / 255
    return torch.nn.functional.interpolate(photo, size=(size, size), mode="area")


def hqs_objective(operator, y, t, decoded, mu):
    """½‖A t − b‖² + (μ/2)‖t − D(v)‖², the data part of RELD's HQS objective."""
    return 0.5 * float((operator.A(t) - y).square().sum()) + 0.5 * mu * float((t - decoded).square().sum())


@pytest.mark.parametrize(
    "v_grad, model_set, min_fraction",
    [("vjp", "tiny", 1.0), ("vjp", "bundled", 1.0), ("encoder", "bundled", 0.8)],
)
def test_reld_v_step_decreases_the_hqs_objective(v_grad, model_set, min_fraction):
    """With λ = 0 the v-update is a gradient step on (μ/2)‖t − D(v)‖² for fixed t.

    The exact VJP must decrease it at every step, on any decoder. The encoder
    approximation ``v − E(t)`` is not a gradient: it is a descent direction only where E
    inverts D, so it is checked on the trained bundled autoencoder (on a random one it
    does not descend); the test prints how often each decreases the objective.
    """
    task, sigma = "sr4", 0.01
    operator = make_operator(task, size=(64, 64), channels=3)
    y = Degradation(operator, sigma).observe(natural_image(64), seed=0)
    _, models = load_models("reld", model_set=model_set, backend="torch")
    config = RELDConfig(lam=0.0, step=0.5, v_grad=v_grad)
    pipeline = RELD(models, config)
    mu = (max(sigma, config.sigma_min) / config.tau) ** 2
    decreases = 0
    trials = 6
    with torch.inference_mode():
        v = models.call("encoder", image=operator.prox_l2(y, torch.full((1, 3, 64, 64), 0.5), mu))
        curvature = pipeline.decoder_curvature(v, Noise(0, v.device)) if v_grad == "vjp" else 1.0
        for _ in range(trials):
            decoded = models.call("decoder", latent=v)
            t = operator.prox_l2(y, decoded, mu)
            before = hqs_objective(operator, y, t, decoded, mu)
            v_next = pipeline.v_update(v, t, decoded, mu, curvature, noise=None, level=0)
            after = hqs_objective(operator, y, t, models.call("decoder", latent=v_next), mu)
            decreases += after < before
            v = v_next
    print(f"RELD v-update with {v_grad} on {model_set}: objective decreased in {decreases}/{trials} steps")
    assert decreases >= min_fraction * trials


class _GainDecoder(torch.nn.Module):
    """``D(v) = up₄(g ⊙ v)``: nearest ×4 upsampling after a fixed per-position gain g, so ``J_Dᵀ J_D = 16 g²``."""

    def __init__(self, gain):
        super().__init__()
        self.register_buffer("gain", gain)

    def forward(self, latent):
        return torch.nn.functional.interpolate(self.gain * latent, scale_factor=4, mode="nearest")


class _GainDecoderVJP(_GainDecoder):
    """``J_Dᵀ r = g ⊙ Σ₄ₓ₄ r``: the adjoint of :class:`_GainDecoder`."""

    def forward(self, latent, cotangent):
        return self.gain * torch.nn.functional.avg_pool2d(cotangent, 4) * 16


def test_reld_step_follows_the_local_curvature_of_the_decoder():
    """One block of the latent with 3× the decoder's gain has 9× its curvature.

    The curvature map must find it there and in the 8 blocks around it, and keep every other block
    at its own curvature, where one number for the whole latent is about an average over its blocks.
    """
    block = reld.CURVATURE_BLOCK
    latent_shape = (1, 4, 5 * block, 6 * block - 3)  # a partial last block column
    gain = torch.ones(1, 1, *latent_shape[-2:])
    gain[..., 2 * block : 3 * block, 4 * block : 5 * block] = 3.0
    image = ("B", 4, "H", "W")  # the latent's channels, upsampled
    latent = ("B", 4, "H/4", "W/4")
    models = Models(
        {
            "decoder": TorchEngine(_GainDecoder(gain), ComponentSpec("decoder", (TensorSpec("latent", latent),), (TensorSpec("image", image),))),
            "decoder_vjp": TorchEngine(
                _GainDecoderVJP(gain),
                ComponentSpec("decoder_vjp", (TensorSpec("latent", latent), TensorSpec("cotangent", image)), (TensorSpec("gradient", latent),)),
            ),
        }
    )
    v = torch.randn(latent_shape, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        curvature = RELD(models).decoder_curvature(v, Noise(0, v.device))
    expected = torch.full((5, 6), 16.0)
    expected[1:4, 3:6] = 144.0  # the high-gain block (2, 4) and its neighbours
    expected = expected.repeat_interleave(block, 0).repeat_interleave(block, 1)[: latent_shape[2], : latent_shape[3]]
    assert curvature.shape == (1, 1, *latent_shape[-2:])
    torch.testing.assert_close(curvature[0, 0], expected, rtol=1e-3, atol=0)


def test_reld_step_stays_within_its_trust_region_at_every_latent_position():
    """Positions whose step is longer than the radius are shortened to it along the same direction; the others keep theirs.

    The decoder's mid-block attention lets one latent position draw the residual of the whole
    image into its gradient; unbounded, its step grew from 0.4 to 245 in four iterations on a
    500 × 480 image and the decoded image collapsed.
    """
    step = torch.randn(2, 8, 6, 7, generator=torch.Generator().manual_seed(0)) * 0.1
    step[0, :, 2, 3] *= 1000
    step[1, :, 5, 0] *= 30
    radius = 0.5
    bounded = reld.within_trust_region(step, radius)
    norms = step.norm(dim=1)
    long = norms > radius
    assert long.sum() == 2 and long[0, 2, 3] and long[1, 5, 0]
    torch.testing.assert_close(bounded.norm(dim=1)[long], torch.full((2,), radius))
    torch.testing.assert_close(bounded.permute(0, 2, 3, 1)[long], step.permute(0, 2, 3, 1)[long] * (radius / norms[long])[:, None])
    assert torch.equal(bounded.permute(0, 2, 3, 1)[~long], step.permute(0, 2, 3, 1)[~long])
    with pytest.raises(UserError, match="--trust-radius must be positive, got 0"):
        restore(observation("denoise", 0.05)[0], method="reld", task="denoise", sigma=0.05, backend="torch", model_set="tiny", config={"trust_radius": 0.0})


def test_reld_output_is_the_t_update_of_the_final_decoded_image_at_mu_out():
    """On denoising the output is ``x̂ = (b + μ_out D(v)) / (1 + μ_out)`` with μ_out from τ_out alone.

    Two runs that differ only in τ_out share the iterations, so the D(v) recovered from the first
    output must reproduce the second one: this fails if τ_out reached the iterations or if the
    last step used the iterations' μ.
    """
    sigma = 0.05
    y = observation("denoise", sigma)[0]
    run = {"method": "reld", "task": "denoise", "sigma": sigma, "backend": "torch", "model_set": "tiny", "seed": 3}
    tolerances = (0.03, 0.2)
    outputs = [restore(y, **run, config={"iterations": 2, "tau": 0.1, "tau_out": tau_out}) for tau_out in tolerances]
    mu_first, mu_second = ((sigma / tau_out) ** 2 for tau_out in tolerances)
    decoded = ((1 + mu_first) * outputs[0] - y) / mu_first
    expected = (y + mu_second * decoded) / (1 + mu_second)
    inside = (outputs[0] > 0) & (outputs[0] < 1) & (expected > 0) & (expected < 1)  # the clamp to [0, 1] hides the rest
    assert float(inside.float().mean()) > 0.5
    torch.testing.assert_close(outputs[1][inside], expected[inside], atol=1e-4, rtol=0)
    assert float((outputs[0] - outputs[1]).abs().max()) > 1e-2  # τ_out does change the output


class _Broken(torch.nn.Module):
    def forward(self, latent):
        return latent * float("nan")


def test_non_finite_output_is_caught_at_once_and_rerun_on_the_fallback(caplog):
    spec = ComponentSpec("decoder", (TensorSpec("latent", ("B", 4, "H", "W")),), (TensorSpec("image", ("B", 4, "H", "W")),))
    z = torch.ones(1, 4, 8, 8)
    with pytest.raises(UserError, match="'decoder' produced NaN or Inf.*--precision fp32"):
        Models({"decoder": TorchEngine(_Broken(), spec)}).call("decoder", latent=z)
    models = Models({"decoder": TorchEngine(_Broken(), spec)}, fallbacks={"decoder": TorchEngine(torch.nn.Identity(), spec)})
    assert torch.equal(models.call("decoder", latent=z), z)
    assert "rerunning it in fp32" in caplog.text


def test_models_close_their_engines_and_fallbacks_at_the_end_of_a_with_block():
    spec = ComponentSpec("decoder", (TensorSpec("latent", ("B", 4, "H", "W")),), (TensorSpec("image", ("B", 4, "H", "W")),))
    engine, fallback = TorchEngine(torch.nn.Identity(), spec), TorchEngine(torch.nn.Identity(), spec)
    with Models({"decoder": engine}, fallbacks={"decoder": fallback}) as models:
        assert torch.equal(models.call("decoder", latent=torch.ones(1, 4, 8, 8)), torch.ones(1, 4, 8, 8))
    assert engine.closed and fallback.closed
    models.close()  # idempotent
    with pytest.raises(UserError, match="component 'decoder': its torch engine is closed"):
        models.call("decoder", latent=torch.ones(1, 4, 8, 8))


def test_restore_closes_the_models_it_loads_itself_and_only_those(monkeypatch):
    closed = []
    close = Models.close

    def counting_close(models):
        closed.append(models)
        close(models)

    monkeypatch.setattr(Models, "close", counting_close)
    y = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    run = {"method": "ddrm", "task": "sr2", "backend": "torch", "model_set": "tiny", "config": {"steps": 2}}
    restore(y, **run)
    assert len(closed) == 1 and all(engine.closed for engine in closed[0].engines.values())
    with pytest.raises(UserError, match="has no setting 'nope'"):
        restore(y, **{**run, "config": {"nope": 1}})
    assert len(closed) == 2  # also when the restoration fails

    _, models = load_models("ddrm", model_set="tiny", backend="torch")
    restore(y, **run, models=models)
    assert len(closed) == 2 and not any(engine.closed for engine in models.engines.values())
    assert restore(y, **run, models=models).shape == (1, 3, 16, 16)  # still usable


def test_noise_source_device_is_the_host_stream_on_the_cpu_and_unknown_sources_are_refused():
    y = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    run = {"method": "ddrm", "task": "sr4", "sigma": 0.05, "backend": "torch", "model_set": "tiny",
           "config": {"steps": 3}, "seed": 4}
    assert torch.equal(restore(y, **run, noise="device"), restore(y, **run))
    with pytest.raises(UserError, match="unknown noise source 'gpu'; choose one of: host, device"):
        restore(y, **run, noise="gpu")


def test_task_defaults_apply_under_the_users_settings():
    from trt_restore.pipelines.ddrm import DDRM

    assert DDRM.task_defaults("denoise") == {"eta": 0.0}
    assert DDRM.task_defaults("sr4") == DDRM.task_defaults("sr2-bicubic") == {"eta": 0.0, "steps": 50}
    assert DDRM.task_defaults("deblur-gauss") == {"eta": 0.95, "steps": 50}
    assert DDRM.task_defaults("inpaint") == {} and DDRM.task_defaults("sr4-gauss") == {}
    assert RELD.task_defaults("denoise") == {"tau": 0.5, "tau_out": 0.02} and RELD.task_defaults("sr4") == {}
    assert RELD.task_defaults("deblur-gauss") == RELD.task_defaults("deblur-motion") == {"tau": 0.1}
    y = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    run = {"method": "ddrm", "task": "sr4", "sigma": 0.05, "backend": "torch", "model_set": "tiny", "seed": 4}
    by_default = restore(y, **run)
    assert torch.equal(by_default, restore(y, **run, config={"eta": 0.0, "steps": 50}))
    assert not torch.equal(by_default, restore(y, **run, config={"eta": 0.85}))


@pytest.mark.parametrize("method", ["indigo-pixel", "indigo-latent"])
def test_indigo_final_data_step_makes_the_result_consistent_with_a_noiseless_observation(method):
    """At σ = 0 the final step projects the sample onto {A x = y}: the residual drops to the clamp's share."""
    task = "sr2"
    y = observation(task, 0.0)
    operator = make_operator(task, size=(64, 64), channels=3)
    residual = {}
    for prior_error in (0.0, 0.1):
        out = restore(y[0], method=method, task=task, sigma=0.0, backend="torch", model_set="tiny",
                      config={"steps": 3, "prior_error": prior_error}, seed=3)
        residual[prior_error] = float((operator.A(out[None]) - y).norm() / y.norm())
    assert residual[0.1] < 0.05 * residual[0.0]


@pytest.mark.parametrize("method", ["indigo-pixel", "indigo-latent"])
def test_indigo_guided_latent_is_the_encoded_data_step_of_the_decoded_guidance(method):
    """A guided step takes z̃₀ = E(P(D(z_g))) with P(x) = argmin ½‖A p − y‖² + (μ/2)‖p − x‖², μ = σ²/e²;
    e = 0 keeps the paper's INN-guided latent z_g."""
    from trt_restore.api import _pipeline
    from trt_restore.inn_condition import degradation_embedding

    task, sigma, prior_error = "sr2", 0.05, 0.1
    y = observation(task, sigma)
    operator = make_operator(task, size=(64, 64), channels=3)
    _, models = load_models(method, model_set="tiny", backend="torch", image_size=(64, 64), scale=2)
    latent_size = 64 // models.latent_factor
    z0 = torch.randn(1, models.latent_channels, latent_size, latent_size, generator=torch.Generator().manual_seed(1))
    condition = degradation_embedding(task, sigma, 1)
    with models:
        guided = {}
        for e in (0.0, prior_error):
            pipeline = _pipeline(method, task, models, {"prior_error": e})
            target = pipeline._target(y, operator, models.inn_factor)
            z_g = pipeline._to_latent(pipeline._guide(z0, target, condition, None))
            guided[e] = pipeline._guided_latent(z0, target, condition, None, (y, operator, sigma))
        assert torch.equal(guided[0.0], z_g)

        decoded = models.call("decoder", latent=z_g)
        mu = sigma**2 / prior_error**2
        p = operator.prox_l2(y, decoded, mu)
        stationarity = operator.A_adjoint(operator.A(p) - y) + mu * (p - decoded)
        assert float(stationarity.norm()) < 1e-4 * float((mu * decoded).norm())
        assert torch.allclose(guided[prior_error], models.call("encoder", image=p.clamp(0, 1)), atol=1e-6)
        assert not torch.allclose(guided[prior_error], z_g, atol=1e-3)
