// ddrm_update.cu: one DDRM step in the spectral space of H = U Σ Vᵀ (Kawar et al. 2022,
// `efficient_generalized_steps`), all three cases and the fresh noise in one pass.
//
// Per entry of the V basis, with s the singular value (0 where H has none or where it is
// numerically zero: the caller passes SVDOperator.observed_singular_values), x̄₀ = Vᵀx₀ the
// model's clean estimate, ε̄ = Vᵀε its noise estimate, Uᵀy the observation (zero-padded),
// n ~ N(0, I), σ' = sigma_next, σ_y the observation noise, η = eta, η_b = eta_b:
//
//     σ_η = η σ',   σ̃ = √(σ'² − σ_η²)
//
//     s = 0:          x̄ = x̄₀ + σ̃ ε̄ + σ_η n                                   (missing)
//     s σ' < σ_y:     x̄ = x̄₀ + σ̃ (Uᵀy − s x̄₀)/σ_y + σ_η n                     (less noisy)
//     s σ' > σ_y:     x̄ = η_b Uᵀy/s + (1 − η_b) x̄₀ + √(max(σ'² − (σ_y η_b/s)², 0)) n   (noisier)
//
// s σ' = σ_y exactly falls in the first case, as in the reference code; where σ_y = 0 the
// second case cannot occur and its divisor is 1. Scalar coefficients are formed in double and
// rounded to T once, as the torch reference does. Inputs broadcast against the output
// (operand.h), e.g. one (N,) singular-value vector for a (B, N) batch.
#include "common.cuh"

namespace trt_restore {

template <typename T>
__global__ void ddrm_update_kernel(T* out, TrtRestoreOperand vt_x0, TrtRestoreOperand vt_eps, TrtRestoreOperand ut_y,
                                   TrtRestoreOperand singulars, TrtRestoreOperand noise, double sigma_next,
                                   double sigma_y, double eta, double eta_b, long long n) {
    const double std_next_d = eta * sigma_next;
    const T std_next = T(std_next_d);
    const T tilde_next = T(sqrt(sigma_next * sigma_next - std_next_d * std_next_d));
    const T sigma_next_t = T(sigma_next);
    const T sigma_y_t = T(sigma_y);
    const T sigma_next_sq = T(sigma_next * sigma_next);
    const T sigma_y_eta_b = T(sigma_y * eta_b);
    const T eta_b_t = T(eta_b);
    const T one_minus_eta_b = T(1.0 - eta_b);
    const T residual_divisor = T(sigma_y > 0 ? sigma_y : 1.0);

    for (long long i = first_index(); i < n; i += grid_stride()) {
        const T s = load<T>(singulars, i);
        const T x0 = load<T>(vt_x0, i);
        const T fresh = load<T>(noise, i);
        T result;
        if (s > T(0) && s * sigma_next_t > sigma_y_t) {
            const T y_bar = load<T>(ut_y, i) / s;
            const T ratio = (T(1) / s) * sigma_y_eta_b;  // rounded as the torch reference rounds it
            const T diff = sqrt(fmax(sigma_next_sq - ratio * ratio, T(0)));
            result = eta_b_t * y_bar + one_minus_eta_b * x0 + diff * fresh;
        } else if (s > T(0) && s * sigma_next_t < sigma_y_t) {
            const T residual = (load<T>(ut_y, i) - s * x0) / residual_divisor;
            result = x0 + tilde_next * residual + std_next * fresh;
        } else {
            result = x0 + tilde_next * load<T>(vt_eps, i) + std_next * fresh;
        }
        out[i] = result;
    }
}

}  // namespace trt_restore

#ifndef __CUDACC_RTC__
#include "trt_restore_kernels.h"

namespace trt_restore {

template <typename T>
cudaError_t launch_ddrm_update(T* out, TrtRestoreOperand vt_x0, TrtRestoreOperand vt_eps, TrtRestoreOperand ut_y,
                               TrtRestoreOperand singulars, TrtRestoreOperand noise, double sigma_next, double sigma_y,
                               double eta, double eta_b, long long n, cudaStream_t stream) {
    if (n <= 0) return cudaSuccess;
    ddrm_update_kernel<T><<<grid_size(n), kBlockSize, 0, stream>>>(out, vt_x0, vt_eps, ut_y, singulars, noise,
                                                                   sigma_next, sigma_y, eta, eta_b, n);
    return cudaGetLastError();
}

}  // namespace trt_restore

extern "C" cudaError_t trt_restore_ddrm_update_f32(float* out, TrtRestoreOperand vt_x0, TrtRestoreOperand vt_eps,
                                                   TrtRestoreOperand ut_y, TrtRestoreOperand singulars,
                                                   TrtRestoreOperand noise, double sigma_next, double sigma_y,
                                                   double eta, double eta_b, long long n, cudaStream_t stream) {
    return trt_restore::launch_ddrm_update<float>(out, vt_x0, vt_eps, ut_y, singulars, noise, sigma_next, sigma_y, eta,
                                                  eta_b, n, stream);
}

extern "C" cudaError_t trt_restore_ddrm_update_f64(double* out, TrtRestoreOperand vt_x0, TrtRestoreOperand vt_eps,
                                                   TrtRestoreOperand ut_y, TrtRestoreOperand singulars,
                                                   TrtRestoreOperand noise, double sigma_next, double sigma_y,
                                                   double eta, double eta_b, long long n, cudaStream_t stream) {
    return trt_restore::launch_ddrm_update<double>(out, vt_x0, vt_eps, ut_y, singulars, noise, sigma_next, sigma_y, eta,
                                                   eta_b, n, stream);
}
#endif  // __CUDACC_RTC__
