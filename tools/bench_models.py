"""Benchmark detkit's detectors against torchvision's of the same architecture, alternating in one process.

    python tools/bench_models.py [--threads 2] [--warmup 3] [--steps 10] [--no-cuda] [--only TEXT] [--quick]

Rows: images/s of a training step and of an inference pass, detkit vs torchvision, their ratio (above 1: detkit
is faster), each step's peak memory, and whether the pair is the same architecture. How the twins are built and
what is measured: ``detkit.benchmarks.models``, ``detkit.benchmarks.torchvision_twins`` and (rows "tv:<arch>",
torchvision's six with the same weights as detkit's import) ``detkit.benchmarks.torchvision_imports``.
"""
import argparse
import sys
from functools import partial

import torch

from detkit.benchmarks.models import run_model_benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="warm-up steps per model and phase (default 3; quick 1)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per model and phase (default 10; quick 2)")
    parser.add_argument("--memory-steps", type=int, default=None,
                        help="extra steps measuring memory (default 2; quick 1)")
    parser.add_argument("--no-cuda", action="store_true", help="CPU rows only")
    parser.add_argument("--no-cpu", action="store_true", help="CUDA rows only")
    parser.add_argument("--only", default="", help="only the settings whose row name contains this text (\"tv:\": "
                                                   "torchvision's six detectors against detkit's import of them)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few steps: a smoke run of seconds")
    parser.add_argument("--score-threshold", type=float, default=None,
                        help="inference score threshold of both models instead of the configs' 0.05 (random weights "
                             "score few candidates above 0.05; 0 gives post-processing its full top-k / NMS load)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run_model_benchmark(quick=args.quick, warmup=args.warmup, steps=args.steps, memory_steps=args.memory_steps,
                        cuda=not args.no_cuda, cpu=not args.no_cpu, only=args.only,
                        score_threshold=args.score_threshold,
                        print_line=partial(print, flush=True), log=partial(print, file=sys.stderr, flush=True))


if __name__ == "__main__":
    main()
