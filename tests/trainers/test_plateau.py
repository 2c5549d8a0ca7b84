"""``optim.plateau`` of the finetune trainer: the rule on hand-made histories, and a stock ``fairchem``
fine-tune that stops at its plateau, keeps its history and does not train on when resumed."""

import json
from pathlib import Path

import pytest
import torch
from conftest import fairchem, rmd17_lmdbs

from fairchem_prune.errors import PruneError
from fairchem_prune.trainers.plateau import HISTORY, Plateau

REPO = Path(__file__).parents[2]
TEACHER = REPO / "fairchem_prune" / "demo" / "assets" / "teacher_6b.pt"


def test_the_rule_compares_the_best_error_with_the_best_before_the_window():
    rule = Plateau(window=0.2, tolerance=0.05, min_epochs=4)
    falling = [(e, 1.0 / e) for e in range(1, 11)]  # best before epoch 8: 1/8; at 10: 1/10, 20 % better
    assert not rule.reached(falling)
    flat = [(e, 1.0 / min(e, 8)) for e in range(1, 11)]  # no better after epoch 8
    assert rule.reached(flat)
    slow = [(e, 1.0 - 0.004 * e) for e in range(1, 11)]  # 0.968 -> 0.96: 0.8 % better
    assert rule.reached(slow)
    assert not rule.reached(slow[:3])  # before min_epochs
    noisy = flat[:8] + [(9, 2.0), (10, 0.118)]  # a spike does not count, a new best 5.6 % below 0.125 does
    assert not rule.reached(noisy)


def test_settings_are_checked():
    assert Plateau.from_optim({}) is None
    assert Plateau.from_optim({"plateau": {"window": 0.3}}) == Plateau(window=0.3)
    with pytest.raises(PruneError, match=r"unknown key\(s\) \['patience'\]"):
        Plateau.from_optim({"plateau": {"patience": 3}})
    with pytest.raises(PruneError, match="window must lie in"):
        Plateau.from_optim({"plateau": {"window": 1.5}})


def test_a_fine_tune_stops_at_its_plateau_and_a_resume_trains_no_further(tmp_path):
    data = rmd17_lmdbs(tmp_path)
    # 2 steps an epoch, a validation each; at epoch 2 the error would have to fall by 90 % to go on
    args = ["--mode", "train", "--config-yml", REPO / "configs" / "finetune" / "demo_ethanol_4b.yml", "--cpu",
            "--run-dir", tmp_path, "--timestamp-id", "ft", f"--model.pretrained_checkpoint={TEACHER}",
            f"--dataset.train.src={data / 'train'}", f"--dataset.val.src={data / 'val'}", "--optim.max_epochs=6",
            "--optim.cosine_epochs=6", "--optim.eval_every=2", "--optim.num_workers=0",
            "--optim.plateau.window=0.5", "--optim.plateau.tolerance=0.9", "--optim.plateau.min_epochs=2"]
    log = fairchem(*args, cwd=tmp_path)
    folder = tmp_path / "checkpoints" / "ft"
    history = json.loads((folder / HISTORY).read_text())
    assert [e for e, _ in history["validations"]] == [1.0, 2.0] and history["stopped_at"] == 4, history
    assert "plateau: forces_mae improved by less than 90% over the last 50% of 2 epochs; stopping" in log
    assert torch.load(folder / "checkpoint.pt", weights_only=False)["step"] == 4
    assert (folder / "best_checkpoint.pt").is_file()

    resumed = fairchem(*args, "--checkpoint", folder / "checkpoint.pt", cwd=tmp_path)
    assert "stopped on its plateau at step 4; nothing to train" in resumed
    assert torch.load(folder / "checkpoint.pt", weights_only=False)["step"] == 4
    assert json.loads((folder / HISTORY).read_text()) == history
