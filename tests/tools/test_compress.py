"""tools/compress.py (``fairchem-prune compress``): on a tiny 3-block GemNet-OC and 24 / 8 EMT slabs, the
pick equals an independent application of the budget rule to the recorded errors, the errors are
fairchem's own validation numbers, the final checkpoint loads in OCPCalculator, a re-run skips every
finished run, and bad inputs are one line with exit status 2."""

import contextlib
import copy
import io
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import S2EF_TASK, build_stock, slab_atoms, tiny_config, write_checkpoint, write_task

from fairchem_prune.cli import tool_main
from fairchem_prune.compress.pipeline import CompressSettings, _kept_blocks
from fairchem_prune.compress.budget import PICKS, Budget, parse_budget, pick
from fairchem_prune.compress.report import record_pick
from fairchem_prune.errors import PruneError

REPO = Path(__file__).parents[2]
TOOL = REPO / "tools" / "compress.py"
@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def compress(*args) -> Result:
    """The tool's entry point, in this process (its training runs are fairchem processes of their own)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = tool_main("compress", [str(a) for a in args], prog="compress.py")
    return Result(code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, emt_lmdb):
    root = tmp_path_factory.mktemp("compress")
    config = {"name": "gemnet_oc", **tiny_config(num_blocks=3)}
    write_checkpoint(root / "teacher.pt", build_stock(config), config)
    return root, ["--checkpoint", root / "teacher.pt", "--task", write_task(root / "task.yml"), "--train", emt_lmdb["train"],
                  "--val", emt_lmdb["val"], "--epochs", 2, "--final-epochs", 1]


@pytest.fixture(scope="module")
def done(inputs, emt_lmdb):
    """Every block count, BR and distilled (on the training slabs), relevance order; then a re-run."""
    root, common = inputs
    args = [*common, "--distill", emt_lmdb["test"], "--distill-samples", 16, "--budget", "100%", "--out", root / "out",
            "--workers", 2]
    first = compress(*args)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    files = [p for p in (root / "out").rglob("*") if p.is_file()
             and p.name not in ("compress.json", "report.md", "pareto.png")]
    stamps = {p: p.stat().st_mtime_ns for p in files}
    again = compress(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    return root / "out", json.loads((root / "out" / "compress.json").read_text()), stamps, again.stdout


def independent_pick(result: dict, relative: float) -> str:
    """The rule written out: the fewest blocks with error <= (1 + relative) x the full model's; the lower error on ties."""
    limit = (1 + relative) * result["reference"]["error"]
    within = sorted((c["blocks"], c["error"], c["name"]) for c in result["candidates"] if c["error"] <= limit)
    return within[0][2]


def test_pick_is_the_rule_applied_to_the_recorded_errors(done):
    out, result, *_ = done
    names = [result["reference"]["name"]] + [c["name"] for c in result["candidates"]]
    assert names == ["full_3b", "br_2b", "br_1b", "kd_2b", "kd_1b"]
    for row in [result["reference"], *result["candidates"]]:  # fairchem's validation numbers, not re-derived ones
        saved = torch.load(row["checkpoint"], map_location="cpu", weights_only=False)["val_metrics"]
        assert row["error"] == pytest.approx(saved["forces_mae"]["metric"], rel=1e-9)
        assert row["efwt"] == saved["energy_forces_within_threshold"]["metric"]  # validated beside the task's metrics
        assert len(row["kept"]) == row["blocks"] and row["samples_per_s"] > 0 and row["params"] > 0
    assert result["pick"] == independent_pick(result, 1.0)
    assert len({c["error"] for c in result["candidates"]}) == 4  # four different models were trained
    report = (out / "report.md").read_text()
    assert f"**{result['pick']}**" in report and "![pareto](pareto.png)" in report
    assert "| val EFwT (%) |" in report and "the S2EF leaderboard's ranking metric" in report
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG" and (out / "relevance.png").stat().st_size > 5000


