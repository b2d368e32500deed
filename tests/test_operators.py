"""Degradation operators: adjointness, the SVD contract, the data step, dtypes, noise and errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trt_restore.errors import UserError
from trt_restore.operators import Degradation, Operator, conjugate_gradient, make_operator
from trt_restore.operators.base import relative_error, standard_normal
from trt_restore.operators.padded import PaddedOperator

F64 = torch.float64
GAUSS_SR = {"kernel_sigma": 1.0, "kernel_size": 5}
MOTION_KERNEL = torch.rand(3, 4, generator=torch.Generator().manual_seed(7), dtype=F64)

# (task, params, sizes): odd sides wherever the task allows them.
CASES = [
    ("denoise", {}, [(7, 9), (8, 12)]),
    ("sr2", {}, [(8, 12), (6, 10)]),
    ("sr3", {}, [(9, 15), (12, 6)]),
    ("sr4", {}, [(8, 12), (12, 20)]),
    ("sr8", {}, [(16, 24)]),
    ("sr2-bicubic", {}, [(8, 12), (6, 10)]),
    ("sr3-bicubic", {}, [(9, 15)]),
    ("sr4-bicubic", {}, [(8, 12), (12, 20)]),
    ("sr8-bicubic", {}, [(16, 24)]),
    ("sr2-gauss", GAUSS_SR, [(8, 12), (6, 10)]),
    ("sr3-gauss", GAUSS_SR, [(9, 15)]),
    ("sr4-gauss", GAUSS_SR, [(8, 12)]),
    ("sr8-gauss", GAUSS_SR, [(16, 24)]),
    ("deblur-gauss", {}, [(7, 9), (8, 12)]),
    ("deblur-uniform", {}, [(7, 9), (8, 12)]),
    ("deblur-motion", {"kernel": MOTION_KERNEL}, [(7, 9), (8, 12)]),
    ("inpaint", {"fraction": 0.3, "seed": 1}, [(7, 9), (8, 12)]),
    ("inpaint", {"box": (1, 2, 3, 4)}, [(7, 9)]),
    ("colorize", {}, [(7, 9), (8, 12)]),
]
PARAMS = [
    pytest.param(task, params, size, id=f"{task}-{'-'.join(map(str, params))}-{size[0]}x{size[1]}".replace("--", "-"))
    for task, params, sizes in CASES
    for size in sizes
]


def has_svd(task: str) -> bool:
    return not (task.startswith("sr") and task.endswith("-gauss"))


SVD_PARAMS = [p for p in PARAMS if has_svd(p.values[0])]


def check_svd(op: Operator) -> None:
    """Σ sorted descending and non-negative, K ≤ min(M, N), Vᵀ x of shape (B, N), A = U Σ Vᵀ, V and U orthogonal."""
    s = op.singular_values()
    assert s.dim() == 1 and s.numel() <= min(op.m, op.n)
    assert bool((s[1:] <= s[:-1]).all()) and bool((s >= 0).all())
    assert op.V_adjoint(standard_normal((2, *op.x_shape[1:]), 3)).shape == (2, op.n)
    assert op.svd_error() < 1e-10
    assert op.orthogonality_error() < 1e-10


def check_prox(op: Operator) -> None:
    """prox_l2 is the minimiser, for one μ and for one per item, and matches the generic CG solve."""
    z = standard_normal((2, *op.x_shape[1:]), 7)
    b = standard_normal(op.y_shape(tuple(z.shape)), 6)
    for mu in (0.3, torch.tensor([0.05, 2.0], dtype=F64)):
        assert op.prox_error(b, z, mu) < 1e-8
        assert relative_error(op.prox_l2(b, z, mu), Operator.prox_l2(op, b, z, mu)) < 1e-8


def check_identities(op: Operator) -> None:
    """Adjointness to 1e-10 of the Cauchy–Schwarz bound, the data step and, where one exists, the SVD."""
    assert op.adjointness_error() <= 1e-10
    check_prox(op)
    if op.has_svd:
        check_svd(op)


def build(task: str, params: dict, size: tuple[int, int], channels: int = 3) -> Operator:
    return make_operator(task, size=size, channels=channels, **params)


@pytest.mark.parametrize("task, params, size", PARAMS)
def test_observation_shape(task, params, size):
    op = build(task, params, size)
    x = standard_normal((2, 3, *size), 0)
    assert op.x_shape == (1, 3, *size)
    assert tuple(op.A(x).shape) == op.y_shape(tuple(x.shape))
    assert op.has_svd == has_svd(task)


@pytest.mark.parametrize("task, params, size", PARAMS)
def test_adjoint(task, params, size):
    assert build(task, params, size).adjointness_error() <= 1e-10


@pytest.mark.parametrize("task, params, size", SVD_PARAMS)
def test_svd(task, params, size):
    check_svd(build(task, params, size))


@pytest.mark.parametrize("task, params, size", PARAMS)
def test_prox_l2_is_the_minimiser(task, params, size):
    check_prox(build(task, params, size))


def test_generic_cg_matches_a_dense_solve():
    op = make_operator("sr2-gauss", size=(4, 6), channels=1, kernel=torch.rand(3, 2, dtype=F64))
    basis = torch.eye(op.n, dtype=F64).reshape(op.n, 1, 4, 6)
    dense = op.A(basis).reshape(op.n, -1).T  # (M, N)
    b, z, mu = standard_normal((1, 1, 2, 3), 1), standard_normal((1, 1, 4, 6), 2), 0.01
    rhs = dense.T @ b.reshape(-1) + mu * z.reshape(-1)
    expected = torch.linalg.solve(dense.T @ dense + mu * torch.eye(op.n, dtype=F64), rhs)
    solved = conjugate_gradient(lambda t: op.A_adjoint(op.A(t)) + mu * t, rhs.reshape(z.shape))
    assert relative_error(solved.reshape(-1), expected) < 1e-10
    assert relative_error(Operator.prox_l2(op, b, z, mu).reshape(-1), expected) < 1e-10


def test_separable_and_permutation_singular_values():
    assert torch.allclose(make_operator("sr4", size=(8, 8), channels=1).singular_values(), torch.full((4,), 0.25, dtype=F64))
    assert torch.allclose(make_operator("colorize", size=(2, 3)).singular_values(), torch.full((6,), 3**-0.5, dtype=F64))
    op = make_operator("deblur-uniform", size=(5, 6), channels=2, kernel_size=3)
    s = op.singular_values()
    assert s.numel() == 60 and torch.equal(s[0::2], s[1::2])  # channels interleaved


# Property tests over random sizes, kernels and masks.
size_side = st.integers(min_value=2, max_value=11)


@settings(max_examples=15, deadline=None)
@given(height=size_side, width=size_side, data=st.data())
def test_circular_blur_properties(height, width, data):
    kh = data.draw(st.integers(1, height))
    kw = data.draw(st.integers(1, width))
    kernel = torch.rand(kh, kw, generator=torch.Generator().manual_seed(data.draw(st.integers(0, 999))), dtype=F64)
    op = make_operator("deblur-motion", size=(height, width), channels=data.draw(st.integers(1, 3)), kernel=kernel)
    check_identities(op)


@settings(max_examples=15, deadline=None)
@given(height=size_side, width=size_side, channels=st.integers(1, 3), seed=st.integers(0, 999), share=st.floats(0.0, 0.9))
def test_inpaint_properties(height, width, channels, seed, share):
    mask = torch.rand(channels, height, width, generator=torch.Generator().manual_seed(seed)) >= share
    mask[0, 0, 0] = True
    op = make_operator("inpaint", size=(height, width), channels=channels, mask=mask)
    assert op.singular_values().numel() == int(mask.sum())
    check_identities(op)


@settings(max_examples=15, deadline=None)
@given(
    family=st.sampled_from(["", "-bicubic", "-gauss"]),
    scale=st.sampled_from([2, 3, 4]),
    low=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    channels=st.integers(1, 3),
)
def test_super_resolution_properties(family, scale, low, channels):
    side = scale * min(low)
    params = {"kernel_sigma": 0.8, "kernel_size": min(5, side - (side + 1) % 2)} if family == "-gauss" else {}
    op = make_operator(f"sr{scale}{family}", size=(low[0] * scale, low[1] * scale), channels=channels, **params)
    check_identities(op)


@settings(max_examples=15, deadline=None)
@given(
    height=st.integers(1, 12),
    width=st.integers(1, 12),
    sigma=st.floats(0.3, 4.0),
    half=st.integers(0, 8),
)
def test_separable_blur_properties(height, width, sigma, half):
    for op in (
        make_operator("deblur-gauss", size=(height, width), channels=2, kernel_sigma=sigma, kernel_size=2 * half + 1),
        make_operator("deblur-uniform", size=(height, width), channels=1, kernel_size=2 * half + 1),
    ):
        check_identities(op)


# Dtypes and devices.
@pytest.mark.parametrize(
    "task, params",
    [("sr4", {}), ("sr2-bicubic", {}), ("sr2-gauss", GAUSS_SR), ("deblur-gauss", {}), ("deblur-motion", {"kernel": MOTION_KERNEL}), ("inpaint", {"fraction": 0.5}), ("colorize", {})],
)
def test_float32_follows_float64(task, params):
    op = build(task, params, (8, 12))
    x64, z64 = standard_normal((2, 3, 8, 12), 1), standard_normal((2, 3, 8, 12), 2)
    b64 = op.A(x64)
    x32, b32, z32 = x64.float(), b64.float(), z64.float()
    assert op.A(x32).dtype == torch.float32 and op.A_adjoint(b32).dtype == torch.float32
    t32 = op.prox_l2(b32, z32, 0.1)
    assert t32.dtype == torch.float32
    assert relative_error(t32.double(), op.prox_l2(b64, z64, 0.1)) < 1e-4
    if op.has_svd:
        assert relative_error(op.V(op.V_adjoint(x32)).double(), x64.reshape(2, -1)) < 1e-5
        assert op.singular_values(torch.float32).dtype == torch.float32


@pytest.mark.gpu
@pytest.mark.parametrize(
    "task, params",
    [("sr4", {}), ("sr2-bicubic", {}), ("sr2-gauss", GAUSS_SR), ("deblur-uniform", {}), ("deblur-motion", {"kernel": MOTION_KERNEL}), ("inpaint", {"fraction": 0.5}), ("colorize", {})],
)
def test_cuda_matches_cpu(task, params):
    op = build(task, params, (8, 12))
    x, z = standard_normal((2, 3, 8, 12), 1), standard_normal((2, 3, 8, 12), 2)
    b = op.A(x)
    cuda = torch.device("cuda")
    assert relative_error(op.A(x.to(cuda)).cpu(), b) < 1e-12
    assert relative_error(op.prox_l2(b.to(cuda), z.to(cuda), 0.1).cpu(), op.prox_l2(b, z, 0.1)) < 1e-10
    if op.has_svd:
        assert relative_error(op.V_adjoint(x.to(cuda)).cpu(), op.V_adjoint(x)) < 1e-12
        assert relative_error(op.U(b.to(cuda).reshape(2, -1)).cpu(), op.U(b.reshape(2, -1))) < 1e-12
    observe = Degradation(op, 0.1).observe
    assert relative_error(observe(x.to(cuda), seed=3).cpu(), observe(x, seed=3)) < 1e-12


# The noise model.
def test_observe_is_deterministic_with_the_right_std():
    op = make_operator("sr2", size=(128, 128), channels=3)
    x = torch.rand(1, 3, 128, 128, dtype=F64, generator=torch.Generator().manual_seed(0))
    degradation = Degradation(op, 0.1)
    y = degradation.observe(x, seed=5)
    assert torch.equal(y, degradation.observe(x, seed=5))
    assert not torch.equal(y, degradation.observe(x, seed=6))
    noise = y - op.A(x)
    assert abs(noise.std().item() - 0.1) < 0.003 and abs(noise.mean().item()) < 0.003
    # Drawn in float64 and cast: float32 sees the same numbers.
    assert torch.allclose(degradation.observe(x.float(), seed=5), y.float(), atol=1e-6)
    assert torch.equal(Degradation(op, 0).observe(x, seed=5), op.A(x))


# Errors.
@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: make_operator("blur", size=(8, 8)), "unknown task 'blur'; choose one of: denoise, srN"),
        (lambda: make_operator("sr5", size=(10, 10)), "scale 5 is not supported"),
        (lambda: make_operator("sr4-lanczos", size=(8, 8)), "unknown task"),
        (lambda: make_operator("sr4", size=(10, 12)), "divisible by 4"),
        (lambda: make_operator("sr3-gauss", size=(9, 10)), "divisible by 3"),
        (lambda: make_operator("denoise", size=(0, 8)), "size must be"),
        (lambda: make_operator("denoise", size=(8, 8), channels=0), "channels must be"),
        (lambda: make_operator("sr2", size=(8, 8), kernel_size=3), "has no parameter kernel_size; its parameters: none"),
        (lambda: make_operator("deblur-gauss", size=(8, 8), sigma=2), "its parameters: kernel_sigma, kernel_size"),
        (lambda: make_operator("deblur-gauss", size=(8, 8), kernel_size=4), "positive odd integer"),
        (lambda: make_operator("deblur-gauss", size=(8, 8), kernel_sigma=-1), "kernel_sigma must be"),
        (lambda: make_operator("deblur-motion", size=(8, 8)), "needs kernel="),
        (lambda: make_operator("deblur-motion", size=(8, 8), kernel=torch.ones(9, 3)), "larger than the 8x8 image"),
        (lambda: make_operator("deblur-motion", size=(8, 8), kernel=torch.ones(3)), "2-D"),
        (lambda: make_operator("deblur-motion", size=(8, 8), kernel=-torch.ones(3, 3)), "positive sum"),
        (lambda: make_operator("deblur-motion", size=(8, 8), kernel="no/such/file.npy"), "not found"),
        (lambda: make_operator("sr2-gauss", size=(8, 8), kernel=torch.ones(3, 3), kernel_sigma=1.0), "not both"),
        (lambda: make_operator("inpaint", size=(8, 8)), "exactly one of mask=, fraction= or box="),
        (lambda: make_operator("inpaint", size=(8, 8), fraction=0.2, box=(0, 0, 1, 1)), "exactly one"),
        (lambda: make_operator("inpaint", size=(8, 8), fraction=1.0), "in [0, 1)"),
        (lambda: make_operator("inpaint", size=(8, 8), box=(4, 4, 5, 1)), "outside the 8x8 image"),
        (lambda: make_operator("inpaint", size=(8, 8), mask=torch.ones(7, 8)), "mask must have shape"),
        (lambda: make_operator("inpaint", size=(8, 8), mask=torch.zeros(8, 8)), "observes no pixel"),
        (lambda: make_operator("colorize", size=(8, 8), channels=1), "channels >= 2"),
        (lambda: make_operator("sr2", size=(8, 8)).A(torch.zeros(1, 3, 8, 6)), "shape (B, 3, 8, 8)"),
        (lambda: make_operator("sr2", size=(8, 8)).A_adjoint(torch.zeros(1, 3, 8, 8)), "shape (B, 3, 4, 4)"),
        (lambda: make_operator("sr2", size=(8, 8)).V_adjoint(torch.zeros(1, 10)), "(B, 192)"),
        (lambda: make_operator("sr2-gauss", size=(8, 8)).V(torch.zeros(1, 192)), "has no SVD"),
        (lambda: make_operator("sr2-gauss", size=(8, 8)).svd_error(), "has no SVD"),
        (lambda: make_operator("sr2-gauss", size=(8, 8)).orthogonality_error(), "has no SVD"),
        (lambda: make_operator("denoise", size=(8, 8)).prox_l2(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8), 0.0), "mu > 0"),
        (lambda: make_operator("denoise", size=(8, 8)).prox_l2(torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8), torch.ones(3)), "one value per batch item"),
        (lambda: Degradation(make_operator("denoise", size=(8, 8)), -0.1), "noise sigma must be"),
    ],
)
def test_bad_input_raises_a_clear_user_error(call, message):
    with pytest.raises(UserError) as error:
        call()
    assert message in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("task, params, size", PARAMS)
def test_padded_operator_keeps_every_identity(task, params, size):
    """The padded canvas: adjoint, SVD (border pixels as zero singular values) and data step all hold."""
    inner = build(task, params, size)
    op = PaddedOperator(inner, (size[0] + 2, size[1] + 3))
    check_identities(op)
    x = standard_normal((2, *op.x_shape[1:]), 9)
    assert relative_error(op.A(x), inner.A(x[..., : size[0], : size[1]])) == 0
