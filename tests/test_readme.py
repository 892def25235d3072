"""Every command the README shows runs: its shell lines and Python blocks are extracted and executed in order, in
a scratch folder laid out as the README assumes (photos/train, photos/val, a clip, two photos), with the
shortening options of ``SHORTEN`` appended to trainings (a few steps instead of minutes) and the one download
(torchvision's COCO weights) replaced by the same architecture with random weights. ``make`` lines are checked
by a dry run (CI itself runs ``make test``). A new kind of command in the README fails the first test until it
is taught here, so the README cannot show an untested command.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
TOOLS = ("train", "eval", "predict", "export", "import_torchvision", "show_data")
# a few steps at a small size instead of a 10-minute budget
SHORTEN = ["--budget.minutes", "null", "--trainer.max_epochs", "1", "--trainer.max_steps", "2", "--data.batch_size",
           "2", "--data.val_batch_size", "4", "--data.min_size", "96", "--data.max_size", "128",
           "--model.warmup_steps", "1", "--trainer.enable_progress_bar", "false"]
# README fragments that cannot run here as written, and what runs instead (each must be in the README)
REPLACED = {
    "weights='DEFAULT'": "weights=None, weights_backbone=None",  # the download: the same model, random weights
    '"--budget.minutes", "2"': ", ".join(f'"{a}"' for a in SHORTEN) + ', "--data.builtin", "null", '
                               '"--data.train_images", "photos/train", "--data.train_annotations", '
                               '"photos/train.json", "--data.val_images", "photos/val", "--data.val_annotations", '
                               '"photos/val.json"',
}


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block, in order."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.M | re.S)


def shell_commands(body: str) -> list[str]:
    """The commands of a bash block: continuation lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", body)
    commands = [re.split(r"(^|\s)#\s", line)[0].strip() for line in joined.splitlines()]
    return [command for command in commands if command]


def readme_steps() -> list[tuple[str, str]]:
    """("shell" | "python", text) of every runnable command and block, in README order."""
    steps = []
    for language, body in fenced_blocks(README):
        if language == "bash":
            steps += [("shell", command) for command in shell_commands(body)]
        elif language == "python":
            steps.append(("python", body))
    return steps


def kind_of(command: str) -> str | None:
    """Which known kind a shell command is: "make", "download" or "tool:<name>"; None if unknown."""
    if re.fullmatch(r"make \w+", command.split("  ")[0]):
        return "make"
    if command.startswith('python -c "') and "torchvision" in command:
        return "download"
    match = re.match(r"\.venv/bin/python tools/(\w+)\.py ", command)
    return f"tool:{match.group(1)}" if match and match.group(1) in TOOLS else None


def test_every_readme_command_is_of_a_kind_this_test_runs():
    steps = readme_steps()
    assert len([s for s in steps if s[0] == "shell"]) >= 8 and len([s for s in steps if s[0] == "python"]) >= 3
    unknown = [text for kind, text in steps if kind == "shell" and kind_of(text) is None]
    assert not unknown, f"teach tests/test_readme.py to run these README commands: {unknown}"
    for fragment in REPLACED:
        assert fragment in README, f"the README no longer shows {fragment!r}: update REPLACED"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A folder as the README assumes one: photos/{train,val}(.json), photo.jpg, other.png, clip.mp4."""
    from detkit.data.shapes import generate_shapes

    folder = tmp_path_factory.mktemp("readme")
    generate_shapes(str(folder / "shapes"), num_train=8, num_val=4, seed=0, workers=1)
    photos = folder / "photos"
    photos.mkdir()
    for split in ("train", "val"):
        (photos / split).symlink_to(folder / "shapes" / "images")
        (photos / f"{split}.json").write_text((folder / "shapes" / f"instances_{split}.json").read_text())
    first = sorted((folder / "shapes" / "images").iterdir())[0]
    Image.open(first).convert("RGB").save(folder / "photo.jpg")
    Image.open(first).convert("RGB").resize((90, 200)).save(folder / "other.png")
    writer = cv2.VideoWriter(str(folder / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 5, (128, 128))
    for index in range(4):
        writer.write(np.roll(np.asarray(Image.open(first).convert("RGB"))[..., ::-1], 8 * index, axis=1).copy())
    writer.release()
    return folder


def runnable(command: str) -> list[str]:
    """The README shell command as this test runs it: this interpreter, the repository's tools and configs,
    trainings shortened."""
    for fragment, replacement in REPLACED.items():
        command = command.replace(fragment, replacement)
    arguments = shlex.split(command)
    if arguments[0] in (".venv/bin/python", "python"):
        arguments[0] = sys.executable
    arguments = [str(ROOT / a) if a.startswith(("tools/", "configs/")) else a for a in arguments]
    if kind_of(command) == "tool:train":
        arguments += SHORTEN
    return arguments


def run(arguments: list[str], folder: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(arguments, cwd=folder, env=env, capture_output=True, text=True, timeout=900)


def test_every_readme_command_runs_in_order(workspace):
    for kind, text in readme_steps():
        if kind == "shell" and kind_of(text) == "make":
            done = run(["make", "-n", *text.split("  ")[0].split()[1:]], ROOT)
        elif kind == "shell":
            done = run(runnable(text), workspace)
        else:
            for fragment, replacement in REPLACED.items():
                text = text.replace(fragment, replacement)
            text = text.replace('"configs/', f'"{ROOT}/configs/')
            done = run([sys.executable, "-c", text], workspace)
        assert done.returncode == 0, f"README {kind} step failed:\n{text}\n--- stderr ---\n{done.stderr[-4000:]}"
    assert (workspace / "model.onnx").is_file() and (workspace / "mobilenet320.ckpt").is_file()
    assert (workspace / "predictions" / "clip.jsonl").is_file()
