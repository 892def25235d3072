"""Benchmark detkit.ops against torchvision: median time of alternating runs in one process.

    python tools/bench_ops.py [--threads 2] [--budget 2.0] [--no-cuda]

Prints one row per (op, size, device): detkit ms, torchvision ms, ratio detkit / torchvision (< 1 is
faster) and whether the two results agree. CUDA rows are added when a GPU is present. The cases:
``detkit.benchmarks.ops``.
"""
import argparse
from functools import partial

import torch

from detkit.benchmarks.ops import run_ops_benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--budget", type=float, default=2.0, help="seconds of timing per row after 5 pairs")
    parser.add_argument("--no-cuda", action="store_true", help="CPU rows only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run_ops_benchmark(budget_s=args.budget, cuda=not args.no_cuda, print_line=partial(print, flush=True))


if __name__ == "__main__":
    main()
