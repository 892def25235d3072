"""detkit.experiments.catalogue (tools/experiment.py): budgets in words, and the budget options a study refuses."""
import subprocess
import sys
from pathlib import Path

from detkit.experiments.catalogue import budget_error, scale_text, study_list
from detkit.experiments.studies import STUDIES, Scale

TOOL = Path(__file__).resolve().parents[1] / "tools" / "experiment.py"


def test_scale_in_words():
    assert scale_text(Scale(minutes=10, epochs=8, images=0)) == "10 min per arm, 8 epochs"
    assert scale_text(Scale(minutes=0, epochs=1, images=384)) == "1 epoch, 384 images per arm"


def test_a_study_refuses_budgets_it_has_no_arms_for():
    assert budget_error("imbalance", minutes=2.0, epochs=None, images=None) is None
    assert budget_error("imbalance", epochs=3) == ("--epochs: imbalance has no equal-epoch arms (its budget: "
                                                   f"{scale_text(STUDIES['imbalance'].full)})")


def test_list_names_every_study():
    assert [line.split()[0] for line in study_list().splitlines()] == list(STUDIES)


def test_command_line_rejects_a_budget_option():
    done = subprocess.run([sys.executable, str(TOOL), "imbalance", "--epochs", "3"], capture_output=True, text=True)
    assert done.returncode == 2 and "--epochs: imbalance has no equal-epoch arms" in done.stderr
