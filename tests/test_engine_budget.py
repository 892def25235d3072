"""Time budgets: the schedule is sized from the measured step time so that warm-up, decay and the last
validation end inside the budget on a slow machine as on a fast one; a run that stops between validations
(max_time, Ctrl-C) validates and keeps its final weights."""
from pathlib import Path

import lightning as L
import pytest
import torch
from shapes_data import data_args

from detkit.engine.budget import plan_total_steps
from detkit.engine.cli import train

CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "retinanet_shapes.yaml")


class InterruptAt(L.Callback):
    """Ctrl-C after ``step`` optimizer steps."""

    def __init__(self, step: int = 1):
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step >= self.step:
            raise KeyboardInterrupt


def test_plan_fits_the_last_validation_by_hand():
    # 100 s budget, 10 s spent, 1 s a step, 5 s a validation: 85 s of steps after the last validation
    plan = dict(budget_s=100, elapsed_s=10, steps_done=10, step_s=1.0, val_s=5.0, steps_per_epoch=20, max_steps=1000)
    assert plan_total_steps(**plan, val_every_n_epochs=None) == 95
    # validations every 2 epochs (40 steps): at 40 and 80, plus the last at 85 -> 90 - 15 = 75 s of steps
    assert plan_total_steps(**plan, val_every_n_epochs=2) == 85
    assert plan_total_steps(**(plan | {"step_s": 2.0}), val_every_n_epochs=None) == 10 + 42  # half the steps
    assert plan_total_steps(**(plan | {"budget_s": 1e6}), val_every_n_epochs=2) == 1000  # max_epochs still caps
    assert plan_total_steps(**(plan | {"elapsed_s": 99}), val_every_n_epochs=None) == 10  # nothing left: stop now


def run_args(root: Path, tmp_path: Path, *extra: str) -> list[str]:
    data = data_args(root)
    return ["--config", CONFIG, *data, "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
            "--trainer.enable_progress_bar", "false", "--trainer.max_time", "null", "--data.batch_size", "4",
            "--model.warmup_steps", "3", "--model.detector.init_args.fpn.channels", "16",
            "--data.min_size", "64", "--data.max_size", "64", *extra]


@pytest.mark.usefixtures("one_thread")
def test_a_slower_machine_trains_fewer_steps_with_a_complete_schedule(shapes_root, tmp_path):
    budget_s, runs = 6.0, {}
    for delay in (0.0, 0.06):
        run = train(run_args(shapes_root, tmp_path / str(delay), "--budget.minutes", str(budget_s / 60),
                             "--trainer.max_epochs", "null", "--budget.validations", "3",
                             "--trainer.callbacks+=slow_machine.SlowMachine", f"--trainer.callbacks.seconds={delay}"))
        cli = run.cli
        module, steps = cli.model, cli.trainer.global_step
        assert steps == module.lr_schedule.total_steps  # the schedule ran to its planned end ...
        assert module.lr_schedule(steps) == pytest.approx(0.0, abs=1e-12)  # ... where the cosine reaches 0
        assert module.validated_step == steps  # the final weights were validated
        assert run.fit_seconds <= budget_s + 1.5  # and all of it inside the budget (1.5 s for what is not planned)
        assert run.fit_seconds >= 0.7 * budget_s  # without leaving most of it unused
        epochs = steps / cli.trainer.num_training_batches
        assert cli.trainer.check_val_every_n_epoch == pytest.approx(epochs / 3, abs=1.5)  # 3 validations, spread
        runs[delay] = steps
    assert runs[0.06] < 0.8 * runs[0.0]


@pytest.mark.usefixtures("one_thread")
def test_a_run_cut_by_max_time_validates_and_keeps_its_final_weights(shapes_root, tmp_path):
    args = run_args(shapes_root, tmp_path, "--trainer.max_epochs", "50", "--trainer.check_val_every_n_epoch", "50")
    args[args.index("--trainer.max_time") + 1] = "00:00:00:03"
    run = train(args)
    cli, result = run.cli, run.evaluation
    trainer, checkpoints = cli.trainer, Path(cli.trainer.checkpoint_callback.dirpath)
    assert 0 < trainer.global_step < 50 * 8  # stopped by max_time, before the epoch-50 validation
    assert cli.model.validated_step == trainer.global_step
    assert torch.load(checkpoints / "last.ckpt", weights_only=False)["global_step"] == trainer.global_step
    assert torch.load(checkpoints / "best.ckpt", weights_only=False)["global_step"] == trainer.global_step
    assert result.stats["AP"] == pytest.approx(float(trainer.checkpoint_callback.best_model_score), abs=1e-6)


@pytest.mark.usefixtures("one_thread")
def test_ctrl_c_validates_and_saves_the_final_weights_then_exits(shapes_root, tmp_path):
    args = run_args(shapes_root, tmp_path, "--trainer.max_epochs", "5", "--trainer.check_val_every_n_epoch", "5",
                    "--trainer.callbacks+=test_engine_budget.InterruptAt", "--trainer.callbacks.step=3")
    with pytest.raises(SystemExit) as exit_info:
        train(args)
    assert exit_info.value.code == 1
    last = next((tmp_path / "runs").rglob("last.ckpt"))
    assert torch.load(last, weights_only=False)["global_step"] == 3
    assert (last.parent / "best.ckpt").is_file()