def test_kept_blocks_follow_the_relevance_and_students_start_the_kd_runs(done):
    out, result, *_ = done
    relevance = json.loads((out / "relevance.json").read_text())
    scores = dict(zip(relevance["blocks"], relevance["datasets"]["train"]["combined"]))
    ranked = sorted(range(3), key=lambda i: -scores[f"f_{i + 2}"])  # f_1 is the embedding
    by_name = {c["name"]: c for c in result["candidates"]}
    assert by_name["br_2b"]["kept"] == sorted(ranked[:2]) == by_name["kd_2b"]["kept"]
    assert by_name["br_1b"]["kept"] == [ranked[0]]
    kd = yaml.safe_load((out / "configs" / "kd_1b.yml").read_text())["model"]
    assert kd["pretrained_checkpoint"] == str((out / "students" / "kd_1b.pt").resolve()) and kd["kept_blocks"] == [0]
    distill = yaml.safe_load((out / "configs" / "distill_1b.yml").read_text())
    assert distill["model"]["kept_blocks"] == [ranked[0]] and distill["task"]["distill"]["max_samples"] == 16


def test_final_checkpoint_loads_in_ocpcalculator(done):
    from fairchem.core.common.relaxation.ase_utils import OCPCalculator

    out, result, *_ = done
    final = result["final"]
    assert Path(final["checkpoint"]).name == f"compressed_{result['pick']}.pt" and final["epochs"] == 1
    atoms = slab_atoms()
    atoms.calc = OCPCalculator(checkpoint_path=final["checkpoint"], cpu=True, seed=0)
    forces = atoms.get_forces()
    assert forces.shape == (len(atoms), 3) and np.isfinite(forces).all() and np.isfinite(atoms.get_potential_energy())
    picked = next(c for c in result["candidates"] if c["name"] == result["pick"])
    assert len(atoms.calc.trainer.model.int_blocks) == picked["blocks"]


def test_rerun_skips_every_finished_step(done):
    out, result, stamps, stdout = done
    assert "training" not in stdout and stdout.count("finished before, skipped") == 8  # 5 fine-tunes, 2 distillations, final
    assert len(stamps) > 40 and {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_a_budget_no_candidate_meets_names_the_closest(done, inputs, emt_lmdb):
    out, result, *_ = done
    root, common = inputs
    excess = {c["name"]: c["error"] / result["reference"]["error"] - 1 for c in result["candidates"]}
    closest = min(excess, key=excess.get)
    assert excess[closest] > 0.02  # every 2-epoch reduced model is worse than the full one
    budget = f"{100 * excess[closest] / 2:.2f}%"
    failed = compress(*common, "--distill", emt_lmdb["test"], "--distill-samples", 16, "--budget", budget, "--out", out)
    assert failed.returncode == 2 and "training" not in failed.stdout
    line = failed.stderr.strip().splitlines()[-1]
    assert line.startswith("error: no candidate is within") and f"closest is {closest}" in line
    assert json.loads((out / "compress.json").read_text())["pick"] is None


def test_an_out_folder_of_other_settings_is_refused(done, inputs):
    out, *_ = done
    root, common = inputs
    failed = compress(*common, "--budget", "5%", "--out", out)
    assert failed.returncode == 2
    assert "holds a compress run with other settings (distill:" in failed.stderr and "Traceback" not in failed.stderr
    (root / "other").mkdir()
    (root / "other" / "notes.txt").write_text("mine")
    failed = compress(*common, "--budget", "5%", "--out", root / "other")
    assert failed.returncode == 2 and "is not a compress folder" in failed.stderr
    assert (root / "other" / "notes.txt").read_text() == "mine"


def test_a_task_the_checkpoint_cannot_serve_is_one_line(inputs, tmp_path):
    root, common = inputs
    write_task(tmp_path / "stress.yml", outputs={**S2EF_TASK["outputs"], "stress": {"shape": 6, "level": "system"}})
    (tmp_path / "bare.yml").write_text(yaml.safe_dump({"dataset": S2EF_TASK["dataset"]}))
    args = [a if a != root / "task.yml" else tmp_path / "stress.yml" for a in common]
    failed = compress(*args, "--budget", "5%", "--out", tmp_path / "a")
    assert failed.returncode == 2 and failed.stderr.strip().splitlines()[-1].startswith("error: the task asks for ['stress']")
    args = [a if a != root / "task.yml" else tmp_path / "bare.yml" for a in common]
    failed = compress(*args, "--budget", "5%", "--out", tmp_path / "b")
    assert failed.returncode == 2 and "has no outputs, loss_functions, evaluation_metrics" in failed.stderr
    failed = compress(*common, "--budget", "5%", "--blocks", "3", "--out", tmp_path / "c")
    assert failed.returncode == 2 and "give counts from 1 to 2" in failed.stderr
    assert not any((tmp_path / name).exists() for name in "abc")  # "a" was refused after its folder was started


def test_an_interrupted_inspection_leaves_nothing_in_out(inputs, tmp_path, monkeypatch):
    """Ctrl-C while the reference's trainer is built here (the task check, the relevance): the trainer's
    scratch folder is not in --out, and the --out that the run started is gone; an empty --out the user
    made stays."""
    from fairchem_prune.compress import pipeline

    root, common = inputs
    seen = {}

    def interrupted(trainer, *args):
        seen["out"] = sorted(p.name for p in (tmp_path / "out").iterdir())
        seen["scratch"] = Path(trainer.config["cmd"]["checkpoint_dir"]).parents[1]
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "_check_task", interrupted)
    with pytest.raises(KeyboardInterrupt):
        compress(*common, "--budget", "5%", "--out", tmp_path / "out")
    assert seen["out"] == ["configs", "settings.json"]
    assert tmp_path not in seen["scratch"].parents and not seen["scratch"].exists()
    assert not (tmp_path / "out").exists()
    (tmp_path / "out").mkdir()
    with pytest.raises(KeyboardInterrupt):
        compress(*common, "--budget", "5%", "--out", tmp_path / "out")
    assert (tmp_path / "out").is_dir() and not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("budget", ["-5%", "0%", "0meV/A", "-2meV/A"])
