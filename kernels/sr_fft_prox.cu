// sr_fft_prox.cu: the closed-form data step for blur plus s-fold decimation (Zhao et al. 2016,
// as in USRNet/DPIR), fused into one kernel.
//
//     t = argmin_t ½‖A t − b‖² + (μ/2)‖t − z‖²,   A = S_s K
//
// with K a circular blur and S_s keeping every s-th pixel in each direction. In the full 2-D
// Fourier domain of an (H, W) image, S_sᵀS_s averages the s×s aliased copies of a spectrum, so
// with R̂ = F(Aᵀb) + μẐ (the caller passes atb_hat = F(Aᵀb)):
//
//     t̂ = (R̂ − conj(K̂) ⊙ ⇑[ mean_s(K̂ ⊙ R̂) / (mean_s(|K̂|²) + μ) ]) / μ
//
// mean_s averages the s×s blocks of size (H/s, W/s) of a spectrum, and ⇑ tiles the (H/s, W/s)
// result back to (H, W). Frequency (h, w) belongs to block position (h mod H/s, w mod W/s).
// Each thread owns one (h', w') of the (H/s, W/s) grid of one leading index: it reads the s²
// aliased frequencies (h' + i·H/s, w' + j·W/s), reduces them, and writes the s² outputs.
//
// Spectra are interleaved complex (float2/double2) laid out as (lead, H, W). Inputs broadcast
// against the output (operand.h); μ is constant over each (H, W) plane and, when mu.data is
// null, the constant mu_value.
#include "common.cuh"

namespace trt_restore {

template <typename T>
__global__ void sr_fft_prox_kernel(Complex<T>* out, TrtRestoreOperand k_hat, TrtRestoreOperand atb_hat,
                                   TrtRestoreOperand z_hat, TrtRestoreOperand mu, T mu_value, long long lead,
                                   long long height, long long width, int scale) {
    const long long block_h = height / scale;
    const long long block_w = width / scale;
    const long long cells = lead * block_h * block_w;
    const T inv_count = T(1) / T(scale * scale);
    for (long long cell = first_index(); cell < cells; cell += grid_stride()) {
        const long long w0 = cell % block_w;
        const long long h0 = (cell / block_w) % block_h;
        const long long base = (cell / (block_w * block_h)) * height * width + h0 * width + w0;
        const T m = mu.data ? load<T>(mu, base) : mu_value;

        Complex<T> k_r_sum = {T(0), T(0)};
        T k_abs2_sum = T(0);
        for (int i = 0; i < scale; ++i) {
            for (int j = 0; j < scale; ++j) {
                const long long e = base + i * block_h * width + j * block_w;
                const Complex<T> k = load<Complex<T>>(k_hat, e);
                const Complex<T> r = c_add(load<Complex<T>>(atb_hat, e), c_scale(m, load<Complex<T>>(z_hat, e)));
                k_r_sum = c_add(k_r_sum, c_mul(k, r));
                k_abs2_sum += c_abs2(k);
            }
        }
        const Complex<T> q = c_div(c_scale(inv_count, k_r_sum), k_abs2_sum * inv_count + m);

        for (int i = 0; i < scale; ++i) {
            for (int j = 0; j < scale; ++j) {
                const long long e = base + i * block_h * width + j * block_w;
                const Complex<T> k = load<Complex<T>>(k_hat, e);
                const Complex<T> r = c_add(load<Complex<T>>(atb_hat, e), c_scale(m, load<Complex<T>>(z_hat, e)));
                out[e] = c_div(c_sub(r, c_conj_mul(k, q)), m);
            }
        }
    }
}

}  // namespace trt_restore

#ifndef __CUDACC_RTC__
#include "trt_restore_kernels.h"

namespace trt_restore {

template <typename T>
cudaError_t launch_sr_fft_prox(Complex<T>* out, TrtRestoreOperand k_hat, TrtRestoreOperand atb_hat,
                               TrtRestoreOperand z_hat, TrtRestoreOperand mu, T mu_value, long long lead,
                               long long height, long long width, int scale, cudaStream_t stream) {
    if (scale <= 0 || height % scale != 0 || width % scale != 0) return cudaErrorInvalidValue;
    const long long cells = lead * (height / scale) * (width / scale);
    if (cells <= 0) return cudaSuccess;
    sr_fft_prox_kernel<T><<<grid_size(cells), kBlockSize, 0, stream>>>(out, k_hat, atb_hat, z_hat, mu, mu_value, lead,
                                                                       height, width, scale);
    return cudaGetLastError();
}

}  // namespace trt_restore

extern "C" cudaError_t trt_restore_sr_fft_prox_f32(float2* out, TrtRestoreOperand k_hat, TrtRestoreOperand atb_hat,
                                                   TrtRestoreOperand z_hat, TrtRestoreOperand mu, float mu_value,
                                                   long long lead, long long height, long long width, int scale,
                                                   cudaStream_t stream) {
    return trt_restore::launch_sr_fft_prox<float>(out, k_hat, atb_hat, z_hat, mu, mu_value, lead, height, width, scale,
                                                  stream);
}

extern "C" cudaError_t trt_restore_sr_fft_prox_f64(double2* out, TrtRestoreOperand k_hat, TrtRestoreOperand atb_hat,
                                                   TrtRestoreOperand z_hat, TrtRestoreOperand mu, double mu_value,
                                                   long long lead, long long height, long long width, int scale,
                                                   cudaStream_t stream) {
    return trt_restore::launch_sr_fft_prox<double>(out, k_hat, atb_hat, z_hat, mu, mu_value, lead, height, width, scale,
                                                   stream);
}
#endif  // __CUDACC_RTC__
