"""Run a study: every arm in a process of its own (``python -m detkit.experiments.arm``), one after the other, then
the table, plot and raw numbers under ``<out>/<study>/`` (``<out>/<study>/quick/`` for the quick version),
rewritten after every arm so that an interrupted study keeps what it measured.

Runs never replace earlier ones: arm ``a`` of study ``s`` trains into ``<runs>/s/a/version_N/`` (``<runs>/s/quick/a/``
for the quick version), N the next free number, with its log ``version_N.log`` and command ``version_N.json``
beside it. ``reuse`` takes the newest finished run of the same command instead of training again. An arm that
fails (an error, a crash, a kill, its timeout) is a failed row with its error; the study goes on.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

from detkit.atomic_io import write_json_atomically
from detkit.experiments.config_values import config_path
from detkit.experiments.provenance import available_cores, provenance
from detkit.experiments.report import write_results
from detkit.experiments.studies import Arm, Scale, Study

RECORD = "experiment_arm.json"  # in the arm's run folder, written last by the arm's process
QUIET = ("--trainer.enable_progress_bar", "false")  # a progress bar in a log file is noise
ERROR_LINE = re.compile(r"^(error:|\w*(Error|Exception|Interrupt)\b)")


@dataclass(frozen=True)
class Settings:
    """How to run a study.

    Args:
        quick: the study's quick scale instead of the full one.
        minutes, epochs, images: replace the scale's value (``None``: the study's default).
        extra_args: appended to every arm's command line (e.g. other data paths).
        runs_dir, out_dir: where the arms' runs and the study's results go.
        reuse: take an arm's newest finished run of the same command instead of running it again.
        threads: OpenMP threads of each arm (default: the cores this process may use).
        arm_timeout_minutes: an arm still running after this long is killed and reported failed (None: no limit).
        command: the command line that ran the study, for the results.
    """

    quick: bool = False
    minutes: float | None = None
    epochs: int | None = None
    images: int | None = None
    extra_args: tuple[str, ...] = ()
    runs_dir: str = "runs/experiments"
    out_dir: str = "docs/experiments"
    reuse: bool = False
    threads: int | None = None
    arm_timeout_minutes: float | None = None
    command: str = ""

    def scale(self, study: Study) -> Scale:
        """The study's quick or full scale with the values given here put in."""
        default = study.quick if self.quick else study.full
        return Scale(minutes=self.minutes if self.minutes is not None else default.minutes,
                     epochs=self.epochs if self.epochs is not None else default.epochs,
                     images=self.images if self.images is not None else default.images, quick=self.quick)

    def folder(self, root: str, study: Study) -> str:
        return os.path.join(root, study.name, "quick") if self.quick else os.path.join(root, study.name)


def run_study(study: Study, settings: Settings) -> dict:
    """Run every arm of ``study`` at ``settings``' scale and write its results; returns the results document
    (what ``results.json`` holds: the study, its scale, budget and notes, provenance, and one outcome per arm)."""
    threads = settings.threads or available_cores()
    scale = settings.scale(study)
    plan = study.build(scale, tuple(settings.extra_args))
    document = {"study": study.name, "title": study.title, "claim": study.claim, "quick": settings.quick,
                "scale": asdict(scale), "budget": plan.budget, "notes": plan.notes,
                "provenance": provenance(settings.command, threads), "arms": []}
    out, runs = settings.folder(settings.out_dir, study), settings.folder(settings.runs_dir, study)
    outcomes: dict[str, dict] = {}
    for index, arm in enumerate(plan.arms, start=1):
        print(f"[{study.name} {index}/{len(plan.arms)}] {arm.label}", flush=True)
        outcome = run_arm(arm, outcomes, runs, settings, threads)
        outcomes[arm.name] = outcome
        document["arms"].append(outcome)
        print(f"  {summary_line(outcome)}", flush=True)
        write_results(study, document, out)
    print(f"results of {study.name} in {out} (results.md, plot.png, results.json)")
    return document


def summary_line(outcome: dict) -> str:
    if outcome["status"] == "failed":
        return f"failed: {outcome['error']} (log: {outcome['log']})"
    stats = outcome["record"]["stats"]
    return (f"{outcome['status']}: AP {stats['AP']:.3f}, AP50 {stats['AP50']:.3f} in {outcome['seconds'] / 60:.1f} min "
            f"({outcome['run_dir']})")


def arm_command(arm: Arm, outcomes: dict[str, dict], settings: Settings) -> tuple[str, list[str]]:
    """(mode, arguments) of the arm's process, without where it writes; ValueError if its config is missing or its
    training arm failed."""
    extra = list(settings.extra_args)
    if arm.evaluates is None:
        try:
            config = config_path(arm.config)
        except FileNotFoundError as error:  # reported as this arm's failure, as every bad arm is
            raise ValueError(str(error)) from None
        return "train", ["--config", config, *arm.overrides, *extra, *QUIET]
    trained = outcomes.get(arm.evaluates)
    if trained is None or trained["status"] == "failed" or not trained["record"].get("best_checkpoint"):
        raise ValueError(f"its training arm {arm.evaluates} failed, did not run or saved no checkpoint")
    return "evaluate", ["--checkpoint", trained["record"]["best_checkpoint"], *arm.overrides, *extra]


