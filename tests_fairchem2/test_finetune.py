"""Fine-tuning a sliced UMA with fairchem 2's own flow (``finetune-config``, then ``fairchem -c``) and the
layer-by-layer ablation on it (``ablate``), on the tiny fixture and EMT-labelled bulk metals.

The data are made as fairchem's ``create_uma_finetune_dataset.py`` makes them, by the functions it calls
(``launch_processing``, ``compute_normalizer_and_linear_reference``, ``create_yaml``); ``create_yaml``
reads its templates from ``configs/fairchem2/uma_finetune`` (TEMPLATE_DIR patched: there is no fairchem
checkout here)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import TEMPLATE, UMA_TINY, cli, emt_structures, fairchem, predictions


def test_finetune_config_runs_with_fairchem(ft, sliced, tmp_path):
    """The written config runs unchanged under ``fairchem -c`` on CPU: the loss goes down, the fine-tuned
    inference checkpoint loads with 4 blocks and predicts differently from the sliced start."""
    output = ft / "uma_4b_finetune.yaml"
    result = cli("finetune-config", "--template", ft / TEMPLATE, "--checkpoint", sliced, "--output", output,
                 "--device", "cpu", "--steps", 12, "--batch-size", 4, "--lr", 2e-3, "--ema-decay", 0.5,
                 "--run-dir", tmp_path / "runs", cwd=tmp_path)
    final = tmp_path / "runs" / "uma_4b_finetune" / "checkpoints" / "final" / "inference_ckpt.pt"
    assert str(final) in result.stdout
    config = yaml.safe_load(output.read_text())
    model = config["runner"]["train_eval_unit"]["model"]
    assert model["checkpoint_location"] == str(sliced.resolve())
    assert config["defaults"][0] == {"data": "uma_conserving_data_task_energy_force"} and "hydra" not in config
    assert config["job"]["device_type"] == "CPU" and config["steps"] == 12 and config["epochs"] is None
    assert "base_model_name" not in config

    start = time.perf_counter()
    run = fairchem(output, tmp_path / "fairchem.log", tmp_path)
    seconds = time.perf_counter() - start
    assert run.returncode == 0, (tmp_path / "fairchem.log").read_text()[-3000:]
    from fairchem_prune.fairchem2.finetune import read_metrics

    train, val = read_metrics(tmp_path / "runs" / "uma_4b_finetune" / "logs" / "metrics.jsonl")
    losses = [r["loss"] for r in train]
    assert [r["step"] for r in train] == list(range(1, 13)) and val
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses
    assert final.is_file()

    structures = emt_structures(3, 2)
    e0, f0, _ = predictions(sliced, structures)
    e1, f1, blocks = predictions(final, structures)
    assert blocks == 4
    assert np.abs(e1 - e0).max() > 1e-3 and np.abs(f1 - f0).max() > 1e-4
    print(f"fairchem -c: {seconds:.0f} s, train loss {np.mean(losses[:3]):.3f} -> {np.mean(losses[-3:]):.3f}")


def test_finetune_config_elsewhere_and_layer_decay(ft, sliced, tmp_path):
    """An output outside the template's folder finds the data YAML through hydra.searchpath; layer-wise
    rates become AdamW groups (lr x 0.8^(b-1-i) per block) through fairchem's own optimizer set-up."""
    import functools

    from fairchem.core._cli import get_hydra_config_from_yaml
    from fairchem.core.units.mlip_unit.mlip_unit import _get_optimizer_wd

    from fairchem_prune.fairchem2.finetune import adamw_layer_decay, finetuning_model

    output = tmp_path / "decay.yaml"
    cli("finetune-config", "--template", ft / TEMPLATE, "--checkpoint", sliced, "--output", output, "--epochs", 2,
        "--layer-decay", 0.8, "--lr", 1e-3, cwd=tmp_path)
    config = yaml.safe_load(output.read_text())
    assert config["hydra"] == {"searchpath": [f"file://{ft.resolve()}"]}
    composed = get_hydra_config_from_yaml(str(output), [])
    unit = composed.runner.train_eval_unit
    assert unit.model._target_.endswith("finetune.finetuning_model") and unit.model.layer_decay == 0.8
    assert composed.runner.max_epochs == 2 and unit.cosine_lr_scheduler_fn.steps is None
    assert unit.tasks[0].datasets == ["omat"]

    model = finetuning_model(str(sliced), layer_decay=0.8, heads={"efs": {"module": "fairchem.core.models.uma.escn_md.MLP_EFS_Head"}})
    optimizer = _get_optimizer_wd(functools.partial(adamw_layer_decay, lr=1e-3, weight_decay=1e-3), model)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    params = dict(model.named_parameters())
    assert len(lr_of) == len(params)
    for i in range(4):
        assert lr_of[id(params[f"backbone.blocks.{i}.norm_1.affine_weight"])] == pytest.approx(1e-3 * 0.8 ** (3 - i))
    assert lr_of[id(params["backbone.sphere_embedding.weight"])] == pytest.approx(1e-3 * 0.8 ** 4)
    assert all(lr_of[id(p)] == pytest.approx(1e-3) for n, p in params.items() if n.startswith("output_heads."))
    assert {g["weight_decay"] for g in optimizer.param_groups} == {1e-3}  # HydraModel has no no_weight_decay


