"""Progress off a terminal is one line per update, never carriage-return redraws, and a training run's
epochs are read from fairchem's own log lines."""

import io

from fairchem_prune import console
from fairchem_prune.fairchem_runs import EpochProgress


class _Pipe(io.StringIO):
    def isatty(self) -> bool:
        return False


def test_progress_to_a_file_writes_lines_not_redraws(monkeypatch):
    stream = _Pipe()
    monkeypatch.setattr("sys.stderr", stream)
    with console.progress(total=4, desc="work", delay=0, mininterval=0, miniters=1) as bar:
        for _ in range(4):
            bar.update()
    text = stream.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and "\x1b" not in text
    steps = [line.split("|")[0].strip() for line in lines]
    assert steps[:5] == ["work:   0%", "work:  25%", "work:  50%", "work:  75%", "work: 100%"]
    assert set(steps[5:]) <= {"work: 100%"} and len(steps) <= 6  # close() may redraw the last state once
    assert lines[-1].startswith("work: 100%|") and "4/4" in lines[-1]


def test_a_quick_task_prints_nothing(monkeypatch):
    stream = _Pipe()
    monkeypatch.setattr("sys.stderr", stream)
    assert sum(console.progress(range(100), desc="quick")) == 4950
    assert stream.getvalue() == ""


def test_epochs_come_from_fairchems_log_lines(monkeypatch):
    """fairchem logs its config (``max_epochs`` under ``optim``), then ``epoch: E, step: S`` every
    print_every steps (with ``:.2e``) and ``epoch: E`` with each validation."""
    stream = _Pipe()
    monkeypatch.setattr("sys.stderr", stream)
    monkeypatch.setattr(console, "DELAY", 0)
    monkeypatch.setattr(console, "LINE_INTERVAL", 0)
    epochs = EpochProgress("kd_2b")
    log = ["2026-12-02 05:00:00 (INFO): amp: false\n", "optim:\n", "  batch_size: 8\n", "  max_epochs: 4\n",
           "2026-12-02 05:00:09 ocp_trainer.py:225: (INFO): energy_mae: 1.2e-01, lr: 1.00e-03, epoch: 5.00e-01, step: 1.00e+01\n",
           "2026-12-02 05:00:19 ocp_trainer.py:225: (INFO): energy_mae: 1.1e-01, lr: 1.00e-03, epoch: 1.50e+00, step: 3.00e+01\n",
           "2026-12-02 05:00:20 base_trainer.py:905: (INFO): energy_mae: 0.2594, forces_mae: 0.5999, epoch: 1.7500\n"]
    for line in log:
        epochs(line)
    assert epochs.bar.n == 1.75 and epochs.bar.total == 4
    epochs.close()
    lines = stream.getvalue().splitlines()
    assert lines[-1].startswith("kd_2b: epoch 1.75/4 |") and "\r" not in stream.getvalue()


def test_a_trainer_that_sets_its_own_length_resets_the_epochs(monkeypatch):
    """The distill trainer's sample budget makes a 30-epoch config one epoch, and says so after the
    config dump; the bar's total follows."""
    monkeypatch.setattr("sys.stderr", _Pipe())
    monkeypatch.setattr(console, "DELAY", 0)
    epochs = EpochProgress("kd_2b")
    for line in ["optim:\n", "  max_epochs: 30\n",
                 "2026-12-02 05:00:01 distill.py:291: (INFO): distill: sources emt_slabs p=0.500, xtb_molecules p=0.500; "
                 "837 steps per epoch; max_epochs: 1\n",
                 "2026-12-02 05:00:09 ocp_trainer.py:225: (INFO): distill_loss: 1.2e-01, epoch: 5.00e-01, step: 4.18e+02\n"]:
        epochs(line)
    assert epochs.bar.total == 1 and epochs.bar.n == 0.5
    epochs.close()
