"""Running exported components: the Engine interface and its torch, onnxruntime and TensorRT backends,
the ``.plan`` bundle reader, optimisation profiles, and device, stream and scratch-memory handling."""
