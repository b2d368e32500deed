"""``python -m trt_restore.cli``: the ``trt-restore`` command."""

import sys

from . import main

sys.exit(main())