def test_a_budget_not_above_zero_is_one_line_before_anything_is_read(budget, tmp_path):
    """``--budget -5%`` reaches the check (Python 3.11's argparse took it for an option)."""
    failed = compress("--checkpoint", tmp_path / "none.pt", "--task", tmp_path / "none.yml", "--train", tmp_path,
                      "--val", tmp_path, "--budget", budget, "--out", tmp_path / "out")
    assert failed.returncode == 2 and failed.stderr.splitlines() == [
        f"error: --budget {budget}: a budget is the error allowed above the full model's and must be above 0; give "
        "e.g. 5% or 2meV/A"], failed.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text, metric, relative, absolute", [
    ("5%", "forces_mae", 0.05, None), ("2meV/A", "forces_mae", None, 0.002), ("0.5 eV/Å", "forces_mae", None, 0.5),
    ("10meV", "energy_mae", None, 0.01),
])
def test_budgets_parse_in_the_metric_units(text, metric, relative, absolute):
    budget = parse_budget(text, metric)
    assert budget.relative == pytest.approx(relative) if relative else budget.relative is None
    assert budget.absolute == pytest.approx(absolute) if absolute else budget.absolute is None


@pytest.mark.parametrize("text, metric, message", [
    ("5", "forces_mae", "give a relative budget"), ("2meV", "forces_mae", "not in meV"),
    ("2meV/A", "energy_mae", "not in meV/A"), ("3 furlongs", "forces_mae", "unknown unit"),
    ("5%", "forces_cosine_similarity", "is not an error"),
])
def test_bad_budgets_are_refused(text, metric, message):
    with pytest.raises(PruneError, match=message):
        parse_budget(text, metric)


def test_the_rule_takes_the_fewest_blocks_then_the_lower_error():
    rows = [{"name": "br_4b", "blocks": 4, "error": 1.02}, {"name": "br_2b", "blocks": 2, "error": 1.30},
            {"name": "br_3b", "blocks": 3, "error": 1.04}, {"name": "kd_3b", "blocks": 3, "error": 1.03}]
    assert pick(rows, 1.0, Budget("5%", relative=0.05))["name"] == "kd_3b"
    assert pick(rows, 1.0, Budget("40meV/A", absolute=0.04))["name"] == "kd_3b"
    assert pick(rows, 1.0, Budget("30%", relative=0.30))["name"] == "br_2b"
    with pytest.raises(PruneError, match=r"closest is br_4b at 1.02 \(\+2.0%\)"):
        pick(rows, 1.0, Budget("1%", relative=0.01))


