/* TrtRestoreOperand: a kernel input read with broadcasting.
 *
 * Every kernel writes a contiguous output and reads each input as
 *
 *     input(i) = ((const T*)data)[(i / inner) % period]
 *
 * for output element i. This describes any contiguous input whose non-singleton
 * dimensions form one contiguous run of the output's dimensions: a full tensor
 * (inner 1, period n), a (H, W) spectrum against (B, C, H, W) images (inner 1,
 * period H·W), a per-item (B, 1, 1, 1) weight (inner C·H·W, period B).
 *
 * Plain C, shared by the kernels (NVRTC and nvcc) and the C API of the library.
 */
#ifndef TRT_RESTORE_OPERAND_H
#define TRT_RESTORE_OPERAND_H

typedef struct TrtRestoreOperand {
    const void* data;
    long long inner;
    long long period;
} TrtRestoreOperand;

#endif /* TRT_RESTORE_OPERAND_H */
