"""trt-restore: image restoration with latent diffusion models on ONNX Runtime and TensorRT.

Images are float tensors in [0, 1] at every API boundary; noise levels are on
the same scale (sigma = 25/255 means "noise level 25").
"""

__version__ = "0.1.0"

__all__ = ["__version__", "restore"]


def __getattr__(name):
    # `restore` pulls in the pipelines and backends; import it only when asked.
    if name == "restore":
        from .api import restore

        return restore
    raise AttributeError(name)