def run_arm(arm: Arm, outcomes: dict[str, dict], runs_dir: str, settings: Settings, threads: int) -> dict:
    """Run (or with ``settings.reuse`` find) one arm; its outcome: the arm's fields, ``status`` ("done", "reused"
    or "failed"), ``record`` (the numbers) or ``error``, ``run_dir``, ``log`` and ``seconds``."""
    outcome = {"name": arm.name, "label": arm.label, "group": arm.group, "value": arm.value, "config": arm.config,
               "overrides": list(arm.overrides), "evaluates": arm.evaluates}
    try:
        mode, args = arm_command(arm, outcomes, settings)
    except ValueError as error:
        return {**outcome, "status": "failed", "error": str(error), "log": None, "run_dir": None, "seconds": 0.0}
    arm_dir = os.path.join(runs_dir, arm.name)
    finished = find_finished_run(arm_dir, mode, args) if settings.reuse else None
    if finished is not None:
        run_dir, record = finished
        return {**outcome, "status": "reused", "record": record, "run_dir": run_dir, "log": f"{run_dir}.log",
                "seconds": record.get("wall_seconds", 0.0)}
    run_dir = os.path.join(arm_dir, next_version(arm_dir))
    write_json_atomically({"mode": mode, "args": args}, f"{run_dir}.json")
    command = [sys.executable, "-m", "detkit.experiments.arm", "--record", os.path.join(run_dir, RECORD), mode,
               *args, *output_location(mode, run_dir)]
    start = time.perf_counter()
    error = launch(command, f"{run_dir}.log", threads, settings.arm_timeout_minutes)
    outcome.update(run_dir=run_dir, log=f"{run_dir}.log", seconds=time.perf_counter() - start)
    record = read_record(run_dir)
    if error is None and record is None:
        error = f"the arm ended without writing {RECORD}"
    if error is not None:
        return {**outcome, "status": "failed", "error": error}
    return {**outcome, "status": "done", "record": record}


def output_location(mode: str, run_dir: str) -> list[str]:
    """The arguments that put an arm's outputs into ``run_dir``: the logger's folder (training; Lightning creates
    it and refuses a non-empty one), the results JSON (evaluation)."""
    if mode == "evaluate":
        os.makedirs(run_dir, exist_ok=True)
        return ["--results", os.path.join(run_dir, "results_val.json")]
    save_dir, name = os.path.split(os.path.dirname(run_dir))
    return ["--trainer.logger.init_args.save_dir", save_dir or ".", "--trainer.logger.init_args.name", name,
            "--trainer.logger.init_args.version", os.path.basename(run_dir)]


def next_version(arm_dir: str) -> str:
    """``version_N`` with N one above every version a run folder, log or command file in ``arm_dir`` uses."""
    used = [int(match.group(1)) for entry in (os.listdir(arm_dir) if os.path.isdir(arm_dir) else [])
            if (match := re.fullmatch(r"version_(\d+)(\.log|\.json)?", entry))]
    return f"version_{max(used, default=-1) + 1}"


def find_finished_run(arm_dir: str, mode: str, args: list[str]) -> tuple[str, dict] | None:
    """(run folder, record) of the newest finished run in ``arm_dir`` made by the same command, or None."""
    if not os.path.isdir(arm_dir):
        return None
    specs = sorted((entry for entry in os.listdir(arm_dir) if re.fullmatch(r"version_\d+\.json", entry)),
                   key=lambda entry: int(entry[len("version_"):-len(".json")]), reverse=True)
    for entry in specs:
        run_dir = os.path.join(arm_dir, entry[:-len(".json")])
        with open(os.path.join(arm_dir, entry)) as file:
            spec = json.load(file)
        record = read_record(run_dir)
        if spec == {"mode": mode, "args": args} and record is not None:
            return run_dir, record
    return None


def read_record(run_dir: str) -> dict | None:
    path = os.path.join(run_dir, RECORD)
    if not os.path.isfile(path):
        return None
    with open(path) as file:
        return json.load(file)


def launch(command: list[str], log_path: str, threads: int, timeout_minutes: float | None) -> str | None:
    """Run ``command`` with ``threads`` OpenMP threads, its output into ``log_path``; None if it exited with 0,
    else the error (from the end of its log)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    with open(log_path, "w") as log:
        log.write(f"$ OMP_NUM_THREADS={threads} {shlex.join(command)}\n")
        log.flush()
        try:
            code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                  timeout=60 * timeout_minutes if timeout_minutes else None).returncode
        except subprocess.TimeoutExpired:
            return f"killed after the arm timeout of {timeout_minutes:g} min"
    if code == 0:
        return None
    return f"exit code {code}: {last_error(log_path)}"


def last_error(log_path: str, limit: int = 400) -> str:
    """The last error message in a log: from its last line that starts like one (``error:``, ``ValueError: ``...) to
    the end, else its last line; at most ``limit`` characters."""
    with open(log_path, errors="replace") as file:
        lines = [line.strip() for line in file if line.strip()]
    start = next((i for i in range(len(lines) - 1, -1, -1) if ERROR_LINE.match(lines[i])), len(lines) - 1)
    message = " ".join(lines[start:]) if lines else "no output"
    return message if len(message) <= limit else message[:limit - 3] + "..."