def test_finetune_config_bad_input(ft, sliced, tmp_path):
    """One error line, exit status 2, nothing written."""
    output = tmp_path / "out.yaml"
    no_model = tmp_path / "no_model.yaml"
    no_model.write_text(yaml.safe_dump({"runner": {"train_eval_unit": {}}}))
    old = tmp_path / "old.pt"
    torch.save({"config": {"model": {"name": "gemnet_oc"}}, "state_dict": {}}, old)
    cases = [
        (["--template", tmp_path / "missing.yaml", "--checkpoint", sliced], "no such file"),
        (["--template", no_model, "--checkpoint", sliced], "no runner.train_eval_unit.model"),
        (["--template", ft / TEMPLATE, "--checkpoint", old], "fairchem 1.x checkpoint"),
        (["--template", ft / TEMPLATE, "--checkpoint", tmp_path / "none.pt"], "no such file"),
    ]
    for args, message in cases:
        result = cli("finetune-config", *args, "--output", output, cwd=tmp_path, check=False)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        lines = result.stderr.strip().splitlines()  # fairchem's import may print a CUDA-less warning first
        assert lines[-1].startswith("error: ") and len([x for x in lines if "error" in x.lower()]) == 1
        assert "Traceback" not in result.stderr
        assert not output.exists()
    output.write_text("mine\n")
    result = cli("finetune-config", "--template", ft / TEMPLATE, "--checkpoint", sliced, "--output", output,
                 cwd=tmp_path, check=False)
    assert result.returncode == 2 and "already exists" in result.stderr and output.read_text() == "mine\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["no_model.yaml", "old.pt", "out.yaml"]


def test_ablate_runs_fairchem_per_removed_block(ft, tmp_path):
    """``ablate`` on 2 of the 6 blocks: two sliced checkpoints, configs and fairchem runs (3 steps each),
    the summary; a re-run skips the finished runs."""
    out = tmp_path / "ablation"
    relevance = tmp_path / "relevance.json"
    relevance.write_text(json.dumps({"blocks": [f"b_{k}" for k in range(6)],
                                     "datasets": {"omat": {"combined": [0.5, 0.1, 0.1, 0.1, 0.1, 0.1]}}}))
    args = ["ablate", "--template", ft / TEMPLATE, "--checkpoint", UMA_TINY, "--out", out, "--blocks", "0,4",
            "--device", "cpu", "--steps", 3, "--batch-size", 8, "--relevance", relevance]
    start = time.perf_counter()
    result = cli(*args, cwd=tmp_path)
    seconds = time.perf_counter() - start
    assert "1/2 remove_b0: training" in result.stdout and "2/2 remove_b4: training" in result.stdout
    summary = json.loads((out / "ablation.json").read_text())
    assert summary["primary_metric"] == "omat.val,forces,mae"
    assert [row["removed"] for row in summary["runs"]] == ["b_0", "b_4"]
    assert [row["relevance"] for row in summary["runs"]] == [0.5, 0.1]
    assert all(row["metrics"]["omat.val,forces,mae"] > 0 and row["step"] == 3 for row in summary["runs"])
    assert (out / "ablation.png").stat().st_size > 0 and "| b_4 |" in (out / "ablation.md").read_text()
    for name, kept in (("remove_b0", [1, 2, 3, 4, 5]), ("remove_b4", [0, 1, 2, 3, 5])):
        checkpoint = torch.load(out / "checkpoints" / f"{name}.pt", map_location="cpu", weights_only=False)
        assert checkpoint.fairchem_prune["kept_blocks"] == kept
        assert (out / "runs" / name / "checkpoints" / "final" / "inference_ckpt.pt").is_file()
        assert "Training Completed 3 steps" in (out / "logs" / f"{name}.log").read_text()

    again = cli(*args, cwd=tmp_path)
    assert again.stdout.count("finished before, skipped") == 2
    print(f"ablate (2 runs x 3 steps): {seconds:.0f} s")


def test_ablation_summary_of_unfinished_runs(tmp_path):
    """The summary of faked runs: a finished one (its last validation), one not finished; a metric it
    lacks is a PruneError."""
    from fairchem_prune.errors import PruneError
    from fairchem_prune.fairchem2 import ablation

    runs = ablation.plan(UMA_TINY, tmp_path, [1, 2])
    assert [r.name for r in runs] == ["remove_b1", "remove_b2"] and runs[0].kept_blocks == [0, 2, 3, 4, 5]
    done = runs[0].paths
    done.final_checkpoint.parent.mkdir(parents=True)
    done.final_checkpoint.write_bytes(b"")
    done.metrics.parent.mkdir(parents=True)
    done.metrics.write_text("\n".join(json.dumps(r) for r in (
        {"split": "train", "step": 1, "loss": 3.0}, {"split": "val", "step": 1, "loss": 2.0, "omat.val,energy,mae": 0.5},
        {"split": "val", "step": 2, "loss": 1.0, "omat.val,energy,mae": 0.25})) + "\n")
    summary = ablation.summarize(runs, tmp_path)
    assert summary["primary_metric"] == "omat.val,energy,mae"
    assert summary["runs"][0]["metrics"] == {"loss": 1.0, "omat.val,energy,mae": 0.25} and summary["runs"][1]["metrics"] is None
    assert "| b_2 | not finished | - |" in (tmp_path / "ablation.md").read_text()
    with pytest.raises(PruneError, match="not among"):
        ablation.summarize(runs, tmp_path, metric="omat.val,forces,mae")
    with pytest.raises(PruneError, match="distinct block positions"):
        ablation.plan(UMA_TINY, tmp_path, [6])
