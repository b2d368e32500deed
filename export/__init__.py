"""Torch side: model definitions, checkpoint loaders, component wrappers and ONNX export."""
