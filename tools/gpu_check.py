"""One command for a machine with a GPU: CUDA tests, CUDA-vs-CPU kernels, CUDA benchmark rows, bf16 training.

    python tools/gpu_check.py [--wheels .whl] [--minutes 1.5] [--count-syncs] [--seed N]
    python tools/gpu_check.py --force-cpu-dry-run        # the same logic on the CPU, tiny settings
    python tools/gpu_check.py --download-wheels .whl     # here, where PyPI is reachable: the wheelhouse

Steps (imports, cuda-tests, ops, bench, train-*, syncs), each with a PASS / FAIL / SKIP line; the exit status is 1
if any step failed. Without CUDA it prints "no CUDA device: gpu-check skipped" and exits 0 (CI has no GPU).

The GPU machine reaches no package registry and lacks albumentations, pycocotools and jsonargparse:
``make gpu-wheels`` downloads their wheels into .whl/, and this script installs them into --site-dir when an
import is missing. No venv and no install of detkit is needed there. Logs go to $OUT when set (the device tool
brings back at most 8 files), else to a temporary folder. What each step does: ``detkit.benchmarks.gpu_check``.
"""
import argparse
import os
import sys
import tempfile
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))  # the GPU machine runs this without installing detkit

from detkit.benchmarks.gpu_check import run_gpu_check  # noqa: E402
from detkit.benchmarks.gpu_options import STEPS, GpuCheckOptions  # noqa: E402
from detkit.benchmarks.gpu_wheels import download_wheels  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheels", default=os.environ.get("GPU_WHEELS", str(REPOSITORY / ".whl")),
                        help="wheelhouse installed when packages are missing (default: .whl/)")
    parser.add_argument("--site-dir", default=os.path.join(tempfile.gettempdir(), "detkit_gpu_site"),
                        help="where the wheels are installed (pip --target)")
    parser.add_argument("--install-wheels", action="store_true", help="install the wheels even if imports work")
    parser.add_argument("--download-wheels", metavar="DIR", help="download the wheelhouse into DIR and exit")
    parser.add_argument("--python-version", default="3.12", help="CPython of the wheels (--download-wheels)")
    parser.add_argument("--minutes", type=float, default=1.5, help="training budget of each config")
    parser.add_argument("--deadline", type=float, default=480,
                        help="seconds the whole check should take: shorter training budgets (>= 0.5 min) if needed")
    parser.add_argument("--num-workers", type=int, default=4, help="data loader workers of the trainings")
    parser.add_argument("--min-ap", type=float, default=None,
                        help="fail a training whose best val AP is lower (default 0.05; 0 in the dry run)")
    parser.add_argument("--count-syncs", action="store_true", help="also count host-device syncs of one step")
    parser.add_argument("--seed", type=int, default=None, help="seed of the ops inputs (default: fresh)")
    parser.add_argument("--cpu-threads", type=int, default=None, help="CPU threads of the ops reference")
    parser.add_argument("--only", default="", help=f"comma-separated steps: {','.join(STEPS)}")
    parser.add_argument("--force-cpu-dry-run", action="store_true",
                        help="run the ops and training steps on the CPU with tiny settings (no CUDA needed)")
    parser.add_argument("--dry-run-precision", default="32-true", help="trainer precision of the dry run")
    parser.add_argument("--log-dir", default=os.environ.get("OUT") or None, help="default: $OUT, else a temp dir")
    parser.add_argument("--tests-timeout", type=float, default=180)
    parser.add_argument("--ops-timeout", type=float, default=120)
    parser.add_argument("--bench-timeout", type=float, default=200)
    parser.add_argument("--bench-args", default="", help="more arguments of tools/bench_models.py, e.g. '--steps 5'")
    parser.add_argument("--train-overhead-timeout", type=float, default=150,
                        help="seconds a training may run past its budget (start-up, last validations)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.download_wheels:
        return download_wheels(Path(args.download_wheels), args.python_version)
    return run_gpu_check(GpuCheckOptions(
        wheels=Path(args.wheels), site_dir=Path(args.site_dir), install_wheels=args.install_wheels,
        minutes=args.minutes, deadline=args.deadline, num_workers=args.num_workers, min_ap=args.min_ap,
        count_syncs=args.count_syncs, seed=args.seed, cpu_threads=args.cpu_threads,
        only=tuple(step for step in args.only.split(",") if step), force_cpu_dry_run=args.force_cpu_dry_run,
        dry_run_precision=args.dry_run_precision, log_dir=Path(args.log_dir) if args.log_dir else None,
        tests_timeout=args.tests_timeout, ops_timeout=args.ops_timeout, bench_timeout=args.bench_timeout,
        bench_args=tuple(args.bench_args.split()), train_overhead_timeout=args.train_overhead_timeout,
        command=" ".join(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    sys.exit(main())
