"""Torch side: model definitions, checkpoint loaders, component wrappers and ONNX export.

- :mod:`.models`: loaders for public checkpoints (diffusers folders, hub ids in the local cache);
- :mod:`.prompt`: the empty-prompt embedding a Stable Diffusion UNet runs on, with its provenance;
- :mod:`.tiny`: tiny random-initialised instances of every architecture;
- :mod:`.inn`: the wavelet-lifting INN of LatentINDIGO;
- :mod:`.components`: one ``nn.Module`` per network component, each with its ``ComponentSpec``;
- :mod:`.model_sets`: named collections of networks and the registry behind ``load_model_set``;
- :mod:`.precision`: the fp16 variant of a component (normalisations and softmax in fp32);
- :mod:`.onnx_export`, :mod:`.vjp`, :mod:`.graph`: ONNX export, the decoder VJP graph, graph cleanup.

Training of the bundled models lives in :mod:`trt_restore.train`, which imports from here.
"""
