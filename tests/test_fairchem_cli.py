"""The stock ``fairchem`` command trains and predicts with gemnet_oc_reduced from the repo's configs."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from fairchem_prune.slicing import slice_checkpoint

REPO = Path(__file__).parents[1]
FAIRCHEM = Path(sys.executable).parent / "fairchem"


def fairchem(*args, cwd):
    result = subprocess.run([str(FAIRCHEM), *map(str, args)], capture_output=True, text=True, cwd=cwd)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def test_finetune_config_trains_two_epochs_and_predicts(stock_checkpoint, emt_lmdb, tmp_path):
    source, _, _ = stock_checkpoint
    sliced = tmp_path / "stock_4b.pt"
    slice_checkpoint(source, sliced, num_blocks_kept=4)
    data = [f"--dataset.train.src={emt_lmdb['train']}", f"--dataset.val.src={emt_lmdb['val']}",
            f"--dataset.test.src={emt_lmdb['test']}"]
    log = fairchem(
        "--mode", "train", "--config-yml", REPO / "configs/finetune/demo_s2ef_4b.yml", "--cpu",
        "--run-dir", tmp_path, "--timestamp-id", "ft", "--print-every", "1",
        f"--model.pretrained_checkpoint={sliced}", "--optim.max_epochs=2", "--optim.batch_size=4",
        "--optim.lr_initial=0.002", *data, cwd=tmp_path,
    )
    assert "Loaded GemNetOCReduced" in log
    losses = [float(x) for x in re.findall(r"ocp_trainer\.py:\d+: \(INFO\): .*?loss: ([0-9.e+-]+)", log)]
    assert len(losses) == 12  # 24 structures / batch 4 x 2 epochs, printed every step
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses

    checkpoint = tmp_path / "checkpoints" / "ft" / "checkpoint.pt"
    fairchem(
        "--mode", "predict", "--config-yml", REPO / "configs/finetune/demo_s2ef_4b.yml", "--cpu",
        "--run-dir", tmp_path, "--timestamp-id", "pred", "--checkpoint", checkpoint,
        f"--model.pretrained_checkpoint={sliced}", *data, cwd=tmp_path,
    )
    predictions = np.load(tmp_path / "results" / "pred" / "ocp_predictions.npz", allow_pickle=True)
    assert len(predictions["energy"]) == 8 and np.isfinite(predictions["energy"].astype(float)).all()
