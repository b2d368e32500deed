"""Restoration beyond one process, on Ray (``pip install 'trt-restore[ray]'``).

:mod:`~trt_restore.distributed.batch` restores a folder, a glob or a list of URIs with
Ray Data over many GPUs and nodes; :mod:`~trt_restore.distributed.serve` serves
restoration over HTTP with Ray Serve. :mod:`~trt_restore.distributed.storage` reads
and writes local paths and the URIs that ``pyarrow.fs`` knows (``s3://``, ``gs://``,
``file://``). Only these modules import Ray, and only when they are used.
"""

RAY_LOCAL = "local"
"""The value of a bare ``--ray``: start Ray on this machine."""
