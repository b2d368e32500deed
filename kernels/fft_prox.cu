// fft_prox.cu: the FFT-domain t-update for a circular convolution K (RELD's deblurring data step).
//
//     t = argmin_t ½‖K t − b‖² + (μ/2)‖t − z‖²   ⇔   (KᵀK + μI) t = Kᵀb + μz
//
// K is diagonal in the Fourier basis, so the solve is one complex division per frequency:
//
//     t̂ = (conj(K̂) B̂ + μ Ẑ) / (|K̂|² + μ)
//
// Spectra are interleaved complex (float2/double2). K̂, B̂, Ẑ and μ broadcast against the
// output (operand.h): typically K̂ is one (H, W') spectrum for a (B, C, H, W') batch and μ is
// a per-item (B, 1, 1, 1) tensor. When mu.data is null, μ is the constant mu_value.
#include "common.cuh"

namespace trt_restore {

template <typename T>
__global__ void fft_prox_kernel(Complex<T>* out, TrtRestoreOperand k_hat, TrtRestoreOperand b_hat,
                                TrtRestoreOperand z_hat, TrtRestoreOperand mu, T mu_value, long long n) {
    for (long long i = first_index(); i < n; i += grid_stride()) {
        const Complex<T> k = load<Complex<T>>(k_hat, i);
        const T m = mu.data ? load<T>(mu, i) : mu_value;
        const Complex<T> numerator = c_add(c_conj_mul(k, load<Complex<T>>(b_hat, i)), c_scale(m, load<Complex<T>>(z_hat, i)));
        out[i] = c_div(numerator, c_abs2(k) + m);
    }
}

}  // namespace trt_restore

#ifndef __CUDACC_RTC__
#include "trt_restore_kernels.h"

namespace trt_restore {

template <typename T>
cudaError_t launch_fft_prox(Complex<T>* out, TrtRestoreOperand k_hat, TrtRestoreOperand b_hat, TrtRestoreOperand z_hat,
                            TrtRestoreOperand mu, T mu_value, long long n, cudaStream_t stream) {
    if (n <= 0) return cudaSuccess;
    fft_prox_kernel<T><<<grid_size(n), kBlockSize, 0, stream>>>(out, k_hat, b_hat, z_hat, mu, mu_value, n);
    return cudaGetLastError();
}

}  // namespace trt_restore

extern "C" cudaError_t trt_restore_fft_prox_f32(float2* out, TrtRestoreOperand k_hat, TrtRestoreOperand b_hat,
                                                TrtRestoreOperand z_hat, TrtRestoreOperand mu, float mu_value,
                                                long long n, cudaStream_t stream) {
    return trt_restore::launch_fft_prox<float>(out, k_hat, b_hat, z_hat, mu, mu_value, n, stream);
}

extern "C" cudaError_t trt_restore_fft_prox_f64(double2* out, TrtRestoreOperand k_hat, TrtRestoreOperand b_hat,
                                                TrtRestoreOperand z_hat, TrtRestoreOperand mu, double mu_value,
                                                long long n, cudaStream_t stream) {
    return trt_restore::launch_fft_prox<double>(out, k_hat, b_hat, z_hat, mu, mu_value, n, stream);
}
#endif  // __CUDACC_RTC__
