"""Restoration jobs: what to restore and how, over files and batches, for the command line, the demo and Ray.

- :mod:`.request`: the request (method, task, noise level, settings) and its checks on an image;
- :mod:`.values`: request values from text (noise levels, task parameters), for flags and query strings;
- :mod:`.engines`: where a request's engines come from, and the cache that reuses them image after image;
- :mod:`.retry`: one image, retried on smaller tiles when memory runs out;
- :mod:`.batch`: a batch of files restored on this machine;
- :mod:`.inputs`: the input files and the output planned for each;
- :mod:`.outputs`: output folders, bit depths and restored images, written atomically;
- :mod:`.resume`: whether an output is already complete;
- :mod:`.report`: the batch report, its exit status and its summary JSON;
- :mod:`.progress`: one image's step progress and intermediate estimates;
- :mod:`.timing`: stage timings in the log.

Module-level imports stay light (torch, the pipelines and the backends are imported where
they are used), so that the command line's ``--help`` stays fast.
"""
