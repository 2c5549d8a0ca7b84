"""The README's main command in quick mode: every stage runs on the tiny configuration and writes its
artefacts, the numbers in them are what an independent computation gives, and a second run skips
every finished stage; the same pipeline with a hydra eSEN teacher given by ``--teacher``."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.calculators.singlepoint import SinglePointCalculator

from fairchem_prune.demo import run_demo

REPO = Path(__file__).parents[1]

REWRITTEN = ("report.md", "demo.json")
ARTEFACTS = ("report.md", "relevance.png", "relevance.json", "reduction.json", "finetune.json", "finetune.png",
             "finetune_curves.png", "md.json", "md.png", "benchmark.json", "teacher.pt", "teacher.json", "teacher_curve.png", "reduction/br_2b.pt",
             "reduction/kd_1b.pt", "data/ethanol/test/data.lmdb")


@pytest.fixture(scope="module")
def cache(demo_cache):
    """The demo data cache, shared by the demo runs of the session."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FAIRCHEM_PRUNE_CACHE", str(demo_cache))
        yield demo_cache


@pytest.fixture(scope="module")
def demo(tmp_path_factory, cache):
    out = tmp_path_factory.mktemp("demo")
    result = run_demo(out=out / "run", quick=True)
    files = [p for p in (out / "run").rglob("*") if p.is_file() and p.name not in REWRITTEN]
    stamps = {p: p.stat().st_mtime_ns for p in files}
    again = run_demo(out=out / "run", quick=True)
    return out / "run", result, again, stamps


def test_every_artefact_is_written(demo):
    out, result, *_ = demo
    for name in ARTEFACTS:
        assert (out / name).stat().st_size > 0, name
    for figure in ("relevance.png", "finetune.png", "finetune_curves.png", "md.png", "teacher_curve.png"):
        assert (out / figure).read_bytes()[:4] == b"\x89PNG"
    report = (out / "report.md").read_text()
    for needle in ("![teacher](teacher_curve.png)", "![relevance](relevance.png)", "![finetune](finetune.png)", "![curves](finetune_curves.png)", "![md](md.png)",
                   "| 1 | ", "BR+KD", "Findings", "measured / bound", "Quick mode"):
        assert needle in report, needle
    # the teacher's curve: one validation per epoch, its best is the best checkpoint's
    record = json.loads((out / "teacher.json").read_text())
    epochs, values = zip(*record["val_curve"])
    assert epochs == pytest.approx(range(1, record["epochs"] + 1), abs=0.02)
    assert min(values) == pytest.approx(record["val_metrics"]["forces_mae"], rel=1e-5)
    # relevance and BR / KD per source (2 x 3); downstream: plateau, 1 block vs 3, KD, scratch
    assert len(result["findings"]) == 10 and sum("from scratch" in line for line in result["findings"]) == 1


def test_second_run_skips_every_stage(demo):
    """Nothing but report.md and demo.json is written again: no data, training run, log, JSON or figure changes."""
    out, result, again, stamps = demo
    assert again["reduction"] == result["reduction"] and again["finetune"] == result["finetune"]
    assert len(stamps) > 50
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert {p for p in out.rglob("*") if p.is_file() and p.name not in REWRITTEN} == set(stamps)


def test_relevance_is_normalised_per_source(demo):
    out, *_ = demo
    relevance = json.loads((out / "relevance.json").read_text())
    assert relevance["blocks"] == ["f_1", "f_2", "f_3", "f_4"]  # the quick teacher has 3 blocks
    for entry in relevance["datasets"].values():
        assert sum(entry["combined"]) == pytest.approx(1.0, abs=1e-6)


def test_table1_numbers_match_an_independent_evaluation(demo, cache):
    """Force MAE of the teacher and of the 1-block BR model on the slab source, recomputed through
    ASE (OCPCalculator on each structure, free atoms only), equals the demo's number."""
    out, result, *_ = demo
    reduction = result["reduction"]
    assert reduction["counts"] == [2, 1]
    params = reduction["params"]
    assert params["teacher"] > params["br_2b"] > params["br_1b"]
    for name in ("teacher", "br_1b"):
        mae, efwt = slab_forces_mae(reduction["checkpoints"][name], cache)
        assert reduction["metrics"][name]["emt_slabs"]["forces_mae"] == pytest.approx(mae, rel=1e-4), name
        assert reduction["metrics"][name]["emt_slabs"]["energy_forces_within_threshold"] == pytest.approx(efwt), name
    assert "| BR+KD 1 | " in (out / "report.md").read_text()  # the leaderboard view of Table 1


