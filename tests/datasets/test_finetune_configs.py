"""Each task's fine-tuning config trains with the stock `fairchem --mode train` on data converted from
its raw format (tiny 6-block GemNet-OC, or 8-block EquiformerV2, checkpoint), and `--mode predict`
output is scored by fairchem's Evaluator."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_EQV2, build_perturbed, build_stock, fairchem, tiny_config, write_checkpoint
from dataset_helpers import read_split
from fairchem.core.modules.evaluator import Evaluator
from test_md22 import write_md22
from test_qm9 import write_qm9
from test_qmof import write_qmof
from test_rmd17 import write_rmd17
from test_spice import AMINO_ACIDS, write_spice

from fairchem_prune.datasets import prepare_dataset

REPO = Path(__file__).parents[2]
SIZES = {"train_size": 16, "val_size": 4, "test_size": 4}


def raw_rmd17(tmp):
    write_rmd17(tmp / "rmd17_aspirin.npz", 24)
    return "rmd17", tmp / "rmd17_aspirin.npz", {}


def raw_md22(tmp):
    write_md22(tmp / "md22_Ac-Ala3-NHMe.npz", 24, "Ac-Ala3-NHMe")
    return "md22", tmp / "md22_Ac-Ala3-NHMe.npz", {}


def raw_spice(tmp):
    write_spice(tmp / "SPICE.hdf5", [("ala", AMINO_ACIDS, [7, 6, 6, 8, 1], 14), ("gly", AMINO_ACIDS, [7, 6, 8, 1], 10)])
    return "spice", tmp / "SPICE.hdf5", {"subset": "solvated_amino_acids"}


def raw_qm9(tmp):
    write_qm9(tmp / "qm9", 24)
    return "qm9", tmp / "qm9", {"target": "U0"}


def raw_qmof(tmp):
    write_qmof(tmp / "qmof", 24)
    return "qmof", tmp / "qmof", {}


#: task -> (blocks kept, raw-file writer)
TASKS = {"rmd17_aspirin": (4, raw_rmd17), "md22_acala3": (5, raw_md22), "spice_aa": (2, raw_spice),
         "qm9_u0": (3, raw_qm9), "qmof_bandgap": (6, raw_qmof)}


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory):
    """Random pre-trained stand-ins: a 6-block GemNet-OC (JMP-L) and an 8-block EquiformerV2 (31M)."""
    import fairchem_prune.models.equiformer_v2_reduced  # noqa: F401  (registers fairchem's equiformer_v2)

    root = tmp_path_factory.mktemp("ckpt")
    configs = {"gemnet": {"name": "gemnet_oc", **tiny_config(num_blocks=6)},
               "eqv2": {"name": "equiformer_v2", **TINY_EQV2, "num_layers": 8}}
    for name, config in configs.items():
        write_checkpoint(root / f"{name}.pt", (build_stock if name == "gemnet" else build_perturbed)(config), config)
    return {name: root / f"{name}.pt" for name in configs}


#: (task, config, architecture, the model class fairchem logs); the EquiformerV2 configs share their task
#: sections with the GemNet-OC ones (tests/test_configs.py), so two of them (molecules with forces, periodic
#: energy-only) are trained here
CASES = [(task, f"{task}_{blocks}b.yml", "gemnet", "GemNetOCReduced") for task, (blocks, _) in TASKS.items()] + \
        [(task, f"{task}_eqv2_6b.yml", "eqv2", "EquiformerV2Reduced") for task in ("rmd17_aspirin", "qmof_bandgap")]


@pytest.mark.parametrize("task, config_name, architecture, model_class", CASES)
def test_task_config_trains_and_predicts(task, config_name, architecture, model_class, tiny_checkpoints, tmp_path):
    _, write_raw = TASKS[task]
    kind, raw, options = write_raw(tmp_path)
    data = tmp_path / "data" / task
    assert prepare_dataset(kind, raw, data, **SIZES, **options) == {"train": 16, "val": 4, "test": 4}
    config = REPO / "configs" / "finetune" / config_name
    common = [f"--model.pretrained_checkpoint={tiny_checkpoints[architecture]}", "--optim.batch_size=8", "--optim.eval_batch_size=8",
              "--optim.num_workers=0", *(f"--dataset.{s}.src={data / s}" for s in ("train", "val", "test"))]
    log = fairchem("--mode", "train", "--config-yml", config, "--cpu", "--run-dir", tmp_path, "--timestamp-id", "ft",
                   "--print-every", "1", "--optim.max_epochs=1", *common, cwd=tmp_path)
    assert f"Loaded {model_class}" in log
    # lr of the first parameter group (smallest multiplier, 0.3) over 2 steps of the 10-step warm-up from 0.1
    lrs = [float(x) for x in re.findall(r"ocp_trainer\.py:\d+: \(INFO\): .*?lr: ([0-9.e+-]+)", log)]
    assert lrs == pytest.approx([8e-5 * 0.3 * 0.1, 8e-5 * 0.3 * 0.19], rel=1e-2)

    fairchem("--mode", "predict", "--config-yml", config, "--cpu", "--run-dir", tmp_path, "--timestamp-id", "pred",
             "--checkpoint", tmp_path / "checkpoints" / "ft" / "checkpoint.pt", *common, cwd=tmp_path)
    predictions = np.load(tmp_path / "results" / "pred" / "ocp_predictions.npz")
    targets = {f"{int(d.sid)}_{int(d.fid)}": d for d in read_split(data / "test")}
    assert sorted(predictions["ids"]) == sorted(targets)
    test = [targets[i] for i in predictions["ids"]]
    prediction = {"energy": torch.tensor(predictions["energy"]).reshape(-1), "natoms": torch.tensor([d.natoms for d in test])}
    target = {"energy": torch.tensor([d.energy for d in test], dtype=torch.float32), "natoms": prediction["natoms"]}
    metrics = {"energy": ["mae"]}
    if "forces" in predictions:
        prediction["forces"] = torch.tensor(predictions["forces"])
        target["forces"] = torch.cat([d.forces for d in test])
        metrics["forces"] = ["mae"]
    scores = Evaluator(eval_metrics=metrics).eval(prediction, target)
    assert scores["energy_mae"]["metric"] == pytest.approx((prediction["energy"] - target["energy"]).abs().mean().item(), rel=1e-5)
    assert np.isfinite(scores["energy_mae"]["metric"])
    assert ("forces_mae" in scores) is (task not in ("qm9_u0", "qmof_bandgap"))
