"""ONNX to TensorRT: optimisation profiles, builder configuration, timing cache and the .plan bundle writer."""
