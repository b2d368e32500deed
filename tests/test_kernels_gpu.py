"""The CUDA kernels against their torch references (run on the CPU) on random inputs of odd and
even sizes. Each test launches the kernel through its launcher, so a silent fallback to torch
cannot pass for a kernel."""

from __future__ import annotations

import pytest
import torch

from trt_restore import kernels

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

TOLERANCE = {torch.complex64: 1e-5, torch.float32: 1e-5, torch.complex128: 1e-12, torch.float64: 1e-12}


@pytest.fixture(scope="module")
def gpu():
    device = torch.cuda.current_device()
    assert kernels.cuda_kernels_available(device), "the CUDA kernels did not compile or load (see the warning)"
    return kernels._device_kernels(device)


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(0)


def assert_matches(out: torch.Tensor | None, reference: torch.Tensor) -> None:
    """Kernel output equals the CPU reference to the dtype's tolerance, relative to the output's scale."""
    assert out is not None, "the kernel path refused this layout"
    assert out.is_cuda and out.shape == reference.shape and out.dtype == reference.dtype
    torch.cuda.synchronize()
    error = (out.cpu() - reference).abs().max().item()
    assert error <= TOLERANCE[reference.dtype] * (1 + reference.abs().max().item())


def random(generator, *shape, dtype):
    return torch.randn(*shape, dtype=dtype, generator=generator)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 3, 8, 6), (3, 1, 9, 5)])
@pytest.mark.parametrize("kernel_shape", ["plane", "batch", "per-channel"])
@pytest.mark.parametrize("mu_kind", ["float", "per-item"])
def test_fft_prox_kernel_matches_torch(gpu, generator, dtype, shape, kernel_shape, mu_kind):
    b, c, h, w = shape
    k_shape = {"plane": (h, w), "batch": shape, "per-channel": (1, c, h, w)}[kernel_shape]
    k_hat, b_hat, z_hat = (random(generator, *s, dtype=dtype) for s in (k_shape, shape, shape))
    mu = 0.3 if mu_kind == "float" else torch.rand(b, 1, 1, 1, dtype=dtype.to_real(), generator=generator) + 0.05
    on_gpu = [t.cuda() for t in (k_hat, b_hat, z_hat)] + [mu.cuda() if torch.is_tensor(mu) else mu]

    assert_matches(kernels._launch_fft_prox(gpu, *on_gpu), kernels.fft_prox(k_hat, b_hat, z_hat, mu))
    assert_matches(kernels.fft_prox(*on_gpu), kernels.fft_prox(k_hat, b_hat, z_hat, mu))


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize(("shape", "scale"), [((2, 3, 6, 9), 3), ((1, 3, 8, 12), 2), ((2, 1, 16, 16), 4), ((1, 2, 5, 7), 1)])
@pytest.mark.parametrize("mu_kind", ["float", "per-item"])
def test_sr_fft_prox_kernel_matches_torch(gpu, generator, dtype, shape, scale, mu_kind):
    b, c, h, w = shape
    k_hat = random(generator, h, w, dtype=dtype)
    atb_hat, z_hat = (random(generator, *shape, dtype=dtype) for _ in range(2))
    mu = 0.2 if mu_kind == "float" else torch.rand(b, 1, 1, 1, dtype=dtype.to_real(), generator=generator) + 0.05
    on_gpu = [t.cuda() for t in (k_hat, atb_hat, z_hat)] + [mu.cuda() if torch.is_tensor(mu) else mu]

    expected = kernels.sr_fft_prox(k_hat, atb_hat, z_hat, mu, scale)
    assert_matches(kernels._launch_sr_fft_prox(gpu, *on_gpu, scale), expected)
    assert_matches(kernels.sr_fft_prox(*on_gpu, scale), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("batch", "n"), [(2, 1001), (3, 4096)])
@pytest.mark.parametrize(("sigma_next", "sigma_y", "eta", "eta_b"), [(0.6, 0.1, 0.85, 1.0), (0.3, 0.0, 0.85, 1.0), (0.9, 0.4, 0.5, 0.7)])
def test_ddrm_update_kernel_matches_torch(gpu, generator, dtype, batch, n, sigma_next, sigma_y, eta, eta_b):
    singulars = torch.rand(n, dtype=dtype, generator=generator) * 2
    singulars[n // 2 :] = 0
    x0, eps, uty, noise = (random(generator, batch, n, dtype=dtype) for _ in range(4))
    uty = torch.where(singulars > 0, uty, 0.0)
    tensors = (x0, eps, uty, singulars, noise)
    scalars = (sigma_next, sigma_y, eta, eta_b)

    expected = kernels.ddrm_spectral_update(*tensors, *scalars)
    on_gpu = [t.cuda() for t in tensors]
    assert_matches(kernels._launch_ddrm_update(gpu, on_gpu, scalars), expected)
    assert_matches(kernels.ddrm_spectral_update(*on_gpu, *scalars), expected)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64, torch.complex64, torch.complex128])
@pytest.mark.parametrize("shape", [(2, 1001), (3, 64, 5), (1, 4, 3, 3)])
def test_permutation_kernels_match_torch_exactly(gpu, generator, dtype, shape):
    x = torch.randn(*shape, generator=generator).to(dtype)
    index = torch.randperm(shape[1], generator=generator)
    x_gpu, index_gpu = x.cuda(), index.cuda()

    gathered = kernels._launch_permutation(gpu, x_gpu, index_gpu, inverse=False)
    scattered = kernels._launch_permutation(gpu, x_gpu, index_gpu, inverse=True)
    torch.cuda.synchronize()
    assert torch.equal(gathered.cpu(), kernels.permute(x, index))
    assert torch.equal(scattered.cpu(), kernels.unpermute(x, index))
    assert torch.equal(kernels.unpermute(kernels.permute(x_gpu, index_gpu), index_gpu).cpu(), x)


def test_unsupported_layouts_fall_back_to_torch(gpu, generator):
    k_hat, b_hat, z_hat = (random(generator, 2, 3, 6, 5, dtype=torch.complex64) for _ in range(3))
    strided = b_hat.cuda().transpose(-1, -2).contiguous().transpose(-1, -2)
    assert kernels._launch_fft_prox(gpu, k_hat.cuda(), strided, z_hat.cuda(), 0.5) is None
    assert_matches(kernels.fft_prox(k_hat.cuda(), strided, z_hat.cuda(), 0.5), kernels.fft_prox(k_hat, b_hat, z_hat, 0.5))


def test_kernels_run_on_the_current_stream_and_in_cuda_graphs(gpu, generator):
    k_hat, b_hat, z_hat = (random(generator, 2, 3, 16, 9, dtype=torch.complex64) for _ in range(3))
    static = [t.cuda() for t in (k_hat, b_hat, z_hat)]

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        warm = kernels.fft_prox(*static, 0.4)
    torch.cuda.current_stream().wait_stream(side)
    assert_matches(warm, kernels.fft_prox(k_hat, b_hat, z_hat, 0.4))

    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = kernels.fft_prox(*static, 0.4)
    fresh_b = random(generator, 2, 3, 16, 9, dtype=torch.complex64)
    static[1].copy_(fresh_b)
    graph.replay()
    assert_matches(captured, kernels.fft_prox(k_hat, fresh_b, z_hat, 0.4))
