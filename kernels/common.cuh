// Device helpers shared by the trt-restore kernels: complex arithmetic on float2/double2
// (the memory layout of torch's complex64/complex128), broadcast reads of TrtRestoreOperand
// inputs, and the 1-D grid-stride launch geometry every kernel uses.
#ifndef TRT_RESTORE_COMMON_CUH
#define TRT_RESTORE_COMMON_CUH

#include "operand.h"

namespace trt_restore {

template <typename T> struct ComplexOf;
template <> struct ComplexOf<float> { using type = float2; };
template <> struct ComplexOf<double> { using type = double2; };

// The interleaved (re, im) complex type of real type T.
template <typename T> using Complex = typename ComplexOf<T>::type;

// a + b
template <typename C> __device__ __forceinline__ C c_add(C a, C b) { return {a.x + b.x, a.y + b.y}; }

// a − b
template <typename C> __device__ __forceinline__ C c_sub(C a, C b) { return {a.x - b.x, a.y - b.y}; }

// s · a for real s
template <typename C, typename T> __device__ __forceinline__ C c_scale(T s, C a) { return {s * a.x, s * a.y}; }

// a / s for real s
template <typename C, typename T> __device__ __forceinline__ C c_div(C a, T s) { return {a.x / s, a.y / s}; }

// a · b
template <typename C> __device__ __forceinline__ C c_mul(C a, C b) {
    return {a.x * b.x - a.y * b.y, a.x * b.y + a.y * b.x};
}

// conj(a) · b
template <typename C> __device__ __forceinline__ C c_conj_mul(C a, C b) {
    return {a.x * b.x + a.y * b.y, a.x * b.y - a.y * b.x};
}

// |a|²
template <typename C> __device__ __forceinline__ auto c_abs2(C a) -> decltype(a.x) { return a.x * a.x + a.y * a.y; }

// Element i of the output reads data[(i / inner) % period] (see operand.h).
template <typename V> __device__ __forceinline__ V load(const TrtRestoreOperand& operand, long long i) {
    long long j = operand.inner == 1 ? i : i / operand.inner;
    if (j >= operand.period) j %= operand.period;
    return static_cast<const V*>(operand.data)[j];
}

// Grid-stride loop bounds: thread t handles t, t + stride, t + 2·stride, …
__device__ __forceinline__ long long first_index() {
    return static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ long long grid_stride() { return static_cast<long long>(gridDim.x) * blockDim.x; }

}  // namespace trt_restore

#ifndef __CUDACC_RTC__
namespace trt_restore {

// Launch geometry of the library's wrappers (the Python runtime uses the same numbers).
constexpr unsigned kBlockSize = 256;
constexpr long long kMaxBlocks = 65535;

// Blocks for n grid-stride items (n > 0).
inline unsigned grid_size(long long n) {
    const long long blocks = (n + kBlockSize - 1) / kBlockSize;
    return static_cast<unsigned>(blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

}  // namespace trt_restore
#endif  // __CUDACC_RTC__

#endif  // TRT_RESTORE_COMMON_CUH
