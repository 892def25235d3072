"""Measure a textbook claim about detectors on the built-in shapes dataset: every arm an ordinary override of the
shipped shapes configs, trained in its own process with fixed seeds and the same budget as the other arms; a
Markdown table, a PNG plot and the raw numbers go to <out>/<study>/ (<out>/<study>/quick/ with --quick).

    python tools/experiment.py --list
    python tools/experiment.py STUDY [--quick] [--minutes M] [--epochs E] [--images N] [--reuse]
        [--out docs/experiments] [--runs runs/experiments] [--threads T] [--arm-timeout MIN]
        [-- overrides given to every arm]

Arms train into <runs>/<study>/<arm>/version_N/ and never replace an earlier run; --reuse takes the newest finished
run of the same command instead of training it again. Run it from the repository root, with the CPU to itself.
"""
import argparse
import shlex
import sys

from detkit.experiments.catalogue import budget_error, study_list
from detkit.experiments.runner import Settings, run_study
from detkit.experiments.studies import STUDIES


def parse_options(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The tool's options, and the overrides after ``--`` (given to every arm)."""
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("study", nargs="?", choices=sorted(STUDIES))
    parser.add_argument("--list", action="store_true", help="list the studies and their default budgets")
    parser.add_argument("--quick", action="store_true", help="the short version: a few minutes in all")
    parser.add_argument("--minutes", type=float, help="training minutes of each equal-time arm")
    parser.add_argument("--epochs", type=int, help="epochs of each equal-epoch arm")
    parser.add_argument("--images", type=int, help="training images of each equal-image arm")
    parser.add_argument("--reuse", action="store_true", help="reuse finished runs of the same command")
    parser.add_argument("--out", default="docs/experiments", help="results folder (default: docs/experiments)")
    parser.add_argument("--runs", default="runs/experiments", help="runs folder (default: runs/experiments)")
    parser.add_argument("--threads", type=int, help="OpenMP threads per arm (default: the available cores)")
    parser.add_argument("--arm-timeout", type=float, help="kill an arm after this many minutes (default: no limit)")
    options = parser.parse_args(argv)
    if options.study is None and not options.list:
        parser.error("name a study (or --list)")
    for name in ("minutes", "epochs", "images", "threads", "arm_timeout"):
        value = getattr(options, name)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0, got {value:g}")
    error = options.study and budget_error(options.study, minutes=options.minutes, epochs=options.epochs,
                                           images=options.images)
    if error:
        parser.error(error)
    return options, extra


def main() -> None:
    options, extra = parse_options(sys.argv[1:])
    if options.list:
        print(study_list())
        return
    settings = Settings(quick=options.quick, minutes=options.minutes, epochs=options.epochs, images=options.images,
                        extra_args=tuple(extra), runs_dir=options.runs, out_dir=options.out, reuse=options.reuse,
                        threads=options.threads, arm_timeout_minutes=options.arm_timeout,
                        command=shlex.join(["python", "tools/experiment.py", *sys.argv[1:]]))
    try:
        run_study(STUDIES[options.study], settings)
    except KeyboardInterrupt:
        raise SystemExit("interrupted: the results of the arms that finished are written; the interrupted arm's "
                         "run stays in its folder and is not reused") from None


if __name__ == "__main__":
    main()
