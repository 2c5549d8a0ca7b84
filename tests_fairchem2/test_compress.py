"""``fairchem-prune compress`` on fairchem 2: the tiny UMA fixture (6 blocks) fine-tuned on EMT bulk metals
(omat) by the real ``fairchem -c`` at 6, 4 and 2 blocks, and (``--distill``) at 4 and 2 blocks distilled
first on other EMT structures; the pick is the rule applied by hand to the recorded validation errors
(fairchem's own, from each run's metrics), the kept blocks follow the relevance, the distilled students
are closer to the teacher than the slices they start from, the final model loads in fairchem's predictor
with the pick's blocks, a re-run starts no run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import TEMPLATE, UMA_TINY, predictions

from fairchem_prune.compress.budget import parse_budget, pick
from fairchem_prune.fairchem2.compress import CompressSettings, metric_kind, run_compress
from fairchem_prune.fairchem2.finetune import read_metrics

FINETUNE = dict(steps=4, batch_size=4, lr=2e-3, ema_decay=0.5)


NAMES = ["full_6b", "br_4b", "br_2b", "kd_4b", "kd_2b"]


@pytest.fixture(scope="module")
def settings(ft, pretrain):
    def made(**more) -> CompressSettings:
        return CompressSettings(checkpoint=str(UMA_TINY), template=str(ft / TEMPLATE), blocks=[4, 2],
                                relevance_samples=8, **{**FINETUNE, "distill": str(pretrain / TEMPLATE),
                                                          "distill_samples": 16, **more})

    return made


@pytest.fixture(scope="module")
def done(settings, tmp_path_factory):
    out = tmp_path_factory.mktemp("compress") / "out"
    result = run_compress(settings(), out, "1000%", final_steps=6, benchmark_repeats=1)
    return out, result


def test_the_pick_is_the_rule_on_fairchem_s_validation_errors(done):
    out, result = done
    assert result["metric"] == "omat.val,forces,mae" and metric_kind(result["metric"]) == "forces_mae"
    rows = [result["reference"], *result["candidates"]]
    assert [r["name"] for r in rows] == NAMES and [r["distilled"] for r in rows] == [False] * 3 + [True] * 2
    for row in rows:  # fairchem's own validation numbers, as its run recorded them
        _, val = read_metrics(out / "runs" / row["name"] / "logs" / "metrics.jsonl")
        assert row["error"] == val[-1][result["metric"]]
        assert row["samples_per_s"] > 0 and row["params"] > 0 and len(row["kept"]) == row["blocks"]
    assert len({r["error"] for r in rows}) == 5  # five different models were trained
    limit = parse_budget("1000%", "forces_mae").limit(rows[0]["error"])
    assert result["limit"] == pytest.approx(limit)
    within = [c for c in result["candidates"] if c["error"] <= limit]
    assert result["pick"] == min(within, key=lambda c: (c["blocks"], c["error"]))["name"]
    assert result["pick"] in ("br_2b", "kd_2b")
    assert pick(result["candidates"], rows[0]["error"], parse_budget("1000%", "forces_mae"))["name"] == result["pick"]
    assert [r["params"] for r in rows] == [482_325, 327_765, 173_205, 327_765, 173_205]  # 77,280 per block
    report = (out / "report.md").read_text()
    assert f"**{result['pick']}**" in report and "4 steps" in report and (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert "distilled from the full model" in report and "16 structures, 4 steps" in report


def test_kept_blocks_follow_the_relevance(done):
    out, result = done
    relevance = json.loads((out / "relevance.json").read_text())
    scores = relevance["datasets"]["train"]["combined"]
    ranked = sorted(range(6), key=lambda i: -scores[i])
    for row in result["candidates"]:
        assert row["kept"] == sorted(ranked[:row["blocks"]])
    assert relevance["task"] == "omat" and relevance["blocks"] == [f"b_{i}" for i in range(6)]


def test_the_final_model_loads_in_fairchem_with_the_pick_s_blocks(done):
    from fairchem.core.units.mlip_unit import load_predict_unit

    out, result = done
    final = result["final"]
    assert final["length"] == "6 steps" and final["checkpoint"] == str(out / f"compressed_{result['pick']}.pt")
    unit = load_predict_unit(final["checkpoint"], inference_settings="batch", device="cpu")
    assert len(unit.model.module.backbone.blocks) == 2
    _, val = read_metrics(out / "runs" / final["run"] / "logs" / "metrics.jsonl")
    assert final["error"] == val[-1][result["metric"]] and [r["step"] for r in val][-1] == 6


def test_the_distilled_candidates_start_from_students_closer_to_the_teacher(done, pretrain):
    """Each kd_ fine-tune starts from its distillation's student (the config's checkpoint), and that
    student (4 steps on 16 other structures) predicts the pre-training validation structures closer to
    the full model than the slice it started from; by hand, with fairchem's calculator."""
    import yaml
    from ase.io import read

    out, result = done
    structures = read(pretrain.parent / "raw" / "val" / "structures.extxyz", ":")
    energy, forces, _ = predictions(UMA_TINY, structures)
    for k in (4, 2):
        student = out / "runs" / f"distill_{k}b" / "checkpoints" / "final" / "inference_ckpt.pt"
        config = yaml.safe_load((out / "configs" / f"kd_{k}b.yaml").read_text())
        assert config["runner"]["train_eval_unit"]["model"]["checkpoint_location"] == str(student)
        distill = yaml.safe_load((out / "configs" / f"distill_{k}b.yaml").read_text())
        unit = distill["runner"]["train_eval_unit"]
        assert unit["teacher_checkpoint"] == str(UMA_TINY) and distill["steps"] == 4
        gaps = {}
        for name, checkpoint in (("slice", out / "checkpoints" / f"br_{k}b.pt"), ("student", student)):
            e, f, blocks = predictions(checkpoint, structures)
            assert blocks == k
            gaps[name] = np.abs(e - energy).mean(), np.abs(f - forces).mean()
        print(k, gaps)
        # measured (energy eV, forces eV/A): 4 blocks 1.78 -> 0.68, 0.0215 -> 0.0196; 2 blocks 1.66 -> 1.28, 0.0339 -> 0.0234
        assert gaps["student"][0] < 0.85 * gaps["slice"][0] and gaps["student"][1] < 0.95 * gaps["slice"][1], gaps
    assert set(result["distillation"]["gap"]) == {"distill_4b", "distill_2b"}