def measured(name, blocks, error, samples_per_s, flags=()):
    return {"name": name, "blocks": blocks, "kept": list(range(blocks)), "distilled": False, "error": error,
            "samples_per_s": samples_per_s, "speedup": samples_per_s / 10.0, "flop_bound": 6 / blocks, "params": 1000 * blocks,
            "peak_memory_mb": 1.0, "excess": error - 1.0, "flags": list(flags)}


SLOWER = "slower than the 4-block model (1 s vs 0.5 s per pass, beyond the spread 2.0 %)"


def test_pick_fastest_takes_the_fastest_trustworthy_candidate_and_the_report_says_why(tmp_path):
    """Errors and throughputs as compress records them: the 2-block model measured slower than the 4-block
    one (flagged), the 3-block model faster than the 2-block one (not flagged)."""
    rows = [measured("br_4b", 4, 1.02, 20.0), measured("br_3b", 3, 1.04, 30.0), measured("br_2b", 2, 1.05, 25.0),
            measured("br_1b", 1, 1.50, 90.0)]
    budget = Budget("10%", relative=0.10)
    assert pick(rows, 1.0, budget)["name"] == "br_2b"                 # fewest blocks: the throughput plays no part
    assert pick(rows, 1.0, budget, by="fastest")["name"] == "br_3b"   # br_1b is faster but out of the budget
    rows[1]["flags"] = [SLOWER]
    assert pick(rows, 1.0, budget, by="fastest")["name"] == "br_2b"   # br_3b's figure is not trusted
    for row in rows:
        row["flags"] = [SLOWER]
    assert pick(rows, 1.0, budget, by="fastest")["name"] == "br_2b"   # none trusted: fewest blocks
    with pytest.raises(PruneError, match="--pick must be one of fewest, fastest"):
        pick(rows, 1.0, budget, by="cheapest")

    rows = [measured("full_6b", 6, 1.0, 10.0), measured("br_4b", 4, 1.02, 20.0), measured("br_3b", 3, 1.04, 30.0),
            measured("br_2b", 2, 1.05, 25.0, [SLOWER])]
    said = []
    result = {"settings": {"checkpoint": "c.pt", "order": "last"}, "architecture": "gemnet_oc", "metric": "forces_mae",
              "budget": "10%", "limit": 1.1, "reference": rows[0], "candidates": rows[1:], "pick": None, "final": None,
              "task": "t", "length": "2 epochs", "error_is": "best validation", "benchmark_on": "val",
              "loads_in": "OCPCalculator"}
    chosen = record_pick(tmp_path, result, budget, said.append)
    assert chosen["name"] == "br_2b" and result["pick_by"] == "fewest"
    assert result["pick_notes"] == ["br_3b (3 blocks) measured faster than the pick (30 vs 25 samples/s): flagged "
                                    "figures (br_2b)"]
    report = (tmp_path / "report.md").read_text()
    assert "the rule (`--pick fewest`): the fewest blocks within the budget (ties: the lower error)." in report
    assert f"- br_2b: {SLOWER}" in report and "| 25! |" in report and result["pick_notes"][0] in report
    assert said[0].startswith("pick: br_2b by the fewest blocks within the budget") and said[1].startswith("note: br_3b")

    chosen = record_pick(tmp_path, result, budget, said.append, by="fastest")
    assert chosen["name"] == "br_3b" and result["pick_notes"] == ["flagged throughputs, not used to pick: br_2b"]
    assert json.loads((tmp_path / "compress.json").read_text())["pick_rule"] == PICKS["fastest"]
    for row in rows[1:]:
        row["flags"] = [SLOWER]
    chosen = record_pick(tmp_path, result, budget, said.append, by="fastest")
    assert chosen["name"] == "br_2b" and result["pick_notes"][0].startswith("no candidate within the budget has a "
                                                                           "trustworthy throughput")
    assert result["pick_notes"][1:] == ["br_3b (3 blocks) measured faster than the pick (30 vs 25 samples/s): flagged "
                                        "figures (br_3b, br_2b)"]