def slab_forces_mae(checkpoint: str, cache) -> tuple[float, float]:
    """Force MAE (free atoms) of ``checkpoint`` on the quick demo's validation slabs, through ASE
    (OCPCalculator on each structure), and the share of slabs with energy within 0.02 eV and every
    free atom's force within 0.03 eV/Å."""
    from fairchem.core.common.relaxation.ase_utils import OCPCalculator
    from fairchem.core.datasets import LmdbDataset

    dataset = LmdbDataset({"src": str(cache / "demo_data" / "quick-seed0" / "pretrain" / "val" / "emt_slabs.lmdb")})
    calc = OCPCalculator(checkpoint_path=checkpoint, cpu=True, seed=0)
    errors, within = [], []
    for data in dataset:
        atoms = data_to_atoms(data)
        atoms.calc = calc
        free = data.fixed.numpy() == 0
        errors.append(np.abs(atoms.get_forces()[free] - data.forces.numpy()[free]).ravel())
        within.append(abs(atoms.get_potential_energy() - float(data.energy)) < 0.02 and errors[-1].max() < 0.03)
    return float(np.concatenate(errors).mean()), float(np.mean(within))


def data_to_atoms(data):
    from ase import Atoms

    atoms = Atoms(numbers=data.atomic_numbers.numpy().astype(int), positions=data.pos.numpy(),
                  cell=data.cell.numpy()[0], pbc=True, tags=data.tags.numpy())
    atoms.calc = SinglePointCalculator(atoms)
    return atoms


def test_finetune_runs_and_curves(demo):
    out, result, *_ = demo
    rows = result["finetune"]["rows"]
    # the default models, 2 seeds each (fairchem's --seed: another data order, the same start)
    assert sorted((r["init"], r["blocks"], r["seed"]) for r in rows) == sorted(
        (init, k, seed) for init, k in (("BR", 3), ("BR", 1), ("BR+KD", 1), ("scratch", 1)) for seed in (0, 1))
    for init, k in (("BR", 3), ("scratch", 1)):
        runs = [r for r in rows if (r["init"], r["blocks"]) == (init, k)]
        assert runs[0]["curve"] != runs[1]["curve"], init
        for run in runs:
            checkpoint = torch.load(out / "finetune" / "runs" / "checkpoints" / run["name"] / "best_checkpoint.pt",
                                    map_location="cpu", weights_only=False)
            assert checkpoint["config"]["cmd"]["seed"] == run["seed"], run["name"]
    for row in rows:
        times, steps, values = zip(*row["curve"])
        assert list(times) == sorted(times) and times[0] > 0 and row["train_seconds"] >= times[-1] - 1e-6
        assert list(steps) == sorted(steps) and row["best_val_forces_mae"] == min(values)
        assert 0 < row["test"]["forces_mae"] < 5 and 0 < row["test"]["energy_mae"]


def test_md_stage_runs_the_fine_tuned_models(demo):
    """The fine-tuned teacher-size model and the BR and BR+KD models at the smallest count (quick: 1 block),
    from the same ethanol frame: every run recorded, the reference's distance histogram its own."""
    out, *_ = demo
    md = json.loads((out / "md.json").read_text())
    assert list(md["models"]) == ["teacher 3b", "BR 1b", "BR+KD 1b"] and md["reference"] == "teacher 3b"
    for name, model in md["models"].items():
        assert model["kind"] == "direct" and model["steps_per_second"] > 0 and len(model["runs"]) == 1, name
        run = model["runs"][0]
        assert run["time_fs"][0] == 0.0 and (model["stable"] or run["reason"]), name
    assert md["models"]["teacher 3b"]["rdf_l1"] == 0.0


def test_benchmark_rows(demo):
    out, result, *_ = demo
    rows = result["benchmark"]["rows"]
    assert [r["blocks"] for r in rows] == [3, 2, 1]
    assert rows[0]["flop_bound_speedup"] == 1.0 and rows[1]["flop_bound_speedup"] > 1.2 and rows[2]["flop_bound_speedup"] > 2.0
    assert [r["params"] for r in rows] == sorted((r["params"] for r in rows), reverse=True)


