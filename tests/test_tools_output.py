"""What the tools print: every script's ``--help`` works and names its options; a training prints none of Lightning's
advertising or warnings about calls detkit makes for the user, and the rest of Lightning's messages still."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_engine_resume import run, train_command

ROOT = Path(__file__).resolve().parents[1]
TOOLS = sorted((ROOT / "tools").glob("*.py"))

# options each tool's --help must name: its main ones, and for train and demo the ones detkit adds to the config keys
EXPECTED_OPTIONS = {
    "bench_eval": ["--images", "--detections", "--quick"],
    "bench_models": ["--threads", "--steps", "--only", "--quick"],
    "bench_ops": ["--threads", "--budget"],
    "demo": ["--config", "--resume", "--budget.minutes", "--trainer.max_epochs"],
    "eval": ["--checkpoint", "--config", "--results"],
    "experiment": ["--list", "--quick", "--minutes"],
    "export": ["--checkpoint", "--out", "--check-images", "--bench"],
    "gpu_check": ["--minutes", "--only", "--force-cpu-dry-run"],
    "imbalance_stats": ["--config", "--num-images"],
    "import_torchvision": ["--arch", "--weights", "--out"],
    "make_shapes": ["--out", "--num-train", "--num-val"],
    "predict": ["--checkpoint", "--images", "--out"],
    "reference": ["--out"],
    "show_anchors": ["--config", "--image", "--split"],
    "show_data": ["--config", "--split", "--num"],
    "train": ["--config", "--resume", "--budget.minutes", "--last_checkpoint.every_epoch", "--trainer.max_epochs"],
    "voc2coco": ["--root", "--split", "--out"],
}
# what the first screen of the long help of train and demo (every config key) must show
FIRST_SCREEN = {"demo": ["--resume last|CKPT", "--budget.minutes"], "train": ["--resume last|CKPT", "--budget.minutes"]}
# lines of Lightning a training must not print
NOISE = [
    "💡 Tip:",  # Lightning's advertising for litmodels / litlogger
    "`max_epochs` was not set",  # a time budget sizes the run
    "`isinstance(treespec, LeafSpec)` is deprecated",  # inside Lightning's own pytree helper
    "`weights_only` was not set",  # every checkpoint detkit wrote itself
]


@pytest.mark.parametrize("tool", TOOLS, ids=lambda path: path.stem)
def test_help_works_and_names_the_options(tool):
    assert tool.stem in EXPECTED_OPTIONS, f"add {tool.name}'s main options to EXPECTED_OPTIONS"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    shown = subprocess.run([sys.executable, str(tool), "--help"], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=120)
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert shown.stdout.startswith("usage:")
    missing = [option for option in EXPECTED_OPTIONS[tool.stem] if option not in shown.stdout]
    assert not missing, shown.stdout[:3000]
    first_screen = "\n".join(shown.stdout.splitlines()[:25])
    assert [option for option in FIRST_SCREEN.get(tool.stem, []) if option not in first_screen] == [], first_screen


def test_a_budgeted_training_prints_no_lightning_noise(shapes_root, tmp_path):
    # max_epochs null and max_steps -1: only the 3-second budget bounds the run, as in the shipped configs
    trained = run(train_command(shapes_root, tmp_path, "--budget.minutes", "0.05", "--trainer.max_steps", "-1"))
    assert trained.returncode == 0, trained.stderr[-3000:]
    output = trained.stdout + trained.stderr
    assert [line for line in output.splitlines() if any(noise in line for noise in NOISE)] == []
    assert "GPU available: False" in output and "training: " in output  # the rest is still printed
