// permute.cu: V and Vᵀ of a permutation basis as gather and scatter along dimension 1.
//
// Box-average SR, inpainting and colorisation have SVDs whose V (or U) is a permutation of
// the pixel grid followed by a per-group orthogonal mix; the permutation part is
//
//     permute   (Vᵀ, gather):   out[o, i, k] = x[o, index[i], k]     x: (outer, n, inner), out: (outer, m, inner)
//     unpermute (V,  scatter):  out[o, index[i], k] = x[o, i, k]     x, out: (outer, n, inner)
//
// with m = len(index). unpermute inverts permute when index is a permutation of 0..n−1. The
// element type E only fixes the element size (2, 4, 8 or 16 bytes): entries are copied as
// bits, so one instantiation serves every dtype of that size. index is int64 and must hold
// positions in [0, n); the kernels do not bounds-check it.
#include "common.cuh"

namespace trt_restore {

template <typename E>
__global__ void permute_kernel(E* out, const E* x, const long long* index, long long outer, long long n, long long m,
                               long long inner) {
    const long long count = outer * m * inner;
    for (long long t = first_index(); t < count; t += grid_stride()) {
        const long long row = inner == 1 ? t : t / inner;  // o · m + i
        const long long k = t - row * inner;
        const long long o = row / m;
        const long long i = row - o * m;
        out[t] = x[(o * n + index[i]) * inner + k];
    }
}

template <typename E>
__global__ void unpermute_kernel(E* out, const E* x, const long long* index, long long outer, long long n,
                                 long long inner) {
    const long long count = outer * n * inner;
    for (long long t = first_index(); t < count; t += grid_stride()) {
        const long long row = inner == 1 ? t : t / inner;  // o · n + i
        const long long k = t - row * inner;
        const long long o = row / n;
        const long long i = row - o * n;
        out[(o * n + index[i]) * inner + k] = x[t];
    }
}

}  // namespace trt_restore

#ifndef __CUDACC_RTC__
#include "trt_restore_kernels.h"

namespace trt_restore {

template <typename E>
cudaError_t launch_permute(void* out, const void* x, const long long* index, long long outer, long long n, long long m,
                           long long inner, cudaStream_t stream) {
    const long long count = outer * m * inner;
    if (count <= 0) return cudaSuccess;
    permute_kernel<E><<<grid_size(count), kBlockSize, 0, stream>>>(static_cast<E*>(out), static_cast<const E*>(x), index,
                                                                   outer, n, m, inner);
    return cudaGetLastError();
}

template <typename E>
cudaError_t launch_unpermute(void* out, const void* x, const long long* index, long long outer, long long n,
                             long long inner, cudaStream_t stream) {
    const long long count = outer * n * inner;
    if (count <= 0) return cudaSuccess;
    unpermute_kernel<E><<<grid_size(count), kBlockSize, 0, stream>>>(static_cast<E*>(out), static_cast<const E*>(x),
                                                                     index, outer, n, inner);
    return cudaGetLastError();
}

}  // namespace trt_restore

// trt_restore_permute_bN / trt_restore_unpermute_bN for elements of N bytes.
#define TRT_RESTORE_PERMUTATION_API(bytes, E)                                                                        \
    extern "C" cudaError_t trt_restore_permute_b##bytes(void* out, const void* x, const long long* index,            \
                                                       long long outer, long long n, long long m, long long inner, \
                                                       cudaStream_t stream) {                                      \
        return trt_restore::launch_permute<E>(out, x, index, outer, n, m, inner, stream);                          \
    }                                                                                                              \
    extern "C" cudaError_t trt_restore_unpermute_b##bytes(void* out, const void* x, const long long* index,          \
                                                         long long outer, long long n, long long inner,            \
                                                         cudaStream_t stream) {                                    \
        return trt_restore::launch_unpermute<E>(out, x, index, outer, n, inner, stream);                           \
    }

TRT_RESTORE_PERMUTATION_API(2, unsigned short)
TRT_RESTORE_PERMUTATION_API(4, unsigned int)
TRT_RESTORE_PERMUTATION_API(8, unsigned long long)
TRT_RESTORE_PERMUTATION_API(16, ulonglong2)
#endif  // __CUDACC_RTC__
