"""The README's main command in quick mode: every stage runs on the tiny configuration and writes its
artefacts, the numbers in them are what an independent computation gives, and a second run skips
every finished stage."""

import json

import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator

from fairchem_prune.demo import run_demo

REWRITTEN = ("report.md", "demo.json")
ARTEFACTS = ("report.md", "relevance.png", "relevance.json", "reduction.json", "finetune.json", "finetune.png",
             "finetune_curves.png", "benchmark.json", "teacher.pt", "teacher.json", "reduction/br_2b.pt",
             "reduction/kd_1b.pt", "data/ethanol/test/data.lmdb")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FAIRCHEM_PRUNE_CACHE", str(out / "cache"))
        result = run_demo(out=out / "run", quick=True)
        files = [p for p in (out / "run").rglob("*") if p.is_file() and p.name not in REWRITTEN]
        stamps = {p: p.stat().st_mtime_ns for p in files}
        again = run_demo(out=out / "run", quick=True)
    return out / "run", result, again, stamps


def test_every_artefact_is_written(demo):
    out, result, *_ = demo
    for name in ARTEFACTS:
        assert (out / name).stat().st_size > 0, name
    for figure in ("relevance.png", "finetune.png", "finetune_curves.png"):
        assert (out / figure).read_bytes()[:4] == b"\x89PNG"
    report = (out / "report.md").read_text()
    for needle in ("![relevance](relevance.png)", "![finetune](finetune.png)", "![curves](finetune_curves.png)",
                   "| 1 | ", "BR+KD", "Findings", "measured / bound", "Quick mode"):
        assert needle in report, needle
    # relevance and BR / KD per source (2 x 3), scratch at 1 block
    assert len(result["findings"]) == 7 and sum("from scratch" in line for line in result["findings"]) == 1


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


def test_table1_numbers_match_an_independent_evaluation(demo):
    """Force MAE of the teacher and of the 1-block BR model on the slab source, recomputed through
    ASE (OCPCalculator on each structure, free atoms only), equals the demo's number."""
    from fairchem.core.common.relaxation.ase_utils import OCPCalculator
    from fairchem.core.datasets import LmdbDataset

    out, result, *_ = demo
    reduction = result["reduction"]
    assert reduction["counts"] == [2, 1]
    params = reduction["params"]
    assert params["teacher"] > params["br_2b"] > params["br_1b"]
    cache = out.parent / "cache" / "demo_data" / "quick-seed0" / "pretrain" / "val" / "emt_slabs.lmdb"
    dataset = LmdbDataset({"src": str(cache)})
    for name in ("teacher", "br_1b"):
        calc = OCPCalculator(checkpoint_path=reduction["checkpoints"][name], cpu=True, seed=0)
        errors = []
        for data in dataset:
            atoms = data_to_atoms(data)
            atoms.calc = calc
            free = data.fixed.numpy() == 0
            errors.append(np.abs(atoms.get_forces()[free] - data.forces.numpy()[free]).ravel())
        expected = float(np.concatenate(errors).mean())
        assert reduction["metrics"][name]["emt_slabs"]["forces_mae"] == pytest.approx(expected, rel=1e-4), name


def data_to_atoms(data):
    from ase import Atoms

    atoms = Atoms(numbers=data.atomic_numbers.numpy().astype(int), positions=data.pos.numpy(),
                  cell=data.cell.numpy()[0], pbc=True, tags=data.tags.numpy())
    atoms.calc = SinglePointCalculator(atoms)
    return atoms


def test_finetune_runs_and_curves(demo):
    out, result, *_ = demo
    rows = result["finetune"]["rows"]
    assert {(r["init"], r["blocks"]) for r in rows} == {
        ("BR", 3), ("BR", 2), ("BR", 1), ("BR+KD", 2), ("BR+KD", 1), ("BR/RandomMLP", 2), ("BR/RandomMLP", 1),
        ("scratch", 1)}
    for row in rows:
        times, steps, values = zip(*row["curve"])
        assert list(times) == sorted(times) and times[0] > 0 and row["train_seconds"] >= times[-1] - 1e-6
        assert list(steps) == sorted(steps) and row["best_val_forces_mae"] == min(values)
        assert 0 < row["test"]["forces_mae"] < 5 and 0 < row["test"]["energy_mae"]


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