def test_a_run_with_other_settings_is_refused(demo):
    """The quick results are not silently reused by a full run, nor overwritten by it."""
    from fairchem_prune.errors import PruneError

    out, *_ = demo
    report = (out / "report.md").read_text()
    with pytest.raises(PruneError, match="holds a demo run with other settings .*quick: True"):
        run_demo(out=out, quick=False)
    assert (out / "report.md").read_text() == report and json.loads((out / "demo.json").read_text())["quick"] is True


# ---------------------------------------------------------------------------- a hydra eSEN teacher
@pytest.fixture(scope="module")
def esen_demo(tmp_path_factory, cache):
    """The quick demo with ``--teacher``: the tiny 4-block eSEN (configs/models/esen_tiny.yml, stress
    head on, as eSEN-30M-OAM) with perturbed weights, saved as fairchem saves a hydra checkpoint."""
    import yaml
    from conftest import build_perturbed, write_checkpoint

    from fairchem_prune.architectures import by_name

    by_name("esen_backbone").register_stock()
    out = tmp_path_factory.mktemp("esen_demo")
    config = yaml.safe_load((REPO / "configs" / "models" / "esen_tiny.yml").read_text())["model"]
    write_checkpoint(out / "esen.pt", build_perturbed(config, seed=0), config)
    return out / "run", out / "esen.pt", run_demo(out=out / "run", quick=True, teacher=out / "esen.pt")


def test_esen_teacher_runs_every_stage(esen_demo, cache):
    """Every stage runs for a hydra teacher: relevance over its 4 blocks, BR and BR+KD students at 3 and 2
    blocks scored as an independent evaluation scores them, the benchmark at 4 / 3 / 2 blocks, and a
    report naming only the distillation terms eSEN has (no edge features, no readout layer to slice)."""
    out, _, result = esen_demo
    record = json.loads((out / "teacher.json").read_text())
    assert (record["architecture"], record["blocks"], record["parameters"]) == ("esen_backbone", 4, 28_209)
    relevance = json.loads((out / "relevance.json").read_text())
    assert relevance["blocks"] == ["b_0", "b_1", "b_2", "b_3"]
    for entry in relevance["datasets"].values():
        assert sum(entry["combined"]) == pytest.approx(1.0, abs=1e-6)
    reduction = result["reduction"]
    assert reduction["counts"] == [3, 2]
    assert reduction["params"] == {"teacher": 28_209, "br_3b": 21_889, "br_2b": 15_569}
    for name in ("teacher", "br_2b", "kd_2b"):
        mae, efwt = slab_forces_mae(reduction["checkpoints"][name], cache)
        assert reduction["metrics"][name]["emt_slabs"]["forces_mae"] == pytest.approx(mae, rel=1e-4), name
        assert reduction["metrics"][name]["emt_slabs"]["energy_forces_within_threshold"] == pytest.approx(efwt), name
    assert [r["blocks"] for r in result["benchmark"]["rows"]] == [4, 3, 2]
    report = (out / "report.md").read_text()
    assert "(forces + node-to-node L1, " in report and "edge-to-edge" not in report and "sliced" not in report


def test_esen_finetuning_starts_from_the_reduced_backbones(esen_demo):
    """The default models (no BR/RandomMLP: eSEN has no readout layer to re-initialise); the BR and BR+KD runs fine-tune
    hydra models whose reduced backbone holds the teacher's (or the student's) kept blocks, so a few
    steps later their blocks are still within 2 % of the teacher's, while the scratch model's are not."""
    import torch

    out, teacher, result = esen_demo
    rows = result["finetune"]["rows"]
    assert {(r["init"], r["blocks"]) for r in rows} == {("BR", 4), ("BR", 2), ("BR+KD", 2), ("scratch", 2)}
    reference = torch.load(teacher, map_location="cpu", weights_only=False)["state_dict"]
    key = "backbone.blocks.1.edge_wise.so2_conv_1.fc_m0.weight"
    for row in rows:
        checkpoint = torch.load(out / "finetune" / "runs" / "checkpoints" / row["name"] / "best_checkpoint.pt",
                                map_location="cpu", weights_only=False)
        backbone = checkpoint["config"]["model"]["backbone"]
        assert (backbone["model"], backbone["num_blocks_kept"]) == ("esen_reduced_backbone", row["blocks"])
        weight = checkpoint["state_dict"][f"module.{key}"]
        distance = float((weight - reference[key]).norm() / reference[key].norm())
        assert distance < 0.02 if row["init"] != "scratch" else distance > 0.5, (row["name"], distance)
        assert 0 < row["test"]["forces_mae"] < 5


