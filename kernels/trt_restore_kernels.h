/* C API of libtrt_restore_kernels, the nvcc build of kernels/*.cu (see CMakeLists.txt).
 *
 * Every function enqueues one kernel on `stream` and returns the launch status. Outputs are
 * contiguous; inputs passed as TrtRestoreOperand broadcast against the output (operand.h).
 * Complex spectra are interleaved (float2/double2). The math of each kernel is in the header
 * comment of its source file.
 */
#ifndef TRT_RESTORE_KERNELS_H
#define TRT_RESTORE_KERNELS_H

#include <cuda_runtime_api.h>
#include <vector_types.h>

#include "operand.h"

#ifdef __cplusplus
extern "C" {
#endif

/* fft_prox.cu: t̂ = (conj(K̂) B̂ + μ Ẑ) / (|K̂|² + μ) over n output entries; μ = mu_value where mu.data is NULL. */
cudaError_t trt_restore_fft_prox_f32(float2* out, TrtRestoreOperand k_hat, TrtRestoreOperand b_hat,
                                     TrtRestoreOperand z_hat, TrtRestoreOperand mu, float mu_value, long long n,
                                     cudaStream_t stream);
cudaError_t trt_restore_fft_prox_f64(double2* out, TrtRestoreOperand k_hat, TrtRestoreOperand b_hat,
                                     TrtRestoreOperand z_hat, TrtRestoreOperand mu, double mu_value, long long n,
                                     cudaStream_t stream);

/* sr_fft_prox.cu: blur + scale-fold decimation data step on (lead, height, width) spectra. */
cudaError_t trt_restore_sr_fft_prox_f32(float2* out, TrtRestoreOperand k_hat, TrtRestoreOperand atb_hat,
                                        TrtRestoreOperand z_hat, TrtRestoreOperand mu, float mu_value, long long lead,
                                        long long height, long long width, int scale, cudaStream_t stream);
cudaError_t trt_restore_sr_fft_prox_f64(double2* out, TrtRestoreOperand k_hat, TrtRestoreOperand atb_hat,
                                        TrtRestoreOperand z_hat, TrtRestoreOperand mu, double mu_value, long long lead,
                                        long long height, long long width, int scale, cudaStream_t stream);

/* ddrm_update.cu: one DDRM spectral step over n entries of the V basis. */
cudaError_t trt_restore_ddrm_update_f32(float* out, TrtRestoreOperand vt_x0, TrtRestoreOperand vt_eps,
                                        TrtRestoreOperand ut_y, TrtRestoreOperand singulars, TrtRestoreOperand noise,
                                        double sigma_next, double sigma_y, double eta, double eta_b, long long n,
                                        cudaStream_t stream);
cudaError_t trt_restore_ddrm_update_f64(double* out, TrtRestoreOperand vt_x0, TrtRestoreOperand vt_eps,
                                        TrtRestoreOperand ut_y, TrtRestoreOperand singulars, TrtRestoreOperand noise,
                                        double sigma_next, double sigma_y, double eta, double eta_b, long long n,
                                        cudaStream_t stream);

/* permute.cu: gather out[o, i, k] = x[o, index[i], k] (out: outer × m × inner, x: outer × n × inner) and
 * scatter out[o, index[i], k] = x[o, i, k] (both outer × n × inner), for elements of 2, 4, 8 or 16 bytes. */
#define TRT_RESTORE_DECLARE_PERMUTATION(bytes)                                                                  \
    cudaError_t trt_restore_permute_b##bytes(void* out, const void* x, const long long* index, long long outer, \
                                            long long n, long long m, long long inner, cudaStream_t stream);    \
    cudaError_t trt_restore_unpermute_b##bytes(void* out, const void* x, const long long* index, long long outer, \
                                              long long n, long long inner, cudaStream_t stream);
TRT_RESTORE_DECLARE_PERMUTATION(2)
TRT_RESTORE_DECLARE_PERMUTATION(4)
TRT_RESTORE_DECLARE_PERMUTATION(8)
TRT_RESTORE_DECLARE_PERMUTATION(16)
#undef TRT_RESTORE_DECLARE_PERMUTATION

#ifdef __cplusplus
}
#endif

#endif /* TRT_RESTORE_KERNELS_H */