def test_a_rerun_starts_no_run_and_another_budget_repicks(done, settings, capsys):
    out, result = done
    before = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*") if p.is_file()}
    capsys.readouterr()
    again = run_compress(settings(), out, "1000%", final_steps=6, benchmark_repeats=1)
    printed = capsys.readouterr().out
    assert printed.count("finished before, skipped") == 8 and "training" not in printed
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert again["pick"] == result["pick"]
    tight = result["reference"]["error"] * 1e-6
    with pytest.raises(Exception, match="no candidate is within"):
        run_compress(settings(), out, f"{tight * 1e3:.3g}meV/A", final_steps=6, benchmark_repeats=1)


def test_other_settings_in_the_same_folder_are_refused(done, settings):
    out, _ = done
    with pytest.raises(Exception, match="holds a compress run with other settings"):
        run_compress(settings(steps=5), out, "5%")
    with pytest.raises(Exception, match="holds a compress run with other settings"):
        run_compress(settings(distill_samples=8), out, "5%")


@pytest.mark.parametrize("budget", ["-5%", "0%", "0meV/A"])
def test_a_budget_not_above_zero_is_one_line_before_anything_is_read(budget, tmp_path, capsys):
    """``--budget -5%`` reaches the check (Python 3.11's argparse took it for an option); an energy budget
    is not refused before the metric is known."""
    from fairchem_prune.cli import tool_main

    args = ["--checkpoint", str(tmp_path / "none.pt"), "--template", str(tmp_path / "none.yaml"), "--steps", "1",
            "--out", str(tmp_path / "out")]
    assert tool_main("compress", [*args, "--budget", budget]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: --budget {budget}: a budget is the error allowed above the full model's and must be above 0; give "
        "e.g. 5% or 2meV/A"]
    assert tool_main("compress", [*args, "--budget", "10meV"]) == 2
    assert "--budget" not in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_distill_bad_input_is_one_line_before_anything_is_made(ft, pretrain, tmp_path):
    def refused(match: str, **more):
        settings = CompressSettings(checkpoint=str(UMA_TINY), template=str(ft / TEMPLATE), steps=1, **more)
        with pytest.raises(Exception, match=match):
            run_compress(settings, tmp_path / "out", "5%")
        assert not (tmp_path / "out").exists()

    refused("--distill-samples needs --distill", distill_samples=4)
    refused("no such file", distill=str(tmp_path / "none.yaml"))
    refused("--distill-samples must be at least 1", distill=str(pretrain / TEMPLATE), distill_samples=0)
    swapped = tmp_path / "swapped"  # a template whose training data are the task's validation data
    import shutil

    shutil.copytree(pretrain, swapped, ignore=shutil.ignore_patterns("train", "val"))
    data = swapped / "data" / "uma_conserving_data_task_energy_force.yaml"
    data.write_text(data.read_text().replace(str(pretrain / "train"), str(ft / "val")))
    refused("the task's validation data", distill=str(swapped / TEMPLATE))