def test_order_last_keeps_the_first_blocks_and_relevance_the_most_relevant():
    settings = CompressSettings(checkpoint="c", tasks=["t"], train="a", val="b", order="last")
    assert _kept_blocks(settings, None, ["f_2", "f_3", "f_4"], [2, 1]) == {2: [0, 1], 1: [0]}
    relevance = {"blocks": ["f_1", "f_2", "f_3", "f_4"], "datasets": {"train": {"combined": [0.4, 0.1, 0.3, 0.2]}}}
    settings = CompressSettings(checkpoint="c", tasks=["t"], train="a", val="b")
    assert _kept_blocks(settings, relevance, ["f_2", "f_3", "f_4"], [2, 1]) == {2: [1, 2], 1: [1]}


def test_the_tool_script_and_the_command_document_their_options():
    for command in ([sys.executable, str(TOOL), "--help"], [sys.executable, "-m", "fairchem_prune", "compress", "--help"]):
        shown = subprocess.run(command, capture_output=True, text=True)
        assert shown.returncode == 0 and "--budget" in shown.stdout and "--submit" in shown.stdout, shown.stderr[-2000:]


def test_a_hydra_recipe_takes_the_task_model_keys_in_its_backbone(tmp_path, emt_lmdb):
    from fairchem_prune.architectures import by_name
    from fairchem_prune.compress.configs import finetune_base

    base = finetune_base(by_name("esen_backbone"), True, [write_task(tmp_path / "task.yml")], emt_lmdb["train"], emt_lmdb["val"])
    model = base["model"]
    assert model["name"] == "hydra" and model["heads"]["efs"]["module"] == "esen_mlp_efs_head"
    assert model["backbone"]["regress_forces"] is True and model["backbone"]["use_pbc"] is True
    assert "regress_forces" not in model and base["dataset"]["val"]["src"] == str(Path(emt_lmdb["val"]).resolve())
    with pytest.raises(PruneError, match="does not build a monolithic model"):
        finetune_base(by_name("esen_backbone"), False, [tmp_path / "task.yml"], emt_lmdb["train"], emt_lmdb["val"])
    write_task(tmp_path / "painn.yml", model={"name": "painn_reduced"})
    with pytest.raises(PruneError, match="trains 'painn_reduced' but the GemNet-OC checkpoint needs gemnet_oc_reduced"):
        finetune_base(by_name("gemnet_oc"), False, [tmp_path / "painn.yml"], emt_lmdb["train"], emt_lmdb["val"])


def test_run_configs_scale_the_recipe_schedule_to_the_epochs(tmp_path, emt_lmdb):
    from fairchem_prune.architectures import by_name
    from fairchem_prune.compress.configs import finetune_base, run_config

    gemnet = by_name("gemnet_oc")
    base = finetune_base(gemnet, False, [write_task(tmp_path / "task.yml")], emt_lmdb["train"], emt_lmdb["val"])
    config = run_config(base, gemnet, {"pretrained_checkpoint": "pre.pt", "kept_blocks": list(range(8))}, 4, 6)
    optim = config["optim"]
    assert (optim["max_epochs"], optim["cosine_epochs"], optim["warmup_epochs"]) == (4, 4, pytest.approx(5 * 4 / 32))
    assert optim["eval_every"] == 3 and optim["layerwise_lr"]["blocks"] == [0.55, 0.40, 0.30, 0.40, 0.55, 0.625, 0.625, 0.625]
    assert config["model"]["name"] == "gemnet_oc_reduced" and config["model"]["kept_blocks"] == list(range(8))
    assert "test" not in config["dataset"] and base["optim"]["max_epochs"] == 500  # the recipe's own, for the final run


