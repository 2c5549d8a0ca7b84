"""``fairchem-prune compress`` on fairchem 2: the tiny UMA fixture (6 blocks) fine-tuned on EMT bulk metals
(omat) by the real ``fairchem -c`` at 6, 4 and 2 blocks; the pick is the rule applied by hand to the
recorded validation errors (fairchem's own, from each run's metrics), the kept blocks follow the
relevance, the final model loads in fairchem's predictor with the pick's blocks, a re-run starts no run."""

from __future__ import annotations

import json

import pytest
from conftest import TEMPLATE, UMA_TINY

from fairchem_prune.compress.budget import parse_budget, pick
from fairchem_prune.fairchem2.compress import CompressSettings, metric_kind, run_compress
from fairchem_prune.fairchem2.finetune import read_metrics

FINETUNE = dict(steps=4, batch_size=4, lr=2e-3, ema_decay=0.5)


def settings(ft, **more) -> CompressSettings:
    return CompressSettings(checkpoint=str(UMA_TINY), template=str(ft / TEMPLATE), blocks=[4, 2],
                            relevance_samples=8, **{**FINETUNE, **more})


@pytest.fixture(scope="module")
def done(ft, tmp_path_factory):
    out = tmp_path_factory.mktemp("compress") / "out"
    result = run_compress(settings(ft), out, "1000%", final_steps=6, benchmark_repeats=1)
    return out, result


def test_the_pick_is_the_rule_on_fairchem_s_validation_errors(done):
    out, result = done
    assert result["metric"] == "omat.val,forces,mae" and metric_kind(result["metric"]) == "forces_mae"
    rows = [result["reference"], *result["candidates"]]
    assert [r["name"] for r in rows] == ["full_6b", "br_4b", "br_2b"]
    for row in rows:  # fairchem's own validation numbers, as its run recorded them
        _, val = read_metrics(out / "runs" / row["name"] / "logs" / "metrics.jsonl")
        assert row["error"] == val[-1][result["metric"]]
        assert row["samples_per_s"] > 0 and row["params"] > 0 and len(row["kept"]) == row["blocks"]
    assert len({r["error"] for r in rows}) == 3  # three different models were trained
    limit = parse_budget("1000%", "forces_mae").limit(rows[0]["error"])
    assert result["limit"] == pytest.approx(limit)
    within = [c for c in result["candidates"] if c["error"] <= limit]
    assert result["pick"] == min(within, key=lambda c: (c["blocks"], c["error"]))["name"] == "br_2b"
    assert pick(result["candidates"], rows[0]["error"], parse_budget("1000%", "forces_mae"))["name"] == result["pick"]
    assert [r["params"] for r in rows] == [482_325, 327_765, 173_205]  # 77,280 per block (fixture README)
    report = (out / "report.md").read_text()
    assert "**br_2b**" in report and "4 steps" in report and (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"


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
    assert final["length"] == "6 steps" and final["checkpoint"] == str(out / "compressed_br_2b.pt")
    unit = load_predict_unit(final["checkpoint"], inference_settings="batch", device="cpu")
    assert len(unit.model.module.backbone.blocks) == 2
    _, val = read_metrics(out / "runs" / final["run"] / "logs" / "metrics.jsonl")
    assert final["error"] == val[-1][result["metric"]] and [r["step"] for r in val][-1] == 6


def test_a_rerun_starts_no_run_and_another_budget_repicks(done, ft, capsys):
    out, result = done
    before = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*") if p.is_file()}
    capsys.readouterr()
    again = run_compress(settings(ft), out, "1000%", final_steps=6, benchmark_repeats=1)
    printed = capsys.readouterr().out
    assert printed.count("finished before, skipped") == 4 and "training" not in printed
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert again["pick"] == result["pick"]
    tight = result["reference"]["error"] * 1e-6
    with pytest.raises(Exception, match="no candidate is within"):
        run_compress(settings(ft), out, f"{tight * 1e3:.3g}meV/A", final_steps=6, benchmark_repeats=1)


def test_other_settings_in_the_same_folder_are_refused(done, ft):
    out, _ = done
    with pytest.raises(Exception, match="holds a compress run with other settings"):
        run_compress(settings(ft, steps=5), out, "5%")


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
