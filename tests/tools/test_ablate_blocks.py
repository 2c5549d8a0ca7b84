"""tools/ablate_blocks.py: configs fairchem accepts, real 1-step runs, and their summary (GemNet-OC,
EquiformerV2, and a hydra eSEN)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY_EQV2, build_perturbed, build_stock, tiny_config, write_checkpoint
from fairchem.core.common.utils import load_config

import fairchem_prune.models.equiformer_v2_reduced  # noqa: F401  (registers fairchem's equiformer_v2)
from fairchem_prune.ablation import AblationRun, fairchem_run, summarize_ablation, write_ablation_configs
from fairchem_prune.errors import PruneError

REPO = Path(__file__).parents[2]
TOOL = REPO / "tools" / "ablate_blocks.py"
FINETUNE = REPO / "configs" / "finetune" / "demo_s2ef_4b.yml"


def test_ablation_writes_runs_and_summarizes(tmp_path, emt_lmdb):
    config = {"name": "gemnet_oc", **tiny_config(num_blocks=2)}
    write_checkpoint(tmp_path / "pre.pt", build_stock(config), config)
    (tmp_path / "rel.json").write_text(json.dumps({
        "blocks": ["f_1", "f_2", "f_3"],
        "datasets": {"demo": {"combined": [0.5, 0.3, 0.2], "energy": [], "forces": [], "raw": {}, "num_samples": 1}},
    }))
    out = tmp_path / "abl"
    result = subprocess.run(
        [sys.executable, str(TOOL), "--config", str(FINETUNE), "--pretrained", str(tmp_path / "pre.pt"), "--out", str(out),
         "--", "--cpu", "--optim.max_epochs=1", "--optim.batch_size=24", f"--dataset.train.src={emt_lmdb['train']}",
         f"--dataset.val.src={emt_lmdb['val']}"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    configs = sorted((out / "configs").glob("*.yml"))
    assert [c.name for c in configs] == ["remove_f2.yml", "remove_f3.yml"]  # b - 1 of f_1..f_3
    for path in configs:
        merged, _, errors = load_config(str(path))
        assert not errors and merged["model"]["name"] == "gemnet_oc_reduced" and merged["model"]["num_blocks_kept"] is None
    assert yaml.safe_load((out / "configs" / "remove_f3.yml").read_text())["model"]["kept_blocks"] == [0]
    for name in ("remove_f2", "remove_f3"):
        assert (out / "runs" / "checkpoints" / name / "best_checkpoint.pt").exists()

    summary = subprocess.run(
        [sys.executable, str(TOOL), "--summarize", str(out), "--relevance", str(tmp_path / "rel.json")],
        capture_output=True, text=True,
    )
    assert summary.returncode == 0, summary.stderr[-2000:]
    data = json.loads((out / "ablation.json").read_text())
    assert data["primary_metric"] == "forces_mae"
    assert [r["removed"] for r in data["runs"]] == ["f_2", "f_3"]
    assert [r["relevance"] for r in data["runs"]] == [0.3, 0.2]
    maes = [r["metrics"]["forces_mae"] for r in data["runs"]]
    assert all(0 < m < 100 for m in maes) and len(set(maes)) == 2  # two different models were trained
    assert "| f_3 |" in summary.stdout and (out / "ablation.png").stat().st_size > 5000

    # a second launch skips the finished runs
    again = subprocess.run(
        [sys.executable, str(TOOL), "--config", str(FINETUNE), "--pretrained", str(tmp_path / "pre.pt"), "--out", str(out),
         "--force", "--", "--cpu"], capture_output=True, text=True,
    )
    assert again.returncode == 0 and again.stdout.count("skipped") == 2


def test_submit_goes_through_fairchems_submitit_launcher(tmp_path):
    run = AblationRun("remove_f3", "f_3", [0, 2], tmp_path / "remove_f3.yml")
    command = fairchem_run(run, tmp_path).command(["--num-gpus", "2", "--slurm-partition", "gpu"], submit=True)
    assert command[1] == "-c" and "from fairchem.core._cli import main" in command[2] and "--submit" in command
    assert command[command.index("--timestamp-id") + 1] == "remove_f3" and "--slurm-partition" in command


def test_summary_without_runs_is_a_clear_error(tmp_path):
    result = subprocess.run([sys.executable, str(TOOL), "--summarize", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 2 and "has no ablation configs" in result.stderr.strip().splitlines()[-1]


def test_equiformer_v2_ablation_removes_each_transformer_block(tmp_path):
    config = {"name": "equiformer_v2", **TINY_EQV2, "num_layers": 3}
    write_checkpoint(tmp_path / "eqv2.pt", build_perturbed(config), config)
    finetune = REPO / "configs" / "finetune" / "rmd17_aspirin_eqv2_6b.yml"
    out = tmp_path / "abl"
    runs = write_ablation_configs(finetune, tmp_path / "eqv2.pt", out)
    assert [(r.name, r.removed, r.kept_blocks) for r in runs] == [
        ("remove_b0", "b_0", [1, 2]), ("remove_b1", "b_1", [0, 2]), ("remove_b2", "b_2", [0, 1])]
    merged, _, errors = load_config(str(runs[1].config))
    assert not errors and merged["model"]["name"] == "equiformer_v2_reduced" and merged["model"]["num_blocks_kept"] is None
    assert merged["model"]["kept_blocks"] == [0, 2] and merged["model"]["pretrained_checkpoint"] == str(tmp_path / "eqv2.pt")
    # the summary reads b_<k> runs, in block order
    best = out / "runs" / "checkpoints" / "remove_b1" / "best_checkpoint.pt"
    best.parent.mkdir(parents=True)
    torch.save({"config": {"evaluation_metrics": {"primary_metric": "forces_mae"}},
                "val_metrics": {"forces_mae": {"metric": 0.25}}}, best)
    summary = summarize_ablation(out)
    assert [(r["removed"], r["metrics"]) for r in summary["runs"]] == [
        ("b_0", None), ("b_1", {"forces_mae": 0.25}), ("b_2", None)]
    # a GemNet-OC fine-tuning config does not fit an EquiformerV2 checkpoint
    with pytest.raises(PruneError, match="trains 'gemnet_oc_reduced' but the EquiformerV2 checkpoint .* needs "
                                         "equiformer_v2_reduced"):
        write_ablation_configs(FINETUNE, tmp_path / "eqv2.pt", tmp_path / "other")


def test_hydra_esen_ablation_trains_each_reduced_backbone(tmp_path, emt_lmdb):
    """A hydra checkpoint (the tiny eSEN with 3 blocks): each config is a hydra model whose reduced backbone
    keeps the other two blocks of the checkpoint, heads from the fine-tuning config; the runs train with
    fairchem and differ."""
    from fairchem_prune.architectures import by_name

    by_name("esen_backbone").register_stock()
    config = yaml.safe_load((REPO / "configs" / "models" / "esen_tiny.yml").read_text())["model"]
    config["backbone"]["num_layers"] = 3
    write_checkpoint(tmp_path / "esen.pt", build_perturbed(config), config)
    finetune = REPO / "configs" / "finetune" / "demo_ethanol_esen_base.yml"
    out = tmp_path / "abl"
    result = subprocess.run(
        [sys.executable, str(TOOL), "--config", str(finetune), "--pretrained", str(tmp_path / "esen.pt"), "--out",
         str(out), "--", "--cpu", "--optim.max_epochs=1", "--optim.batch_size=8", "--optim.eval_every=3",
         f"--dataset.train.src={emt_lmdb['train']}", f"--dataset.val.src={emt_lmdb['val']}"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    runs = ("remove_b0", "remove_b1", "remove_b2")
    assert sorted(c.stem for c in (out / "configs").glob("*.yml")) == list(runs)
    merged, _, errors = load_config(str(out / "configs" / "remove_b1.yml"))
    backbone = merged["model"]["backbone"]
    assert not errors and merged["model"]["name"] == "hydra" and merged["model"]["heads"] == {"efs": {"module": "esen_mlp_efs_head"}}
    assert (backbone["model"], backbone["kept_blocks"], backbone["num_blocks_kept"]) == ("esen_reduced_backbone", [0, 2], None)
    assert backbone["pretrained_checkpoint"] == str((tmp_path / "esen.pt").resolve())
    summary = summarize_ablation(out)
    maes = [r["metrics"]["forces_mae"] for r in summary["runs"]]
    assert [r["removed"] for r in summary["runs"]] == ["b_0", "b_1", "b_2"] and len(set(maes)) == 3 and all(0 < m < 100 for m in maes)
