"""tools/prepare_dataset.py: one sub-command per kind, sizes as counts, no overwrite without --force."""

import subprocess
import sys
from pathlib import Path

import numpy as np

from fairchem_prune.cli import tool_main

TOOL = Path(__file__).parents[2] / "tools" / "prepare_dataset.py"


def write_npz(path, frames):
    rng = np.random.default_rng(0)
    np.savez(path, nuclear_charges=np.array([8, 1, 1]), coords=rng.normal(size=(frames, 3, 3)),
             energies=rng.normal(size=frames), forces=rng.normal(size=(frames, 3, 3)))


def test_sizes_force_and_errors(tmp_path, capsys):
    write_npz(tmp_path / "rmd17_x.npz", 40)
    args = ["rmd17", "--raw", str(tmp_path / "rmd17_x.npz"), "--out", str(tmp_path / "out"),
            "--train-size", "20", "--val-size", "5", "--test-size", "10"]
    assert tool_main("prepare-dataset", args) == 0
    assert capsys.readouterr().out.strip().endswith("train 20, val 5, test 10")
    assert all((tmp_path / "out" / split / "data.lmdb").is_file() for split in ("train", "val", "test"))

    assert tool_main("prepare-dataset", args) == 2
    assert "data.lmdb already exists; pass --force" in capsys.readouterr().err
    assert tool_main("prepare-dataset", [*args, "--force", "--seed", "1"]) == 0

    assert tool_main("prepare-dataset", [*args[:3], "--out", str(tmp_path / "big"), "--train-size", "39"]) == 2
    assert "holds 40 structures, too few for the split (train 39, val 50, test rest)" in capsys.readouterr().err
    assert tool_main("prepare-dataset", ["rmd17", "--raw", str(tmp_path / "none.npz"), "--out", str(tmp_path / "o")]) == 2
    assert "none.npz does not exist" in capsys.readouterr().err


def test_script_help_lists_every_kind():
    result = subprocess.run([sys.executable, str(TOOL), "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for kind in ("rmd17", "md22", "spice", "qm9", "qmof", "ase"):
        assert kind in result.stdout