# ---------------------------------------------------------------------------- seeds and options (no training)
def test_distillation_runs_cover_seeds_and_options(tmp_path):
    """--kd-seeds 3 --kd-options: one run per block count and seed (fairchem's --seed), one per option at the
    option block count (its task.distill keys on the architecture's config); per-atom energies are left out
    where the adapter names no module."""
    from types import SimpleNamespace

    from fairchem.core.common.utils import load_config

    from fairchem_prune.demo.reduction import OPTIONS, distillation_runs

    data = SimpleNamespace(train=tmp_path / "train", val=tmp_path / "val")
    settings = SimpleNamespace(kd_samples=64, batch_size=8)
    runs = distillation_runs(tmp_path / "t.pt", "gemnet_oc", [3, 2], data, settings, tmp_path / "r", tmp_path / "l",
                             seeds=3, options=OPTIONS, option_blocks=2)
    assert sorted(runs) == sorted(["kd_3b", "kd_3b_s1", "kd_3b_s2", "kd_2b", "kd_2b_s1", "kd_2b_s2", "kd_2b_rattle",
                                   "kd_2b_teacher_md", "kd_2b_jacobian_rows", "kd_2b_per_atom_energies"])
    assert runs["kd_3b_s2"].args == ("--seed", "2") and runs["kd_2b_rattle"].args == ("--seed", "0")
    merged = load_config(str(runs["kd_2b_teacher_md"].config))[0]
    assert merged["task"]["distill"]["md_fraction"] == 0.5 and merged["model"]["num_blocks_kept"] == 2
    assert merged["task"]["distill"]["max_samples"] == 64 and merged["trainer"] == "distill"
    eqv2 = distillation_runs(tmp_path / "t.pt", "equiformer_v2", [3], data, settings, tmp_path / "e", tmp_path / "l",
                             options=OPTIONS, option_blocks=3)
    assert "kd_3b_per_atom_energies" not in eqv2 and "kd_3b_rattle" in eqv2


def test_the_default_fine_tunes_are_four_models_with_seeds_and_full_adds_the_sweep(tmp_path):
    """The default models (teacher size; BR, BR+KD, scratch at the focus count) with every seed, sharing
    one config per model and seeded by fairchem's --seed; --full adds BR, BR+KD and BR/RandomMLP at every
    count, seed 0; the sweep's RandomMLP run re-initialises the readout, the scratch run starts from nothing."""
    from types import SimpleNamespace

    from fairchem.core.common.utils import load_config

    from fairchem_prune.demo.finetune import finetune_plan, finetune_runs

    plan = finetune_plan(6, [5, 4, 3, 2], 4, 3, False, True)
    assert plan == [(init, k, seed) for init, k in (("BR", 6), ("BR", 4), ("BR+KD", 4), ("scratch", 4)) for seed in range(3)]
    sweep = finetune_plan(6, [5, 4, 3, 2], 4, 3, True, True)
    assert set(sweep) - set(plan) == {(init, k, 0) for init in ("BR", "BR+KD", "BR/RandomMLP") for k in (5, 3, 2)} | {
        ("BR/RandomMLP", 4, 0)}
    assert [k for _, k, _ in sweep] == sorted((k for _, k, _ in sweep), reverse=True)
    assert all(init != "BR/RandomMLP" for init, _, _ in finetune_plan(6, [5, 4], 4, 1, True, False))

    record = {"architecture": "gemnet_oc", "blocks": 6}
    teacher = REPO / "fairchem_prune" / "demo" / "assets" / "teacher_6b.pt"
    settings = SimpleNamespace(ethanol_sizes=(200, 50, 200), batch_size=8, ft_epochs=16, ft_ema=0.9)
    runs = finetune_runs(teacher, record, sweep, {k: tmp_path / f"kd_{k}b.pt" for k in (5, 4, 3, 2)}, tmp_path / "eth",
                         settings, tmp_path / "ft", tmp_path / "logs")
    named = {r.run.name: r for r in runs}
    assert {"br_6b", "br_6b_s1", "br_6b_s2", "br_kd_4b_s2", "scratch_4b_s1", "br_randommlp_2b"} <= set(named)
    assert named["br_6b_s2"].run.args == ("--seed", "2") and named["br_6b_s2"].run.config == named["br_6b"].run.config
    models = {name: load_config(str(named[name].run.config))[0]["model"] for name in ("br_kd_4b", "br_randommlp_2b", "scratch_4b")}
    assert models["br_kd_4b"]["pretrained_checkpoint"] == str((tmp_path / "kd_4b.pt").resolve())
    assert models["br_randommlp_2b"]["mlp_init"] == "random" and models["br_randommlp_2b"]["num_blocks_kept"] == 2
    assert models["scratch_4b"]["pretrained_checkpoint"] is None
    optim = load_config(str(named["br_6b"].run.config))[0]["optim"]
    assert (optim["max_epochs"], optim["cosine_epochs"], optim["eval_every"], optim["ema_decay"]) == (16, 16, 25, 0.9)


