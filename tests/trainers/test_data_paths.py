"""A shipped fine-tuning config whose test data the user does not have: one line naming the path and the
fix, exit status 2, before the model is built; the same for the distill trainer's training data."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fairchem_prune.errors import PruneError
from fairchem_prune.trainers.data_paths import check_data_paths

REPO = Path(__file__).parents[2]
FAIRCHEM = Path(sys.executable).parent / "fairchem"


def test_missing_test_split_of_a_shipped_config_is_one_line(tmp_path, emt_lmdb):
    config = REPO / "configs" / "finetune" / "rmd17_aspirin_2b.yml"
    result = subprocess.run(
        [str(FAIRCHEM), "--mode", "train", "--config-yml", str(config), "--cpu", "--run-dir", str(tmp_path),
         f"--dataset.train.src={emt_lmdb['train']}", f"--dataset.val.src={emt_lmdb['val']}"],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "error: dataset.test.src data/rmd17_aspirin/test: no such file or folder; give the data with "
        "--dataset.test.src=PATH, or leave the test split out (delete dataset.test from the config)")
    assert "Traceback" not in result.stderr and "Loading model" not in result.stdout + result.stderr


def test_each_split_and_list_sources_are_checked(tmp_path):
    (tmp_path / "a.lmdb").touch()
    check_data_paths({"dataset": {"src": str(tmp_path / "a.lmdb")}, "val_dataset": {}, "test_dataset": {}})
    with pytest.raises(PruneError, match=r"^dataset.train.src .*b.lmdb: no such file or folder; give the data with "
                                         r"--dataset.train.src=PATH$"):
        check_data_paths({"dataset": {"src": [str(tmp_path / "a.lmdb"), str(tmp_path / "b.lmdb")]}})
    with pytest.raises(PruneError, match="dataset.val.src missing: "):
        check_data_paths({"dataset": {"src": str(tmp_path / "a.lmdb")}, "val_dataset": {"src": "missing"}})
