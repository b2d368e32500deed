"""Run the benchmark harness: ``python benchmarks/run.py [flags]`` is ``trt-restore bench [flags]``.

See benchmarks/README.md for the flags, the outputs and how to read them.
"""

from __future__ import annotations

import argparse
import sys

from trt_restore.cli.bench import add_bench_arguments, run_bench
from trt_restore.errors import UserError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/run.py", description="trt-restore benchmarks: quality and speed")
    add_bench_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_bench(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