def test_convergence_and_the_downstream_claims_are_read_off_the_runs():
    from fairchem_prune.demo.report import convergence_table, downstream_findings, finetune_table, late_gain

    # best 0.040 up to step 80, 0.039 after: 2.5 % better over the last 20 %, a plateau
    curve = [(1.0, 20, 0.1), (2.0, 40, 0.05), (3.0, 80, 0.04), (4.0, 90, 0.045), (5.0, 100, 0.039)]
    assert late_gain(curve) == pytest.approx(0.039 / 0.04 - 1)
    still = curve[:3] + [(5.0, 100, 0.03)]  # 25 % better
    rows = []
    for init, k, forces in (("BR", 6, (0.030, 0.032)), ("BR", 4, (0.033, 0.035)), ("BR+KD", 4, (0.031, 0.030)),
                            ("scratch", 4, (0.090, 0.100))):
        for seed, value in enumerate(forces):
            rows.append({"init": init, "blocks": k, "seed": seed, "test": {"forces_mae": value, "energy_mae": 0.05},
                         "train_seconds": 10.0 + seed, "best_val_forces_mae": value,
                         "curve": still if init == "scratch" else curve})
    claims = downstream_findings(rows)
    assert claims[0].startswith("Every fine-tune plateaued") and "does not hold (6 of 8 runs; changes -25.0% to -2.5%)" in claims[0]
    assert claims[1] == ("After fine-tuning, BR at 4 blocks against the 6-block model (test force MAE): 34.0 ± 1.0 vs "
                         "31.0 ± 1.0 meV/Å, +9.7%; beyond the seeds' spread.")
    assert claims[2] == ("KD helps downstream at 4 blocks: holds (BR+KD vs BR: 30.5 ± 0.5 vs 34.0 ± 1.0 meV/Å, -10.3%; "
                         "beyond the seeds' spread).")
    assert claims[3].startswith("A 4-block model from the pre-trained teacher beats the same model trained from scratch")
    assert "BR holds (34.0 ± 1.0 vs 95.0 ± 5.0 meV/Å" in claims[3] and "BR+KD holds (30.5 ± 0.5 vs 95.0" in claims[3]
    assert "| 4 | 34.0 ± 1.0 / 50.0 ± 0.0 / 10 | 30.5 ± 0.5 / 50.0 ± 0.0 / 10 | 95.0 ± 5.0 / 50.0 ± 0.0 / 10 |" in finetune_table(rows)
    assert "| scratch 4 | 2 | 95.0 ± 5.0 | -25.0 ± 0.0% | 0/2 |" in convergence_table(rows)


