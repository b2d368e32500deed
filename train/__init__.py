"""Training of the bundled small models (``trt-restore train``); imports from :mod:`trt_restore.export`, never the reverse.

- :mod:`.registry`: the trainable components, in training order, and their default recipes;
- :mod:`.data`: the training image pool and random augmented crops;
- :mod:`.loop`: the resumable training loop (AdamW, weight average, checkpoints);
- :mod:`.autoencoder`, :mod:`.diffusion`, :mod:`.inn`: one training task per model family;
- :mod:`.evaluation`: quality on the held-out images;
- :mod:`.package`: the model-set writer with its model cards;
- :mod:`.command`: what ``trt-restore train`` runs: one component, all of them, or the package.
"""