def test_the_runs_validate_efwt_where_the_task_scores_energy_and_free_atom_forces(tmp_path, emt_lmdb):
    from fairchem_prune.architectures import by_name
    from fairchem_prune.compress.configs import finetune_base

    def metrics(**outputs_changes):
        outputs = copy.deepcopy(S2EF_TASK["outputs"])
        outputs["forces"].update(outputs_changes)
        task = write_task(tmp_path / "task.yml", outputs=outputs)
        return finetune_base(by_name("gemnet_oc"), False, [task], emt_lmdb["train"], emt_lmdb["val"])["evaluation_metrics"]

    assert metrics()["metrics"] == {"energy": ["mae"], "forces": ["mae", "energy_forces_within_threshold"]}
    assert metrics()["primary_metric"] == "forces_mae"  # the task's pick metric stays
    assert metrics(eval_on_free_atoms=False)["metrics"]["forces"] == ["mae"]  # fairchem would count only free atoms


def test_run_configs_of_epochs_auto_keep_the_recipe_schedule_and_stop_on_a_plateau(tmp_path, emt_lmdb):
    from fairchem_prune.architectures import by_name
    from fairchem_prune.compress.configs import finetune_base, run_config

    gemnet = by_name("gemnet_oc")
    base = finetune_base(gemnet, False, [write_task(tmp_path / "task.yml")], emt_lmdb["train"], emt_lmdb["val"])
    optim = run_config(base, gemnet, {"pretrained_checkpoint": "pre.pt", "kept_blocks": [0, 1]}, None, 6)["optim"]
    assert (optim["max_epochs"], optim["cosine_epochs"], optim["warmup_epochs"]) == (500, 32, 5)  # JMP's, unscaled
    assert optim["plateau"] == {"window": 0.2, "tolerance": 0.05, "min_epochs": 10.0} and optim["eval_every"] == 3
    own = {**S2EF_TASK["optim"], "plateau": {"window": 0.5}}
    base = finetune_base(gemnet, False, [write_task(tmp_path / "own.yml", optim=own)], emt_lmdb["train"], emt_lmdb["val"])
    assert run_config(base, gemnet, {}, None, 6)["optim"]["plateau"] == {"window": 0.5}  # the task's own rule
    assert "plateau" not in run_config(base, gemnet, {}, 3, 6)["optim"]  # a fixed length is fixed


def test_epochs_auto_trains_each_candidate_to_its_plateau_and_reports_how_long(inputs, emt_lmdb, tmp_path):
    from fairchem_prune.trainers.plateau import HISTORY, Plateau

    root, common = inputs
    # the task caps the recipe at 3 epochs and stops once an epoch's validations gain less than 90 %
    task = write_task(tmp_path / "task.yml", optim={**S2EF_TASK["optim"], "max_epochs": 3,
                                                    "plateau": {"window": 0.5, "tolerance": 0.9, "min_epochs": 1}})
    args = [*common[:3], task, *common[4:8], "--epochs", "auto", "--blocks", 2, "--order", "last", "--budget", "100%",
            "--out", tmp_path / "out"]
    result = compress(*args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    found = json.loads((tmp_path / "out" / "compress.json").read_text())
    rule = Plateau(window=0.5, tolerance=0.9, min_epochs=1)
    for row in [found["reference"], *found["candidates"]]:
        history = json.loads((Path(row["checkpoint"]).parent / HISTORY).read_text())
        validations = [tuple(v) for v in history["validations"]]
        stops = [i for i in range(1, len(validations) + 1) if rule.reached(validations[:i])]
        assert stops[:1] == ([len(validations)] if history["stopped_at"] else []), history  # stopped at the first plateau
        assert row["trained"] == f"{validations[-1][0]:g} epochs ({'plateau' if stops else 'cap'})"
        assert validations[-1][0] == 3 or stops
    assert found["length"] == "up to 3 epochs, to a plateau" and found["stop_rule"] == (
        "a run stops once its best validation error improves by less than 90% over the last 50% of its epochs, "
        "not before epoch 1")
    assert found["final"]["run"] == f"final_{found['pick']}_auto" and found["final"]["length"].endswith(("(plateau)", "(cap)"))
    assert "| trained |" in (tmp_path / "out" / "report.md").read_text()
    with pytest.raises(SystemExit) as refused:
        compress(*args[:-1], tmp_path / "bad", "--epochs", "some")
    assert refused.value.code == 2 and not (tmp_path / "bad").exists()