def test_the_efficiency_table_marks_what_the_benchmark_still_flagged():
    from fairchem_prune.demo.report import efficiency_table

    def row(blocks, measured, flags=(), stock_flags=()):
        return {"blocks": blocks, "params": 1000 * blocks, "params_pct": 100 * blocks / 4, "gflops_per_sample": 0.01 * blocks,
                "flop_bound_speedup": 4 / blocks, "measured_speedup": measured, "measured_over_bound": measured * blocks / 4,
                "reduced_over_stock": 1.0, "finetune_speedup": None, "flags": list(flags), "stock": {"flags": list(stock_flags)}}

    clean = efficiency_table({"rows": [row(4, 1.0), row(2, 1.6)]})
    assert "!" not in clean and "Flagged" not in clean
    flagged = efficiency_table({"rows": [row(4, 1.0), row(2, 2.3, ["above the FLOP bound"], ["unstable"])]})
    assert "| 2 | 2,000 (50%) | 0.0200 | 2.00x | 2.30x! | 115%! | 1.000! | - |" in flagged
    assert flagged.splitlines()[-2:] == ["- 2 blocks: above the FLOP bound", "- 2 blocks: unstable"]


def test_table1_gives_the_gap_closed_per_seed_as_mean_and_spread():
    from fairchem_prune.demo.report import options_table, reduction_table

    def entry(mae):
        return {"xtb": {"forces_mae": mae}}

    metrics = {"teacher": entry(0.100), "br_2b": entry(0.140), "kd_2b": entry(0.108), "kd_2b_s1": entry(0.112),
               "kd_2b_rattle": entry(0.104)}
    table = reduction_table(3, [2], metrics, {"teacher": 1000, "br_2b": 700}, seeds=2)
    # closed: (40 - 8) / 40 = 80% and (40 - 12) / 40 = 70%: 75 ± 5%
    assert "| 2 | 700 (70%) | 140.0 (+40.0) | 110.0 ± 2.0 (+10.0) | 75 ± 5% |" in table
    reduced = {"metrics": metrics, "options": {"blocks": 2, "names": ["rattle"], "cost": {"config": 1.0, "rattle": 1.02}}}
    assert "| + rattle | 104.0 | 90% | 1.02x |" in options_table(reduced)


def test_the_leaderboard_view_gives_efwt_energy_and_cosine_per_model():
    from fairchem_prune.demo.report import leaderboard_table

    def entry(efwt, energy, cosine):
        return {"xtb": {"energy_forces_within_threshold": efwt, "energy_mae": energy, "forces_cosine_similarity": cosine}}

    metrics = {"teacher": entry(0.5, 0.010, 0.9), "br_2b": {"xtb": {"energy_mae": 0.05}}, "kd_2b": entry(0.25, 0.020, 0.8),
               "kd_2b_s1": entry(0.35, 0.030, 0.7)}
    lines = leaderboard_table(3, [2], metrics, seeds=2).splitlines()
    assert lines[0] == "| model | xtb EFwT (%) | xtb energy MAE (meV) | xtb force cos |"
    assert lines[2:] == ["| teacher (3 blocks) | 50.0 | 10.0 | 0.900 |",
                         "| BR 2 | - | 50.0 | - |",  # scored before EFwT was: not a number
                         "| BR+KD 2 | 30.0 ± 5.0 | 25.0 ± 5.0 | 0.750 ± 0.050 |"]


def test_the_shipped_teacher_is_the_default_demos():
    """The shipped asset is what the default demo uses, is the architecture of its teacher config, and
    records its training curve (one validation per epoch; the best is the exported checkpoint's)."""
    from dataclasses import asdict

    from fairchem.core.common.utils import load_config

    from fairchem_prune.demo import FULL
    from fairchem_prune.demo.teacher import SHIPPED, _shipped_matches, teacher_core

    assert _shipped_matches({"size": asdict(FULL.data_spec), "seed": 0})
    record = json.loads(SHIPPED.with_suffix(".json").read_text())
    config = load_config(str(FULL.teacher_config))[0]["model"]
    core = teacher_core(SHIPPED)
    assert {k: core[k] for k in config if k != "name"} == {k: v for k, v in config.items() if k != "name"}
    epochs, values = zip(*record["val_curve"])
    assert epochs == tuple(float(e) for e in range(1, FULL.teacher_epochs + 1)) and record["epochs"] == FULL.teacher_epochs
    assert min(values) == pytest.approx(record["val_metrics"]["forces_mae"], rel=1e-5)
