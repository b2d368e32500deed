"""CUDA C++ sources of the fused data-step kernels (package data for the NVRTC compiler in trt_restore.kernels)."""
